use gantry_keys::KeyError;

/// Why a signed object was refused. One enum for the crate; each variant names
/// the cause, so a release engineer can tell "signature invalid" from "digest
/// mismatch" from "sequence too low" without reading bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not well-formed CBOR where a value of some type was expected.
    #[error("malformed CBOR at byte {offset}: expected {expected}")]
    Cbor {
        /// What the parser was reading.
        expected: &'static str,
        /// Byte offset in the enclosing buffer.
        offset: usize,
    },
    /// Valid CBOR that is not in the deterministic encoding Gantry requires
    /// (indefinite lengths, non-minimal or out-of-order map keys).
    #[error("non-canonical CBOR at byte {offset}: {what}")]
    NonCanonical {
        /// What was wrong.
        what: &'static str,
        /// Byte offset.
        offset: usize,
    },
    /// The same map key twice.
    #[error("duplicate map key at byte {offset}")]
    DuplicateKey {
        /// Byte offset of the second occurrence.
        offset: usize,
    },
    /// Nested deeper than any Gantry structure needs.
    #[error("CBOR nested too deeply")]
    TooDeep,
    /// A count or size above the limits of this verifier.
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// Bytes after the end of the structure.
    #[error("trailing bytes after {0}")]
    TrailingBytes(&'static str),
    /// A wrong CBOR tag (e.g. not 107 for an envelope, not 18 for COSE_Sign1).
    #[error("wrong CBOR tag: expected {expected}, found {found}")]
    WrongTag {
        /// Tag required.
        expected: u64,
        /// Tag found.
        found: u64,
    },
    /// A required member is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A member has a value outside what the format allows.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The envelope carries no signature (only a digest).
    #[error("envelope is not signed")]
    Unsigned,
    /// An authentication block that is not a COSE_Sign1 (e.g. COSE_Mac0).
    #[error("unsupported authentication block (only COSE_Sign1 is accepted)")]
    UnsupportedAuthentication,
    /// A COSE algorithm Gantry does not verify.
    #[error("unsupported COSE algorithm {0}")]
    UnsupportedAlgorithm(i64),
    /// A critical header parameter this verifier does not understand.
    #[error("unknown critical header parameter")]
    UnknownCriticalHeader,
    /// The COSE_Sign1 carries its payload; SUIT signatures must be detached.
    #[error("COSE_Sign1 payload must be detached (nil)")]
    AttachedPayload,
    /// Signatures present, none valid under any trusted key.
    #[error("signature invalid: no signature verifies with a trusted key")]
    SignatureInvalid,
    /// Signatures present, but none by a key the policy trusts.
    #[error("no signature by a trusted key")]
    UnknownSigner,
    /// Fewer valid signatures from distinct trusted keys than the threshold.
    #[error("signed by {have} trusted keys, {need} required")]
    ThresholdNotMet {
        /// Distinct trusted keys with a valid signature.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// A signature-level error from the key layer (e.g. algorithm/key mismatch).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A digest algorithm other than SHA-256.
    #[error("unsupported digest algorithm {0}")]
    UnsupportedDigest(i64),
    /// The signed digest does not match the manifest.
    #[error("digest mismatch: the manifest is not the one that was signed")]
    DigestMismatch,
    /// A severable member does not match the digest the manifest holds for it.
    #[error("severable member {0} does not match its digest in the manifest")]
    SeverableMismatch(u64),
    /// A severable member present in the envelope that the manifest does not name.
    #[error("severable member {0} is not referenced by the manifest")]
    UnexpectedSeverable(u64),
    /// Only SUIT manifest version 1 exists.
    #[error("unsupported manifest version {0}")]
    UnsupportedManifestVersion(u64),
    /// Anti-rollback: the manifest is older than what is installed.
    #[error("sequence number {sequence} is lower than the required minimum {minimum} (rollback)")]
    SequenceTooLow {
        /// The manifest's sequence number.
        sequence: u64,
        /// The lowest acceptable.
        minimum: u64,
    },
    /// The manifest is for another vendor.
    #[error("vendor id does not match this device")]
    WrongVendor,
    /// The manifest is for another device class.
    #[error("class id does not match this device")]
    WrongClass,
    /// The policy requires a vendor/class id and the manifest declares none.
    #[error("manifest declares no {0}")]
    MissingIdentity(&'static str),
    /// A SUIT command this interpreter does not implement.
    #[error("unsupported SUIT command {0}")]
    UnsupportedCommand(i64),
    /// A SUIT parameter this interpreter does not implement.
    #[error("unsupported SUIT parameter {0}")]
    UnsupportedParameter(i64),
    /// The manifest declares no components (SUIT requires at least one).
    #[error("manifest declares no components; at least one is required")]
    NoComponents,
    /// A component index outside the manifest's component list.
    #[error("component index {0} out of range")]
    ComponentIndex(u64),
    /// A SUIT condition failed.
    #[error("condition {condition} failed for component {component}")]
    ConditionFailed {
        /// The condition's name.
        condition: &'static str,
        /// Index of the component.
        component: usize,
    },
    /// A parameter a command needs was never set.
    #[error("command {command} needs parameter {parameter}")]
    MissingParameter {
        /// Command.
        command: &'static str,
        /// Parameter.
        parameter: &'static str,
    },
    /// The section asked for is severed and its member was not supplied.
    #[error("section {0} is severed and not present in the envelope")]
    SectionSevered(&'static str),
    /// An integrated payload does not hash to, or is not as long as, the
    /// image digest and size signed for the component whose URI names it.
    #[error("integrated payload of component {component} does not match the digest and size signed for it")]
    PayloadMismatch {
        /// Index of the component.
        component: usize,
    },
    /// A component's URI names an integrated payload the envelope does not carry.
    #[error("component {component} names an integrated payload that is not in the envelope")]
    PayloadMissing {
        /// Index of the component.
        component: usize,
    },
    /// An integrated payload no component's URI names: no signed digest
    /// covers it, so its bytes are not authenticated.
    #[error("integrated payload is not named by any component, so no signed digest covers it")]
    PayloadUnreferenced,
    /// The device refused or failed an action (fetch, copy, invoke).
    #[error("device failed to {action} component {component}")]
    DeviceFailed {
        /// What it was asked to do.
        action: &'static str,
        /// Index of the component.
        component: usize,
    },
    /// Building or encoding a manifest failed.
    #[cfg(feature = "std")]
    #[error("cannot build manifest: {0}")]
    Build(String),
    /// A container config is invalid.
    #[cfg(feature = "std")]
    #[error("invalid container config: {0}")]
    Config(String),
}

impl Error {
    /// A stable, machine-readable name of the cause, for `--json` output,
    /// logs and APIs (e.g. `signature-invalid`, `digest-mismatch`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Cbor { .. } | Error::TrailingBytes(_) | Error::Missing(_) | Error::Invalid(_) => "malformed",
            Error::NonCanonical { .. } | Error::DuplicateKey { .. } => "non-canonical",
            Error::TooDeep | Error::LimitExceeded { .. } => "limit-exceeded",
            Error::WrongTag { .. } => "wrong-tag",
            Error::Unsigned => "unsigned",
            Error::UnsupportedAuthentication | Error::UnsupportedAlgorithm(_) | Error::UnsupportedDigest(_) => {
                "unsupported-algorithm"
            }
            Error::UnknownCriticalHeader => "unknown-critical-header",
            Error::AttachedPayload => "attached-payload",
            Error::SignatureInvalid => "signature-invalid",
            Error::UnknownSigner => "unknown-signer",
            Error::ThresholdNotMet { .. } => "threshold-not-met",
            Error::Key(KeyError::AlgorithmMismatch { .. }) => "algorithm-mismatch",
            Error::Key(_) => "key-error",
            Error::DigestMismatch | Error::SeverableMismatch(_) | Error::UnexpectedSeverable(_) => "digest-mismatch",
            Error::UnsupportedManifestVersion(_) => "unsupported-manifest-version",
            Error::SequenceTooLow { .. } => "sequence-too-low",
            Error::WrongVendor => "wrong-vendor",
            Error::WrongClass => "wrong-class",
            Error::MissingIdentity(_) => "missing-identity",
            Error::UnsupportedCommand(_) | Error::UnsupportedParameter(_) => "unsupported-command",
            Error::NoComponents
            | Error::ComponentIndex(_)
            | Error::MissingParameter { .. }
            | Error::SectionSevered(_) => "malformed",
            Error::PayloadMismatch { .. } | Error::PayloadMissing { .. } | Error::PayloadUnreferenced => {
                "payload-mismatch"
            }
            Error::ConditionFailed { .. } => "condition-failed",
            Error::DeviceFailed { .. } => "device-failed",
            #[cfg(feature = "std")]
            Error::Build(_) => "build-error",
            #[cfg(feature = "std")]
            Error::Config(_) => "invalid-config",
        }
    }

    pub(crate) fn cbor(expected: &'static str, offset: usize) -> Self {
        Error::Cbor { expected, offset }
    }
}
