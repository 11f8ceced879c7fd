//! Operator roles and what each may do.

use std::fmt;

/// An operator token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, including tokens and the trust root.
    Admin,
    /// Uploads releases and blobs, assigns them.
    ReleaseManager,
    /// Enrolls and manages devices, assigns releases.
    Operator,
    /// Reads everything, changes nothing.
    Auditor,
}

/// An action that needs a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read devices, releases, reports.
    Read,
    /// Create and revoke API tokens.
    ManageTokens,
    /// Install a trust root.
    ManageTrustRoot,
    /// Upload blobs and releases.
    UploadReleases,
    /// Enroll devices, set their groups and tags, create enrollment tokens.
    ManageDevices,
    /// Assign releases to devices.
    Deploy,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::ReleaseManager, Role::Operator, Role::Auditor];

    /// The name used in the API and the database.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReleaseManager => "release-manager",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether this role may do `p`.
    pub const fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::ReleaseManager => matches!(p, Read | UploadReleases | Deploy),
            Role::Operator => matches!(p, Read | ManageDevices | Deploy),
            Role::Auditor => matches!(p, Read),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Permission {
    /// What the action is, for error messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::ManageTokens => "manage API tokens",
            Permission::ManageTrustRoot => "install a trust root",
            Permission::UploadReleases => "upload releases and blobs",
            Permission::ManageDevices => "manage devices",
            Permission::Deploy => "assign releases to devices",
        }
    }

    /// The roles allowed to do it.
    pub fn roles(self) -> Vec<&'static str> {
        Role::ALL.into_iter().filter(|r| r.allows(self)).map(Role::name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_their_name_says() {
        assert!(Role::Auditor.allows(Permission::Read));
        assert!(!Role::Auditor.allows(Permission::Deploy));
        assert!(!Role::Operator.allows(Permission::UploadReleases));
        assert!(!Role::ReleaseManager.allows(Permission::ManageDevices));
        assert!(!Role::ReleaseManager.allows(Permission::ManageTokens));
        assert_eq!(Permission::ManageTokens.roles(), ["admin"]);
        for r in Role::ALL {
            assert_eq!(Role::from_name(r.name()), Some(r));
        }
    }
}
