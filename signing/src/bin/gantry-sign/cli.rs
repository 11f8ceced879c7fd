//! Command-line interface definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Build, sign, verify and inspect Gantry releases: COSE-signed SUIT manifests (draft-ietf-suit-manifest-37) for Wasm containers, and the trust root that says which keys may sign them.";

const LONG_ABOUT: &str = "\
Build, sign, verify and inspect Gantry releases: COSE-signed SUIT manifests \
(draft-ietf-suit-manifest-37) for Wasm containers, and the trust root that \
says which keys may sign them.

A typical release pipeline:

  gantry-sign keygen --alg p256 --out release            # once, offline
  gantry-sign container --module app.wasm --config app.toml \\
      --vendor example.com --class gateway-v2 --sequence 42 \\
      --key release.key --out app.suit
  gantry-sign verify --trust root.cbor app.suit
  gantry-sign inspect --json app.suit

Exit codes:
  0  success (for `verify`: the envelope is valid)
  1  verification ran and refused the input (the reason is on stderr,
     and in `--json` output as a stable `code`)
  2  usage error, unreadable file, or anything else that stopped the command";

#[derive(Parser, Debug)]
#[command(name = "gantry-sign", version, about = ABOUT, long_about = LONG_ABOUT)]
pub(crate) struct Cli {
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Generate a key pair: NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (SPKI PEM).
    ///
    /// Prints the key id (RFC 9679 COSE key thumbprint), the name other
    /// commands and the trust root use for the key. Existing files are never
    /// overwritten.
    Keygen {
        /// Key algorithm: ed25519 signs as Ed25519 (-19), p256 as ESP256 (-9).
        #[arg(long, value_enum)]
        alg: Alg,
        /// Output path prefix: writes PREFIX.key and PREFIX.pub.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Also write PREFIX.cose, the public key as a COSE_Key.
        #[arg(long)]
        cose: bool,
    },
    /// Build a container release manifest from a Wasm module, its config and blobs.
    ///
    /// The config (TOML) is validated, encoded as canonical CBOR and carried
    /// inside the envelope, so its limits and capabilities are signed. The
    /// module and blobs are referenced by digest, size and content-addressed
    /// URI (/blobs/sha256/<hex>); ship them next to the envelope. Without
    /// --key the envelope is unsigned; add signatures later with `sign`.
    Container {
        /// The Wasm module.
        #[arg(long, value_name = "M.wasm")]
        module: PathBuf,
        /// The container config (TOML; see docs/formats.md).
        #[arg(long, value_name = "C.toml")]
        config: PathBuf,
        /// An extra payload, e.g. --blob model=model.tflite (repeatable). A
        /// directory is shipped as its canonical archive, written next to
        /// the envelope as OUT.NAME.tar, for a config to mount.
        #[arg(long, value_name = "NAME=PATH")]
        blob: Vec<String>,
        /// Sequence number of this release in the container's stream; devices
        /// refuse anything not above what they run.
        #[arg(long)]
        sequence: u64,
        #[command(flatten)]
        identity: Identity,
        /// Sign with this private key (repeatable, one signature each).
        #[arg(long, value_name = "K.key")]
        key: Vec<PathBuf>,
        /// Where to write the envelope.
        #[arg(long, value_name = "OUT.suit")]
        out: PathBuf,
    },
    /// Build a firmware release manifest from a firmware image.
    ///
    /// One component, ["firmware"], referenced by digest, size and
    /// content-addressed URI (/blobs/sha256/<hex>): the bootloader verifies
    /// it before every boot, and the sequence number is its anti-rollback
    /// counter. Ship the image next to the envelope. Without --key the
    /// envelope is unsigned; add signatures later with `sign`.
    Firmware {
        /// The firmware image, as it runs from the ACTIVE slot.
        #[arg(long, value_name = "IMAGE.bin")]
        image: PathBuf,
        /// Sequence number in the device's firmware stream; the bootloader
        /// refuses anything not above its counter.
        #[arg(long)]
        sequence: u64,
        #[command(flatten)]
        identity: Identity,
        /// Sign with this private key (repeatable, one signature each).
        #[arg(long, value_name = "K.key")]
        key: Vec<PathBuf>,
        /// Where to write the envelope.
        #[arg(long, value_name = "OUT.suit")]
        out: PathBuf,
    },
    /// Add a signature to an envelope, keeping the signatures it has.
    Sign {
        /// Private key to sign with (repeatable).
        #[arg(long, value_name = "K.key", required = true)]
        key: Vec<PathBuf>,
        /// Envelope to sign.
        #[arg(long = "in", value_name = "IN.suit")]
        input: PathBuf,
        /// Where to write the signed envelope (may be the input file).
        #[arg(long, value_name = "OUT.suit")]
        out: PathBuf,
    },
    /// Verify an envelope: signatures, then digest, then sequence, then vendor/class.
    ///
    /// Needs the trusted keys: --key (repeatable, with --threshold) or
    /// --trust (with --trust-update and --at). Exit 0 if valid, 1 if not (the
    /// reason on stderr: e.g. signature invalid, digest mismatch, sequence too
    /// low, trust root expired; with --json also a {"valid": false, "code": ...}
    /// object on stdout), 2 on usage or I/O errors.
    Verify {
        #[command(flatten)]
        trust: TrustArgs,
        /// Refuse a sequence number below N (the installed one).
        #[arg(long, value_name = "N", default_value_t = 0)]
        min_sequence: u64,
        #[command(flatten)]
        identity: OptionalIdentity,
        /// The envelope.
        #[arg(value_name = "FILE.suit")]
        file: PathBuf,
    },
    /// Create, sign, verify, rotate and show trust roots.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Show what an envelope (or a trust root) contains, without verifying it.
    ///
    /// Components with digests, sizes and URIs, the sequence number, the
    /// signers by key id, and problems visible without keys (digest
    /// mismatches, a config that does not parse).
    Inspect {
        /// The envelope or trust root.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Alg {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over NIST P-256.
    P256,
}

/// Which device a release is for.
#[derive(Args, Debug)]
#[group(required = false)]
pub(crate) struct Identity {
    /// Vendor domain; the vendor id is its UUIDv5 in the DNS namespace.
    #[arg(long, value_name = "DOMAIN", required_unless_present = "vendor_id")]
    pub(crate) vendor: Option<String>,
    /// Vendor id as 32 hex digits (instead of --vendor).
    #[arg(long, value_name = "HEX", conflicts_with = "vendor")]
    pub(crate) vendor_id: Option<String>,
    /// Device model; the class id is its UUIDv5 in the vendor id's namespace.
    #[arg(long, value_name = "MODEL", required_unless_present = "class_id")]
    pub(crate) class: Option<String>,
    /// Class id as 32 hex digits (instead of --class).
    #[arg(long, value_name = "HEX", conflicts_with = "class")]
    pub(crate) class_id: Option<String>,
}

/// Optionally, which device a release must be for.
#[derive(Args, Debug)]
pub(crate) struct OptionalIdentity {
    /// Require this vendor (domain, as for `container`).
    #[arg(long, value_name = "DOMAIN")]
    pub(crate) vendor: Option<String>,
    /// Require this vendor id (32 hex digits).
    #[arg(long, value_name = "HEX", conflicts_with = "vendor")]
    pub(crate) vendor_id: Option<String>,
    /// Require this device model (needs the vendor).
    #[arg(long, value_name = "MODEL")]
    pub(crate) class: Option<String>,
    /// Require this class id (32 hex digits).
    #[arg(long, value_name = "HEX", conflicts_with = "class")]
    pub(crate) class_id: Option<String>,
}

/// Which keys to trust.
#[derive(Args, Debug)]
pub(crate) struct TrustArgs {
    #[command(flatten)]
    pub(crate) source: TrustSource,
    /// With --key: how many of the keys must have signed.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "key")]
    pub(crate) threshold: usize,
    /// Newer trust roots to rotate to from --trust, oldest first.
    #[arg(long, value_name = "ROOT", requires = "trust")]
    pub(crate) trust_update: Vec<PathBuf>,
    /// With --trust: check the trust root's expiry at this time (RFC 3339)
    /// instead of now. Keys given with --key do not expire.
    #[arg(long, value_name = "TIME", requires = "trust", conflicts_with = "key")]
    pub(crate) at: Option<String>,
}

/// Where the trusted keys come from: exactly one of --key or --trust. Only
/// these two satisfy the requirement; the options that refine them do not.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct TrustSource {
    /// Trust this public key (SPKI PEM or COSE_Key; repeatable).
    #[arg(long, value_name = "PUB.pem")]
    pub(crate) key: Vec<PathBuf>,
    /// Trust the `release` role of this trust root (verified first).
    #[arg(long, value_name = "ROOT")]
    pub(crate) trust: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TrustCommand {
    /// Create an unsigned trust root; then have its root keys `trust sign` it.
    ///
    /// Every role needs at least one key. Thresholds default to 1; production
    /// roots should require more than one root key.
    Create {
        /// Root key: may sign trust roots (repeatable).
        #[arg(long = "root", value_name = "PUB.pem", required = true)]
        root: Vec<PathBuf>,
        /// Root signatures a root needs.
        #[arg(long, value_name = "K", default_value_t = 1)]
        root_threshold: u32,
        /// Release key: may sign manifests (repeatable).
        #[arg(long = "release", value_name = "PUB.pem", required = true)]
        release: Vec<PathBuf>,
        /// Release signatures a manifest needs.
        #[arg(long, value_name = "K", default_value_t = 1)]
        release_threshold: u32,
        /// Server key: may sign deployment tickets (repeatable).
        #[arg(long = "server", value_name = "PUB.pem", required = true)]
        server: Vec<PathBuf>,
        /// Server signatures a ticket needs.
        #[arg(long, value_name = "K", default_value_t = 1)]
        server_threshold: u32,
        /// Version; a successor must have a higher one.
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// Expiry as RFC 3339 (2027-11-22T00:00:00Z) ...
        #[arg(long, value_name = "TIME", conflicts_with = "expires_in")]
        expires: Option<String>,
        /// ... or as a duration from now (365d, 26weeks).
        #[arg(long, value_name = "DURATION", default_value = "365d")]
        expires_in: String,
        /// Where to write the unsigned root.
        #[arg(long, value_name = "ROOT")]
        out: PathBuf,
    },
    /// Start a rotation: a successor of ROOT with version + 1, the same roles
    /// except those given, and a new expiry. Unsigned: it needs signatures from
    /// a threshold of the previous root keys AND of its own root keys.
    Rotate {
        /// The root in force now.
        #[arg(long, value_name = "ROOT")]
        previous: PathBuf,
        /// New root keys (replace the role's keys if given; repeatable).
        #[arg(long = "root", value_name = "PUB.pem")]
        root: Vec<PathBuf>,
        /// New root threshold.
        #[arg(long, value_name = "K")]
        root_threshold: Option<u32>,
        /// New release keys (replace the role's keys if given; repeatable).
        #[arg(long = "release", value_name = "PUB.pem")]
        release: Vec<PathBuf>,
        /// New release threshold.
        #[arg(long, value_name = "K")]
        release_threshold: Option<u32>,
        /// New server keys (replace the role's keys if given; repeatable).
        #[arg(long = "server", value_name = "PUB.pem")]
        server: Vec<PathBuf>,
        /// New server threshold.
        #[arg(long, value_name = "K")]
        server_threshold: Option<u32>,
        /// Expiry as RFC 3339 ...
        #[arg(long, value_name = "TIME", conflicts_with = "expires_in")]
        expires: Option<String>,
        /// ... or as a duration from now.
        #[arg(long, value_name = "DURATION", default_value = "365d")]
        expires_in: String,
        /// Where to write the unsigned successor.
        #[arg(long, value_name = "ROOT")]
        out: PathBuf,
    },
    /// Add a signature to a trust root (a root key, or for a rotation, a previous root key).
    Sign {
        /// Private key to sign with (repeatable).
        #[arg(long, value_name = "K.key", required = true)]
        key: Vec<PathBuf>,
        /// Trust root to sign.
        #[arg(long = "in", value_name = "ROOT")]
        input: PathBuf,
        /// Where to write it (may be the input).
        #[arg(long, value_name = "ROOT")]
        out: PathBuf,
    },
    /// Verify a trust root: self-signed by a threshold of its root keys and not
    /// expired; with --previous, also a valid rotation from that root.
    ///
    /// Exit 0 if valid, 1 if not (with --json, a {"valid": false, "code": ...}
    /// object on stdout).
    Verify {
        /// The root in force before this one (repeatable: a chain, oldest first).
        #[arg(long, value_name = "ROOT")]
        previous: Vec<PathBuf>,
        /// Check expiry at this time (RFC 3339) instead of now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The trust root.
        file: PathBuf,
    },
    /// Show a trust root's keys, roles, thresholds, version, expiry and signers (unverified).
    Show {
        /// The trust root.
        file: PathBuf,
    },
}
