//! The keys the bootloader trusts, provisioned into its own map at
//! manufacture instead of compiled in, and rotated in the field by the
//! rule the device applies to its trust root.
//!
//! One record under key 1 of the boot map, replaced atomically:
//!
//! ```text
//! boot-keys = [
//!   1,                          ; record format
//!   version: uint,              ; of the trust root the keys came from
//!   vendor-id: bstr .size 16,   ; this device's SUIT identity
//!   class-id: bstr .size 16,
//!   release: role,              ; who signs firmware
//!   root: role,                 ; who signs the next trust root
//!   retired: null / [role, manifest-digest: bstr .size 32],
//! ]
//! role = [threshold: uint, [1*8 bstr .cbor COSE_Key]]
//! ```
//!
//! `retired` keeps the firmware that ran when the release keys were
//! rotated bootable: its manifest, and only that one, still verifies under
//! the release keys that signed it (in ACTIVE; an update in DFU only under
//! the current keys). Once a newer image is confirmed the anti-rollback
//! counter excludes it anyway.
//!
//! The boot path decodes it into fixed arrays (no allocator). A successor
//! trust root is accepted only if a threshold of the `root` role kept here
//! and of its own root keys signed it, with a higher version
//! (`gantry_keys::trust::RootRole`, the device's rule, shared): a thief of
//! the runtime's release key cannot re-key the bootloader.

use gantry_keys::{COSE_KEY_MAX_LEN, PublicKey, decode_cose_key, encode_cose_key};
use minicbor::encode::write::Cursor;
use minicbor::{Decoder, Encoder};

use crate::check::BootConfig;

/// Most keys one role may hold in the boot map.
pub const MAX_ROLE_KEYS: usize = 8;
/// Upper bound of an encoded [`BootKeys`] record.
pub const MAX_KEYS_RECORD: usize = 96 + 3 * (12 + MAX_ROLE_KEYS * (3 + COSE_KEY_MAX_LEN));
const FORMAT: u8 = 1;

/// A keys record that cannot be built or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// A role with no keys, more than [`MAX_ROLE_KEYS`], or a threshold
    /// of 0 or above its keys.
    #[error("a role needs 1 to {MAX_ROLE_KEYS} keys and a threshold between 1 and their number: {0}")]
    Role(&'static str),
    /// The record does not decode.
    #[error("malformed boot keys record: {0}")]
    Malformed(&'static str),
    /// The buffer is too small for the record.
    #[error("buffer too small for the boot keys record")]
    BufferTooSmall,
}

/// The keys of one role and how many of them must sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleKeys {
    /// The first `len` are the role's; the rest repeat the first (a fixed
    /// array without an allocator).
    keys: [PublicKey; MAX_ROLE_KEYS],
    len: usize,
    threshold: u32,
}

impl RoleKeys {
    /// `keys` (1 to [`MAX_ROLE_KEYS`]) of which `threshold` must sign.
    pub fn new(keys: &[PublicKey], threshold: u32) -> Result<RoleKeys, KeysError> {
        let first = keys.first().ok_or(KeysError::Role("no keys"))?;
        if keys.len() > MAX_ROLE_KEYS {
            return Err(KeysError::Role("too many keys"));
        }
        if threshold == 0 || threshold as usize > keys.len() {
            return Err(KeysError::Role("threshold out of range"));
        }
        let keys_array = core::array::from_fn(|i| keys.get(i).unwrap_or(first).clone());
        Ok(RoleKeys { keys: keys_array, len: keys.len(), threshold })
    }

    /// The role's keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys[..self.len]
    }

    /// Signatures needed.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    fn encode<W: minicbor::encode::Write>(&self, e: &mut Encoder<W>) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.array(2)?.u32(self.threshold)?.array(self.len as u64)?;
        for key in self.keys() {
            let mut buf = [0u8; COSE_KEY_MAX_LEN];
            let n = encode_cose_key(key, &mut buf);
            e.bytes(&buf[..n])?;
        }
        Ok(())
    }

    fn decode(d: &mut Decoder<'_>) -> Result<RoleKeys, KeysError> {
        let bad = KeysError::Malformed;
        if d.array().map_err(|_| bad("role is not an array"))? != Some(2) {
            return Err(bad("role is not [threshold, keys]"));
        }
        let threshold = d.u32().map_err(|_| bad("threshold is not a number"))?;
        let n = d.array().map_err(|_| bad("keys are not an array"))?.ok_or(bad("indefinite keys array"))?;
        if n == 0 || n > MAX_ROLE_KEYS as u64 {
            return Err(KeysError::Role("key count out of range"));
        }
        let mut keys: [Option<PublicKey>; MAX_ROLE_KEYS] = Default::default();
        for slot in keys.iter_mut().take(n as usize) {
            let bytes = d.bytes().map_err(|_| bad("a key is not a byte string"))?;
            *slot = Some(decode_cose_key(bytes).map_err(|_| bad("a key is not a valid COSE_Key"))?);
        }
        let first = keys[0].clone().ok_or(bad("no keys"))?;
        let len = n as usize;
        if threshold == 0 || threshold as usize > len {
            return Err(KeysError::Role("threshold out of range"));
        }
        let keys = keys.map(|k| k.unwrap_or_else(|| first.clone()));
        Ok(RoleKeys { keys, len, threshold })
    }
}

/// How the bootloader treats updates; a build-time choice, unlike the
/// keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootPolicy {
    /// Boots an update may take without being confirmed before it is
    /// reverted (0 counts as 1).
    pub max_trial_boots: u16,
    /// Verify an update in DFU before swapping it in.
    pub check_update_before_swap: bool,
}

/// What the bootloader was provisioned with: its identity and the keys it
/// trusts, from one trust root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootKeys {
    /// Version of the trust root the keys came from.
    pub version: u64,
    /// This device's SUIT vendor id.
    pub vendor_id: [u8; 16],
    /// This device's SUIT class id.
    pub class_id: [u8; 16],
    /// Who signs firmware.
    pub release: RoleKeys,
    /// Who signs the next trust root.
    pub root: RoleKeys,
    /// The firmware running when the release keys were last rotated,
    /// which still boots under the keys that signed it.
    pub retired: Option<Retired>,
}

/// Release keys that left the trust root, kept for the one manifest that
/// ran when they did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retired {
    /// The release role before the rotation.
    pub release: RoleKeys,
    /// The manifest (SHA-256 of the bstr-wrapped manifest) it keeps bootable.
    pub manifest_digest: [u8; 32],
}

impl BootKeys {
    /// The verification input for firmware under `policy`.
    pub fn config(&self, policy: BootPolicy) -> BootConfig<'_> {
        BootConfig {
            anchors: self.release.keys(),
            threshold: self.release.threshold as usize,
            vendor_id: self.vendor_id,
            class_id: self.class_id,
            max_trial_boots: policy.max_trial_boots,
            check_update_before_swap: policy.check_update_before_swap,
        }
    }

    /// The verification input for the retired release keys, and the one
    /// manifest they may still verify.
    pub fn retired_config(&self, policy: BootPolicy) -> Option<(BootConfig<'_>, [u8; 32])> {
        let r = self.retired.as_ref()?;
        let config =
            BootConfig { anchors: r.release.keys(), threshold: r.release.threshold as usize, ..self.config(policy) };
        Some((config, r.manifest_digest))
    }

    /// Writes the record into `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, KeysError> {
        let mut e = Encoder::new(Cursor::new(buf));
        let written: Result<(), minicbor::encode::Error<_>> = (|| {
            e.array(7)?.u8(FORMAT)?.u64(self.version)?.bytes(&self.vendor_id)?.bytes(&self.class_id)?;
            self.release.encode(&mut e)?;
            self.root.encode(&mut e)?;
            match &self.retired {
                None => e.null().map(|_| ()),
                Some(r) => {
                    e.array(2)?;
                    r.release.encode(&mut e)?;
                    e.bytes(&r.manifest_digest).map(|_| ())
                }
            }
        })();
        written.map_err(|_| KeysError::BufferTooSmall)?;
        Ok(e.into_writer().position())
    }

    /// Reads a record; anything but exactly one well-formed record is refused.
    pub fn decode(bytes: &[u8]) -> Result<BootKeys, KeysError> {
        let bad = KeysError::Malformed;
        let mut d = Decoder::new(bytes);
        if d.array().map_err(|_| bad("not an array"))? != Some(7) {
            return Err(bad("not a 7-element array"));
        }
        if d.u8().map_err(|_| bad("format is not a number"))? != FORMAT {
            return Err(bad("unknown record format"));
        }
        let version = d.u64().map_err(|_| bad("version is not a number"))?;
        let id = |d: &mut Decoder<'_>| -> Result<[u8; 16], KeysError> {
            d.bytes().ok().and_then(|b| b.try_into().ok()).ok_or(bad("an identity is not 16 bytes"))
        };
        let (vendor_id, class_id) = (id(&mut d)?, id(&mut d)?);
        let release = RoleKeys::decode(&mut d)?;
        let root = RoleKeys::decode(&mut d)?;
        let retired = if d.datatype().map_err(|_| bad("retired keys missing"))? == minicbor::data::Type::Null {
            d.skip().map_err(|_| bad("retired keys missing"))?;
            None
        } else {
            if d.array().map_err(|_| bad("retired keys are not an array"))? != Some(2) {
                return Err(bad("retired keys are not [role, digest]"));
            }
            let release = RoleKeys::decode(&mut d)?;
            let digest = d.bytes().ok().and_then(|b| b.try_into().ok()).ok_or(bad("a digest is not 32 bytes"))?;
            Some(Retired { release, manifest_digest: digest })
        };
        if d.position() != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(BootKeys { version, vendor_id, class_id, release, root, retired })
    }
}

#[cfg(feature = "std")]
mod trust {
    use gantry_keys::trust::{Role, RootRole, TrustRoot};

    use super::{BootKeys, KeysError, RoleKeys};

    impl BootKeys {
        /// The keys of `root` (verified by the caller: a provisioned root
        /// is self-signed, a later one a successor) for a device of this
        /// identity.
        pub fn from_trust_root(
            root: &TrustRoot,
            vendor_id: [u8; 16],
            class_id: [u8; 16],
        ) -> Result<BootKeys, KeysError> {
            let role = |r: Role| RoleKeys::new(&root.role_keys(r), root.policy(r).threshold);
            Ok(BootKeys {
                version: root.version,
                vendor_id,
                class_id,
                release: role(Role::Release)?,
                root: role(Role::Root)?,
                retired: None,
            })
        }

        /// These keys moved to `next` (a verified successor), keeping the
        /// firmware `running` (its manifest digest; `None` when none runs)
        /// bootable under the release keys that signed it: the current
        /// ones, or the ones already retired for it.
        pub fn rotated_to(&self, next: &TrustRoot, running: Option<[u8; 32]>) -> Result<BootKeys, KeysError> {
            let mut keys = BootKeys::from_trust_root(next, self.vendor_id, self.class_id)?;
            keys.retired = running.map(|digest| match &self.retired {
                Some(r) if r.manifest_digest == digest => r.clone(),
                _ => super::Retired { release: self.release.clone(), manifest_digest: digest },
            });
            Ok(keys)
        }

        /// What a successor trust root is checked against.
        pub fn root_role(&self) -> RootRole {
            RootRole { version: self.version, keys: self.root.keys().to_vec(), threshold: self.root.threshold }
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use gantry_keys::{KeyType, SigningKey};

    use super::*;

    fn key() -> PublicKey {
        SigningKey::generate(KeyType::P256).public_key()
    }

    fn keys(release: usize, root: usize) -> BootKeys {
        let (rel, rt): (Vec<_>, Vec<_>) = ((0..release).map(|_| key()).collect(), (0..root).map(|_| key()).collect());
        BootKeys {
            version: u64::MAX,
            vendor_id: [1; 16],
            class_id: [2; 16],
            release: RoleKeys::new(&rel, release as u32).unwrap(),
            root: RoleKeys::new(&rt, 1).unwrap(),
            retired: None,
        }
    }

    #[test]
    fn the_widest_record_round_trips_within_its_bound() {
        let mut k = keys(MAX_ROLE_KEYS, MAX_ROLE_KEYS);
        let retired = keys(MAX_ROLE_KEYS, 1).release;
        k.retired = Some(Retired { release: retired, manifest_digest: [7; 32] });
        let mut buf = [0u8; MAX_KEYS_RECORD];
        let n = k.encode(&mut buf).unwrap();
        assert_eq!(BootKeys::decode(&buf[..n]).unwrap(), k);
        assert_eq!(k.config(BootPolicy { max_trial_boots: 3, check_update_before_swap: true }).anchors.len(), 8);
        assert_eq!(k.encode(&mut buf[..n - 1]), Err(KeysError::BufferTooSmall));
    }

    #[test]
    fn roles_out_of_bounds_are_refused_when_built_and_when_read() {
        let nine: Vec<_> = (0..9).map(|_| key()).collect();
        assert!(RoleKeys::new(&nine, 1).is_err());
        assert!(RoleKeys::new(&[], 1).is_err());
        assert!(RoleKeys::new(&nine[..2], 0).is_err());
        assert!(RoleKeys::new(&nine[..2], 3).is_err());
        let mut k = keys(2, 1);
        k.release.threshold = 3;
        let mut buf = [0u8; MAX_KEYS_RECORD];
        let n = k.encode(&mut buf).unwrap();
        assert_eq!(BootKeys::decode(&buf[..n]), Err(KeysError::Role("threshold out of range")));
    }

    #[test]
    fn every_truncation_and_a_trailing_byte_are_refused() {
        let mut k = keys(2, 2);
        k.retired = Some(Retired { release: keys(1, 1).release, manifest_digest: [7; 32] });
        let mut buf = [0u8; MAX_KEYS_RECORD + 1];
        let n = k.encode(&mut buf).unwrap();
        for len in 0..n {
            assert!(BootKeys::decode(&buf[..len]).is_err(), "{len} bytes accepted");
        }
        assert!(BootKeys::decode(&buf[..n + 1]).is_err());
    }
}
