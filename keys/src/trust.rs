//! The trust root: which keys may sign what, and how a root is rotated.
//!
//! A trust root is a COSE_Sign document (tag 98) whose payload lists public
//! keys and, per role, which of them count and how many must sign:
//!
//! ```text
//!  COSE_Sign ─ payload: {version, expires, keys, roles{root, release, server}}
//!            └ signatures: one per root key that approved this version
//! ```
//!
//! * The first root a device knows is provisioned; it must be signed by a
//!   threshold of its own `root` keys ([`SignedTrustRoot::verify_self_signed`]).
//! * A successor is accepted only with a higher version and a threshold of
//!   the *previous* root keys and of *its own* root keys
//!   ([`VerifiedTrustRoot::verify_successor`]), as TUF rotates its root: a
//!   thief of one old key can neither rotate the device to keys of their own
//!   nor revive a root the owners retired.
//! * Expiry is checked on the root being accepted; an expired intermediate
//!   root can still be walked through, which is how an offline device catches up.

use std::collections::{BTreeMap, BTreeSet};

use coset::{CoseSign, CoseSignature, TaggedCborSerializable as _, iana};
use minicbor::{Decoder, Encoder};

use crate::{Algorithm, KeyError, KeyId, KeySource, PublicKey, decode_cose_key};

/// Largest trust root document accepted.
pub const MAX_TRUST_ROOT_LEN: usize = 64 * 1024;
/// Most keys one trust root may list.
pub const MAX_KEYS: usize = 64;
/// Content type of the COSE_Sign payload.
pub const CONTENT_TYPE: &str = "application/gantry-trust-root+cbor";

/// What a key is trusted to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Signs trust roots (offline keys).
    Root,
    /// Signs release manifests (offline or HSM keys in the release pipeline).
    Release,
    /// Signs deployment tickets (the update server's online key).
    Server,
}

impl Role {
    /// Every role, in deterministic encoding order of their names.
    pub const ALL: [Role; 3] = [Role::Root, Role::Server, Role::Release];

    /// The name used in the document and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Release => "release",
            Role::Server => "server",
        }
    }

    /// Parses a role name.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl core::fmt::Display for Role {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which keys hold a role and how many of them must sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolePolicy {
    /// Signatures needed (k of n).
    pub threshold: u32,
    /// The n keys.
    pub keys: BTreeSet<KeyId>,
}

/// Why a trust root was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The document is not a well-formed trust root.
    #[error("malformed trust root: {0}")]
    Malformed(String),
    /// The policy is inconsistent (threshold 0, more than the keys, missing role...).
    #[error("invalid trust root policy: {0}")]
    InvalidPolicy(String),
    /// The root's expiry has passed.
    #[error("trust root version {version} expired at {expires} (now {now}); a newer root is needed")]
    Expired {
        /// Version of the expired root.
        version: u64,
        /// Expiry, seconds since the Unix epoch.
        expires: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// Not enough valid signatures from the keys of a role.
    #[error("trust root version {version} is signed by {have} of {which} keys, but needs {need}")]
    UnderSigned {
        /// Version of the root being checked.
        version: u64,
        /// Which key set: "its own root" or "the previous root".
        which: &'static str,
        /// Valid distinct signatures found.
        have: usize,
        /// Threshold.
        need: u32,
    },
    /// A successor must have a higher version.
    #[error("trust root version {new} cannot replace version {current}: versions must increase")]
    VersionNotIncreasing {
        /// Version of the root in force.
        current: u64,
        /// Version offered.
        new: u64,
    },
    /// The same key signed twice.
    #[error("key {0} already signed this trust root")]
    AlreadySigned(KeyId),
}

/// The content of a trust root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRoot {
    /// Monotonic version; a successor must be higher.
    pub version: u64,
    /// Expiry in seconds since the Unix epoch.
    pub expires: u64,
    /// Every key the roles refer to, by key id.
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// The policy of each role; all three roles are present.
    pub roles: BTreeMap<Role, RolePolicy>,
}

impl TrustRoot {
    /// Builds a root from role assignments `(role, keys, threshold)` and checks it.
    pub fn new(version: u64, expires: u64, roles: &[(Role, Vec<PublicKey>, u32)]) -> Result<Self, TrustError> {
        let mut keys = BTreeMap::new();
        let mut policies = BTreeMap::new();
        for (role, role_keys, threshold) in roles {
            let ids = role_keys.iter().map(|k| {
                keys.insert(k.key_id(), k.clone());
                k.key_id()
            });
            let policy = RolePolicy { threshold: *threshold, keys: ids.collect() };
            if policies.insert(*role, policy).is_some() {
                return Err(TrustError::InvalidPolicy(format!("role {role} given twice")));
            }
        }
        let root = TrustRoot { version, expires, keys, roles: policies };
        root.validate()?;
        Ok(root)
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<(), TrustError> {
        let bad = |m: String| Err(TrustError::InvalidPolicy(m));
        if self.version == 0 {
            return bad("version must be at least 1".into());
        }
        if self.keys.len() > MAX_KEYS {
            return bad(format!("{} keys, at most {MAX_KEYS}", self.keys.len()));
        }
        for role in Role::ALL {
            let Some(p) = self.roles.get(&role) else {
                return bad(format!("role {role} has no keys"));
            };
            if p.threshold == 0 {
                return bad(format!("role {role} has threshold 0"));
            }
            if p.threshold as usize > p.keys.len() {
                return bad(format!("role {role} needs {} signatures but has {} keys", p.threshold, p.keys.len()));
            }
            if let Some(k) = p.keys.iter().find(|k| !self.keys.contains_key(k)) {
                return bad(format!("role {role} names key {k}, which is not listed"));
            }
        }
        let used: BTreeSet<_> = self.roles.values().flat_map(|p| p.keys.iter()).collect();
        if let Some(k) = self.keys.keys().find(|k| !used.contains(k)) {
            return bad(format!("key {k} is listed but holds no role"));
        }
        Ok(())
    }

    /// The policy of `role` (present in every validated root).
    pub fn policy(&self, role: Role) -> &RolePolicy {
        &self.roles[&role]
    }

    /// The public keys holding `role`.
    pub fn role_keys(&self, role: Role) -> Vec<PublicKey> {
        self.policy(role).keys.iter().filter_map(|id| self.keys.get(id).cloned()).collect()
    }

    /// What its successor is checked against.
    pub fn root_role(&self) -> RootRole {
        RootRole {
            version: self.version,
            keys: self.role_keys(Role::Root),
            threshold: self.policy(Role::Root).threshold,
        }
    }

    /// The deterministic CBOR payload:
    /// `{1: version, 2: expires, 3: [* COSE_Key], 4: {role-name: {1: threshold, 2: [* kid]}}}`.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(crate::cbor_vec::VecWriter::default());
        // Writing into a Vec cannot fail.
        let _ = (|| -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
            e.map(4)?;
            e.u8(1)?.u64(self.version)?;
            e.u8(2)?.u64(self.expires)?;
            e.u8(3)?.array(self.keys.len() as u64)?;
            for key in self.keys.values() {
                e.writer_mut().0.extend_from_slice(&key.to_cose_key());
            }
            e.u8(4)?.map(Role::ALL.len() as u64)?;
            for role in Role::ALL {
                let p = self.policy(role);
                e.str(role.name())?.map(2)?.u8(1)?.u32(p.threshold)?.u8(2)?.array(p.keys.len() as u64)?;
                for k in &p.keys {
                    e.bytes(k.as_bytes())?;
                }
            }
            Ok(())
        })();
        e.into_writer().0
    }

    /// Parses the payload strictly: the exact members, in deterministic order.
    pub fn decode(bytes: &[u8]) -> Result<Self, TrustError> {
        let m = |s: &str| TrustError::Malformed(s.to_owned());
        let mut d = Decoder::new(bytes);
        let expect_key = |d: &mut Decoder<'_>, k: u8| -> Result<(), TrustError> {
            match d.u8() {
                Ok(x) if x == k => Ok(()),
                _ => Err(TrustError::Malformed(format!("expected member {k}"))),
            }
        };
        if d.map().map_err(|_| m("not a map"))? != Some(4) {
            return Err(m("expected a map of 4 members"));
        }
        expect_key(&mut d, 1)?;
        let version = d.u64().map_err(|_| m("version is not an unsigned integer"))?;
        expect_key(&mut d, 2)?;
        let expires = d.u64().map_err(|_| m("expires is not an unsigned integer"))?;
        expect_key(&mut d, 3)?;
        let n = d.array().map_err(|_| m("keys is not an array"))?.ok_or_else(|| m("indefinite keys array"))?;
        if n as usize > MAX_KEYS {
            return Err(m("too many keys"));
        }
        let mut keys = BTreeMap::new();
        for _ in 0..n {
            let start = d.position();
            d.skip().map_err(|_| m("truncated key"))?;
            let key =
                decode_cose_key(&bytes[start..d.position()]).map_err(|e| TrustError::Malformed(format!("key: {e}")))?;
            if keys.insert(key.key_id(), key).is_some() {
                return Err(m("duplicate key"));
            }
        }
        expect_key(&mut d, 4)?;
        if d.map().map_err(|_| m("roles is not a map"))? != Some(Role::ALL.len() as u64) {
            return Err(m("roles must list exactly root, server and release"));
        }
        let mut roles = BTreeMap::new();
        for role in Role::ALL {
            if d.str().map_err(|_| m("role name"))? != role.name() {
                return Err(TrustError::Malformed(format!("expected role {role} (in deterministic order)")));
            }
            if d.map().map_err(|_| m("role policy is not a map"))? != Some(2) {
                return Err(m("role policy must have 2 members"));
            }
            expect_key(&mut d, 1)?;
            let threshold = d.u32().map_err(|_| m("threshold"))?;
            expect_key(&mut d, 2)?;
            let n = d.array().map_err(|_| m("role keys"))?.ok_or_else(|| m("indefinite role keys"))?;
            if n as usize > MAX_KEYS {
                return Err(m("too many role keys"));
            }
            let mut ids = BTreeSet::new();
            for _ in 0..n {
                let id = d.bytes().ok().and_then(KeyId::from_slice).ok_or_else(|| m("key id must be 32 bytes"))?;
                if !ids.insert(id) {
                    return Err(m("duplicate key id in role"));
                }
            }
            roles.insert(role, RolePolicy { threshold, keys: ids });
        }
        if d.position() != bytes.len() {
            return Err(m("trailing bytes"));
        }
        let root = TrustRoot { version, expires, keys, roles };
        root.validate()?;
        // Only the deterministic encoding is accepted, so a document has one
        // byte form and its hash identifies it.
        if root.encode() != bytes {
            return Err(m("not deterministically encoded"));
        }
        Ok(root)
    }
}

/// A trust root document with its signatures, not yet verified.
#[derive(Clone, Debug)]
pub struct SignedTrustRoot {
    doc: CoseSign,
    root: TrustRoot,
}

/// One signature on a trust root, as found in the document.
#[derive(Clone, Debug)]
pub struct TrustSignature {
    /// The key id the signature names (kid header).
    pub key_id: Option<KeyId>,
    /// Its algorithm, if Gantry supports it.
    pub algorithm: Option<Algorithm>,
}

impl SignedTrustRoot {
    /// An unsigned document for `root`.
    pub fn new(root: TrustRoot) -> Result<Self, TrustError> {
        root.validate()?;
        let doc = coset::CoseSignBuilder::new()
            .protected(coset::HeaderBuilder::new().content_type(CONTENT_TYPE.to_owned()).build())
            .payload(root.encode())
            .build();
        Ok(SignedTrustRoot { doc, root })
    }

    /// Parses a tagged COSE_Sign trust root. Checks structure, not signatures.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TrustError> {
        if bytes.len() > MAX_TRUST_ROOT_LEN {
            return Err(TrustError::Malformed(format!("larger than {MAX_TRUST_ROOT_LEN} bytes")));
        }
        let doc = CoseSign::from_tagged_slice(bytes)
            .map_err(|e| TrustError::Malformed(format!("not a tagged COSE_Sign: {e}")))?;
        if doc.protected.header.content_type != Some(coset::ContentType::Text(CONTENT_TYPE.to_owned())) {
            return Err(TrustError::Malformed(format!("content type is not {CONTENT_TYPE}")));
        }
        if !doc.protected.header.crit.is_empty() {
            return Err(TrustError::Malformed("unknown critical header parameters".into()));
        }
        let payload = doc.payload.as_deref().ok_or_else(|| TrustError::Malformed("detached payload".into()))?;
        let root = TrustRoot::decode(payload)?;
        Ok(SignedTrustRoot { doc, root })
    }

    /// The encoded document.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a structure we built or parsed cannot fail.
        self.doc.clone().to_tagged_vec().unwrap_or_default()
    }

    /// The content, *unverified*: for display only.
    pub fn unverified_content(&self) -> &TrustRoot {
        &self.root
    }

    /// The signatures present, unverified.
    pub fn signatures(&self) -> Vec<TrustSignature> {
        self.doc.signatures.iter().map(|s| TrustSignature { key_id: kid_of(s), algorithm: alg_of(s) }).collect()
    }

    /// Adds a signature by `source`. Any key may sign (the previous root's
    /// keys sign a successor); verification decides whether it counts.
    pub fn sign_with(&mut self, source: &dyn KeySource) -> Result<(), KeyError> {
        let kid = source.key_id();
        if self.doc.signatures.iter().any(|s| kid_of(s) == Some(kid)) {
            return Err(TrustError::AlreadySigned(kid).into());
        }
        let alg = iana::Algorithm::from_i64(source.algorithm().cose_id()).ok_or_else(|| KeyError::SignFailed {
            source_name: source.describe(),
            reason: "algorithm unknown to coset".into(),
        })?;
        let mut sig = coset::CoseSignatureBuilder::new()
            .protected(coset::HeaderBuilder::new().algorithm(alg).build())
            .unprotected(coset::HeaderBuilder::new().key_id(kid.as_bytes().to_vec()).build())
            .build();
        let tbs = self.doc.tbs_data(b"", &sig);
        sig.signature = source.sign(&tbs)?;
        self.doc.signatures.push(sig);
        Ok(())
    }

    /// Distinct keys of `policy` (looked up in `keys`) with a valid signature.
    fn valid_signers(&self, keys: &BTreeMap<KeyId, PublicKey>, policy: &RolePolicy) -> usize {
        let mut signed = BTreeSet::new();
        for sig in &self.doc.signatures {
            let (Some(kid), Some(alg)) = (kid_of(sig), alg_of(sig)) else { continue };
            if !sig.protected.header.crit.is_empty() || !policy.keys.contains(&kid) {
                continue;
            }
            let Some(key) = keys.get(&kid) else { continue };
            let tbs = self.doc.tbs_data(b"", sig);
            if key.verify(alg, &tbs, &sig.signature).is_ok() {
                signed.insert(kid);
            }
        }
        signed.len()
    }

    fn check_signed_by(&self, by: &RootRole, which: &'static str) -> Result<(), TrustError> {
        let keys: BTreeMap<KeyId, PublicKey> = by.keys.iter().map(|k| (k.key_id(), k.clone())).collect();
        let policy = RolePolicy { threshold: by.threshold, keys: keys.keys().copied().collect() };
        let have = self.valid_signers(&keys, &policy);
        if by.threshold == 0 || have < by.threshold as usize {
            return Err(TrustError::UnderSigned { version: self.root.version, which, have, need: by.threshold });
        }
        Ok(())
    }

    /// Verifies a provisioned (first) root: a threshold of its own root keys
    /// signed it and it has not expired at `now` (Unix seconds).
    pub fn verify_self_signed(&self, now: u64) -> Result<VerifiedTrustRoot, TrustError> {
        let verified = self.verify_signatures_only()?;
        verified.check_unexpired(now)?;
        Ok(verified)
    }

    /// Verifies a root a device already holds: a threshold of its own root
    /// keys signed it, whatever its expiry. A device keeps its anchor after
    /// it expires (to accept successors signed by its root keys); whoever
    /// uses it to accept something new checks
    /// [`VerifiedTrustRoot::check_unexpired`] too.
    pub fn verify_signatures_only(&self) -> Result<VerifiedTrustRoot, TrustError> {
        self.check_signed_by(&self.root.root_role(), "its own root")?;
        Ok(VerifiedTrustRoot { root: self.root.clone(), bytes: self.to_bytes() })
    }

    /// Walks a chain of roots, oldest first: the first must be self-signed,
    /// each next one a valid successor of the one before. Only the last one's
    /// expiry is checked, so a device that slept through a rotation and holds
    /// an expired root can still catch up.
    pub fn verify_chain(chain: &[SignedTrustRoot], now: u64) -> Result<VerifiedTrustRoot, TrustError> {
        let (first, rest) = chain.split_first().ok_or_else(|| TrustError::Malformed("empty chain".into()))?;
        let Some((last, middle)) = rest.split_last() else {
            return first.verify_self_signed(now);
        };
        let mut current = first.verify_signatures_only()?;
        for next in middle {
            current = current.root.root_role().verify_successor_signatures(next)?;
        }
        current.verify_successor(last, now)
    }
}

/// What a successor root is checked against: the version and the `root`
/// role (keys, threshold) of the root before it. A device keeps it inside
/// its whole root; a bootloader keeps only this, in its own map
/// (`gantry_boot::keys`), and applies the same rule through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootRole {
    /// The root's version: a successor's must be higher.
    pub version: u64,
    /// The keys holding its `root` role.
    pub keys: Vec<PublicKey>,
    /// How many of them must sign a successor.
    pub threshold: u32,
}

impl RootRole {
    /// Walks `chain` (oldest first) from this root: each must be a valid
    /// successor of the one before; only the last one's expiry is checked,
    /// so a device that slept through several rotations catches up. Roots
    /// in `chain` not newer than this one are skipped (a server may send
    /// its whole history).
    pub fn verify_successors(&self, chain: &[SignedTrustRoot], now: u64) -> Result<VerifiedTrustRoot, TrustError> {
        let newer: Vec<&SignedTrustRoot> = chain.iter().filter(|r| r.root.version > self.version).collect();
        let Some((last, middle)) = newer.split_last() else {
            return Err(TrustError::VersionNotIncreasing {
                current: self.version,
                new: chain.iter().map(|r| r.root.version).max().unwrap_or(self.version),
            });
        };
        let mut current = self.clone();
        for next in middle {
            current = current.verify_successor_signatures(next)?.root.root_role();
        }
        current.verify_successor(last, now)
    }

    /// Accepts `next` as the new root if its version is higher, a threshold
    /// of this root's root keys and of its own root keys signed it, and it
    /// has not expired at `now`. This root's own expiry does not matter here.
    pub fn verify_successor(&self, next: &SignedTrustRoot, now: u64) -> Result<VerifiedTrustRoot, TrustError> {
        let verified = self.verify_successor_signatures(next)?;
        verified.check_unexpired(now)?;
        Ok(verified)
    }

    fn verify_successor_signatures(&self, next: &SignedTrustRoot) -> Result<VerifiedTrustRoot, TrustError> {
        if next.root.version <= self.version {
            return Err(TrustError::VersionNotIncreasing { current: self.version, new: next.root.version });
        }
        next.check_signed_by(self, "the previous root")?;
        next.verify_signatures_only()
    }
}

fn kid_of(sig: &CoseSignature) -> Option<KeyId> {
    let kid = if sig.unprotected.key_id.is_empty() { &sig.protected.header.key_id } else { &sig.unprotected.key_id };
    KeyId::from_slice(kid)
}

fn alg_of(sig: &CoseSignature) -> Option<Algorithm> {
    match sig.protected.header.alg.as_ref()? {
        coset::Algorithm::Assigned(a) => Algorithm::from_cose_id(*a as i64),
        coset::Algorithm::PrivateUse(_) | coset::Algorithm::Text(_) => None,
    }
}

use coset::iana::EnumI64 as _;

/// A trust root whose signatures and expiry were checked; only
/// [`SignedTrustRoot::verify_self_signed`] and
/// [`VerifiedTrustRoot::verify_successor`] make one.
#[derive(Clone, Debug)]
pub struct VerifiedTrustRoot {
    root: TrustRoot,
    bytes: Vec<u8>,
}

impl VerifiedTrustRoot {
    /// The verified content.
    pub fn root(&self) -> &TrustRoot {
        &self.root
    }

    /// The document it was verified from (to store it as the new anchor).
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Refuses a root whose expiry has passed at `now` (Unix seconds): past
    /// it, the root may only be used to accept its successor.
    pub fn check_unexpired(&self, now: u64) -> Result<(), TrustError> {
        if now >= self.root.expires {
            return Err(TrustError::Expired { version: self.root.version, expires: self.root.expires, now });
        }
        Ok(())
    }

    /// [`RootRole::verify_successors`] from this root.
    pub fn verify_successors(&self, chain: &[SignedTrustRoot], now: u64) -> Result<VerifiedTrustRoot, TrustError> {
        self.root.root_role().verify_successors(chain, now)
    }

    /// [`RootRole::verify_successor`] from this root.
    pub fn verify_successor(&self, next: &SignedTrustRoot, now: u64) -> Result<VerifiedTrustRoot, TrustError> {
        self.root.root_role().verify_successor(next, now)
    }
}

#[cfg(test)]
mod tests;
