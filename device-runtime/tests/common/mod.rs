//! Shared by the device-runtime tests: a fleet's keys and trust root, and
//! signed container releases.
#![allow(dead_code)]

use gantry_device::layout::Geometry;
use gantry_device::store::{HostFlash, Identity};

/// The store on the host's simulated flash.
pub type Store = gantry_device::store::Store<HostFlash>;
use gantry_keys::trust::{Role, SignedTrustRoot, TrustRoot};
use gantry_keys::{FileKeySource, KeySource, KeyType, SigningKey};
use gantry_signing::build::{ContainerRelease, add_signature, class_id_from_model, vendor_id_from_domain};
use gantry_signing::config::ContainerConfig;

/// The store tests' clock, and (an hour later) the expiry of the fleet's
/// trust root. Far ahead of the wall clock, which the supervisor and CLI
/// tests install under: with 1_800_000_000 they would all have failed from
/// January 2027 on, when that root expired for real.
pub const NOW: u64 = 4_000_000_000;

/// Envelope, module, blob.
pub type Release = (Vec<u8>, Vec<u8>, Vec<u8>);

pub fn geometry() -> Geometry {
    Geometry { firmware_pages: 1, device_kv_pages: 4, max_containers: 2, slot_size: 64 * 1024 }
}

pub struct Fleet {
    pub root: FileKeySource,
    pub release: FileKeySource,
    pub identity: Identity,
    pub trust_root: Vec<u8>,
}

impl Fleet {
    pub fn new() -> Fleet {
        let key = |t| FileKeySource::from_key("k".into(), SigningKey::generate(t));
        let (root, release, server) = (key(KeyType::Ed25519), key(KeyType::P256), key(KeyType::Ed25519));
        let doc = TrustRoot::new(
            1,
            NOW + 3600,
            &[
                (Role::Root, vec![root.public_key().clone()], 1),
                (Role::Release, vec![release.public_key().clone()], 1),
                (Role::Server, vec![server.public_key().clone()], 1),
            ],
        )
        .unwrap();
        let mut signed = SignedTrustRoot::new(doc).unwrap();
        signed.sign_with(&root).unwrap();
        let vendor_id = vendor_id_from_domain("example.com");
        let identity = Identity { device_id: [7; 16], vendor_id, class_id: class_id_from_model(&vendor_id, "gateway") };
        Fleet { root, release, identity, trust_root: signed.to_bytes() }
    }

    /// The same fleet after a rotation of its root and release keys: trust
    /// root `version`, expiring at `expires`, signed by the old root key and
    /// the new one.
    pub fn rotated(&self, version: u64, expires: u64) -> Fleet {
        self.rotated_signed(version, expires, true, true)
    }

    /// [`Fleet::rotated`], signed by the old root key, the new one, both or
    /// neither.
    pub fn rotated_signed(&self, version: u64, expires: u64, by_old: bool, by_new: bool) -> Fleet {
        let key = |t| FileKeySource::from_key("k".into(), SigningKey::generate(t));
        let (root, release) = (key(KeyType::P256), key(KeyType::Ed25519));
        let doc = TrustRoot::new(
            version,
            expires,
            &[
                (Role::Root, vec![root.public_key().clone()], 1),
                (Role::Release, vec![release.public_key().clone()], 1),
                (Role::Server, vec![root.public_key().clone()], 1),
            ],
        )
        .unwrap();
        let mut signed = SignedTrustRoot::new(doc).unwrap();
        if by_old {
            signed.sign_with(&self.root).unwrap();
        }
        if by_new {
            signed.sign_with(&root).unwrap();
        }
        Fleet { root, release, identity: self.identity, trust_root: signed.to_bytes() }
    }

    pub fn device(&self) -> Store {
        self.device_of(geometry())
    }

    pub fn device_of(&self, geometry: Geometry) -> Store {
        let size = gantry_device::layout::DeviceLayout::new(geometry).unwrap().size() as usize;
        let store = Store::open(HostFlash::new(size), geometry).unwrap();
        store.provision(&self.identity, &self.trust_root, NOW).unwrap();
        store
    }

    /// A signed release of container `name` with a module of `len` bytes.
    pub fn release(&self, name: &str, version: &str, sequence: u64, len: usize) -> Release {
        self.release_for(name, version, sequence, len, self.identity.class_id)
    }

    pub fn release_for(&self, name: &str, version: &str, seq: u64, len: usize, class: [u8; 16]) -> Release {
        let config = ContainerConfig::from_toml(&format!("name = \"{name}\"\nversion = \"{version}\"\n")).unwrap();
        let module: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + seq) as u8).collect();
        let blob = vec![seq as u8; 700];
        let blobs = [("model.bin".to_string(), &blob[..])];
        let unsigned = ContainerRelease {
            config: &config,
            module: &module,
            blobs: &blobs,
            sequence: seq,
            vendor_id: self.identity.vendor_id,
            class_id: class,
        }
        .build_unsigned()
        .unwrap();
        (add_signature(&unsigned, &self.release).unwrap(), module, blob)
    }

    /// A signed release of `config_toml` with `module` and no blobs.
    pub fn release_with(&self, config_toml: &str, module: &[u8], seq: u64) -> Vec<u8> {
        self.release_with_blobs(&ContainerConfig::from_toml(config_toml).unwrap(), module, &[], seq)
    }

    /// A signed release of `config` with `module` and `blobs` (name,
    /// bytes): install it with the payloads `[module, blobs...]` in the
    /// same order.
    pub fn release_with_blobs(
        &self,
        config: &ContainerConfig,
        module: &[u8],
        blobs: &[(String, &[u8])],
        seq: u64,
    ) -> Vec<u8> {
        let unsigned = ContainerRelease {
            config,
            module,
            blobs,
            sequence: seq,
            vendor_id: self.identity.vendor_id,
            class_id: self.identity.class_id,
        }
        .build_unsigned()
        .unwrap();
        add_signature(&unsigned, &self.release).unwrap()
    }
}

/// A sweep's knob from the environment (`GANTRY_SWEEP_STRIDE`,
/// `GANTRY_SWEEP_SEEDS`: the full sweeps in docs/device-runtime.md use
/// stride 1), else the reduced default `cargo test` runs.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&v| v > 0).unwrap_or(default)
}
