//! Building and signing envelopes on the release side.
//!
//! A Gantry container release is one SUIT envelope:
//!
//! ```text
//! 107({
//!   2: << [ << SUIT_Digest >>, << COSE_Sign1 >> ... ] >>,   authentication wrapper
//!   3: << manifest >>,                                      sequence, components, sequences
//!   "#config": << container config (canonical CBOR) >>     integrated payload
//! })
//! ```
//!
//! Components are `[name, "module"]`, `[name, "config"]` and
//! `[name, "blob", blob-name]`; each has its SHA-256 digest and size in the
//! shared sequence, and a URI: the content-addressed `/blobs/sha256/<hex>`
//! for the module and blobs, `#config` for the integrated config. Everything
//! is encoded deterministically, so the same inputs give the same bytes.

use coset::iana::EnumI64 as _;
use coset::{TaggedCborSerializable as _, iana};
use gantry_keys::cbor_vec::VecWriter;
use gantry_keys::{KeyId, KeySource};
use minicbor::Encoder;
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::cbor::{Key, KeyOrder, Reader};
use crate::config::ContainerConfig;
use crate::cose::{Sign1, TagRule};
use crate::suit::envelope::{Digest, Envelope};
use crate::suit::labels::*;

/// Name of the integrated payload holding the container config.
pub const CONFIG_PAYLOAD: &str = "#config";

/// The content-addressed URI of a payload.
pub fn blob_uri(sha256: &[u8; 32]) -> String {
    format!("/blobs/sha256/{}", hex::encode(sha256))
}

/// SUIT vendor id: UUIDv5 of the vendor's domain name in the DNS namespace.
pub fn vendor_id_from_domain(domain: &str) -> [u8; 16] {
    *uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, domain.as_bytes()).as_bytes()
}

/// SUIT class id: UUIDv5 of the model name in the vendor id's namespace.
pub fn class_id_from_model(vendor_id: &[u8; 16], model: &str) -> [u8; 16] {
    *uuid::Uuid::new_v5(&uuid::Uuid::from_bytes(*vendor_id), model.as_bytes()).as_bytes()
}

/// Everything one container release is made of.
#[derive(Clone, Debug)]
pub struct ContainerRelease<'a> {
    /// The validated config.
    pub config: &'a ContainerConfig,
    /// The Wasm module bytes.
    pub module: &'a [u8],
    /// Extra payloads (an ML model, a data file), by name.
    pub blobs: &'a [(String, &'a [u8])],
    /// Sequence number of this release in the container's stream.
    pub sequence: u64,
    /// Vendor id the device must have.
    pub vendor_id: [u8; 16],
    /// Class id the device must have.
    pub class_id: [u8; 16],
}

struct Component<'a> {
    id: Vec<&'a [u8]>,
    sha256: [u8; 32],
    size: u64,
    uri: String,
}

fn check_blob_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(Error::Build(format!("blob name {name:?}: use 1-63 of a-z, 0-9, '.', '_' and '-'"))) }
}

type EncResult = Result<(), minicbor::encode::Error<core::convert::Infallible>>;

fn enc(f: impl FnOnce(&mut Encoder<VecWriter>) -> EncResult) -> Vec<u8> {
    let mut e = Encoder::new(VecWriter::default());
    // Writing into a Vec cannot fail.
    let _ = f(&mut e);
    e.into_writer().0
}

fn digest_bytes(sha256: &[u8; 32]) -> Vec<u8> {
    enc(|e| {
        e.array(2)?.i64(DIGEST_SHA256)?.bytes(sha256)?;
        Ok(())
    })
}

impl ContainerRelease<'_> {
    /// Builds the unsigned envelope (digest only); add signatures with
    /// [`add_signature`].
    pub fn build_unsigned(&self) -> Result<Vec<u8>, Error> {
        self.config.validate()?;
        if self.module.is_empty() {
            return Err(Error::Build("the module is empty".into()));
        }
        let config = self.config.to_cbor();
        let name = self.config.name.as_bytes();
        let sha = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
        let mut components = vec![
            Component {
                id: vec![name, b"module"],
                sha256: sha(self.module),
                size: self.module.len() as u64,
                uri: String::new(),
            },
            Component {
                id: vec![name, b"config"],
                sha256: sha(&config),
                size: config.len() as u64,
                uri: CONFIG_PAYLOAD.into(),
            },
        ];
        components[0].uri = blob_uri(&components[0].sha256);
        let mut names = std::collections::BTreeSet::new();
        for (blob, bytes) in self.blobs {
            check_blob_name(blob)?;
            if !names.insert(blob.as_str()) {
                return Err(Error::Build(format!("blob {blob:?} given twice")));
            }
            let d = sha(bytes);
            components.push(Component {
                id: vec![name, b"blob", blob.as_bytes()],
                sha256: d,
                size: bytes.len() as u64,
                uri: blob_uri(&d),
            });
        }
        if components.len() > crate::suit::manifest::MAX_COMPONENTS {
            return Err(Error::Build(format!("at most {} blobs", crate::suit::manifest::MAX_COMPONENTS - 2)));
        }

        Ok(envelope(&components, &self.vendor_id, &self.class_id, self.sequence, Some((CONFIG_PAYLOAD, &config))))
    }
}

/// A runtime firmware release: one component, `["firmware"]`, whose image the
/// bootloader checks against the manifest before every boot.
#[derive(Clone, Debug)]
pub struct FirmwareRelease<'a> {
    /// The firmware image as it runs from the ACTIVE slot.
    pub image: &'a [u8],
    /// Sequence number in the device's firmware stream (the bootloader's
    /// anti-rollback counter).
    pub sequence: u64,
    /// Vendor id the device must have.
    pub vendor_id: [u8; 16],
    /// Class id the device must have.
    pub class_id: [u8; 16],
}

impl FirmwareRelease<'_> {
    /// Builds the unsigned envelope (digest only); add signatures with
    /// [`add_signature`].
    pub fn build_unsigned(&self) -> Result<Vec<u8>, Error> {
        if self.image.is_empty() {
            return Err(Error::Build("the firmware image is empty".into()));
        }
        let sha256: [u8; 32] = Sha256::digest(self.image).into();
        let component = Component {
            id: vec![crate::FIRMWARE_COMPONENT],
            sha256,
            size: self.image.len() as u64,
            uri: blob_uri(&sha256),
        };
        Ok(envelope(&[component], &self.vendor_id, &self.class_id, self.sequence, None))
    }
}

/// Encodes the envelope: the shared sequence sets identity, digest and size
/// of every component; validate checks every image; install fetches them;
/// invoke starts component 0.
fn envelope(
    components: &[Component<'_>],
    vendor_id: &[u8; 16],
    class_id: &[u8; 16],
    sequence: u64,
    integrated: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let shared = enc(|e| {
        e.array(8 + 4 * components.len() as u64)?;
        e.i64(DIR_SET_COMPONENT_INDEX)?.bool(true)?;
        e.i64(DIR_OVERRIDE_PARAMETERS)?.map(2)?;
        e.i64(PARAM_VENDOR_ID)?.bytes(vendor_id)?.i64(PARAM_CLASS_ID)?.bytes(class_id)?;
        e.i64(COND_VENDOR_IDENTIFIER)?.u8(15)?.i64(COND_CLASS_IDENTIFIER)?.u8(15)?;
        for (i, c) in components.iter().enumerate() {
            e.i64(DIR_SET_COMPONENT_INDEX)?.u64(i as u64)?;
            e.i64(DIR_OVERRIDE_PARAMETERS)?.map(2)?;
            e.i64(PARAM_IMAGE_DIGEST)?.bytes(&digest_bytes(&c.sha256))?;
            e.i64(PARAM_IMAGE_SIZE)?.u64(c.size)?;
        }
        Ok(())
    });
    let common = enc(|e| {
        e.map(2)?.i64(COMPONENTS)?.array(components.len() as u64)?;
        for c in components {
            e.array(c.id.len() as u64)?;
            for seg in &c.id {
                e.bytes(seg)?;
            }
        }
        e.i64(SHARED_SEQUENCE)?.bytes(&shared)?;
        Ok(())
    });
    let validate = enc(|e| {
        e.array(4)?.i64(DIR_SET_COMPONENT_INDEX)?.bool(true)?.i64(COND_IMAGE_MATCH)?.u8(15)?;
        Ok(())
    });
    let invoke = enc(|e| {
        e.array(4)?.i64(DIR_SET_COMPONENT_INDEX)?.u8(0)?.i64(DIR_INVOKE)?.u8(15)?;
        Ok(())
    });
    let install = enc(|e| {
        e.array(8 * components.len() as u64)?;
        for (i, c) in components.iter().enumerate() {
            e.i64(DIR_SET_COMPONENT_INDEX)?.u64(i as u64)?;
            e.i64(DIR_OVERRIDE_PARAMETERS)?.map(1)?.i64(PARAM_URI)?.str(&c.uri)?;
            e.i64(DIR_FETCH)?.u8(15)?.i64(COND_IMAGE_MATCH)?.u8(15)?;
        }
        Ok(())
    });
    let manifest = enc(|e| {
        e.map(6)?;
        e.i64(MANIFEST_VERSION)?.u8(1)?;
        e.i64(SEQUENCE_NUMBER)?.u64(sequence)?;
        e.i64(COMMON)?.bytes(&common)?;
        e.i64(VALIDATE)?.bytes(&validate)?;
        e.i64(INVOKE)?.bytes(&invoke)?;
        e.i64(INSTALL)?.bytes(&install)?;
        Ok(())
    });
    let wrapped_manifest = enc(|e| {
        e.bytes(&manifest)?;
        Ok(())
    });
    let auth = enc(|e| {
        e.array(1)?.bytes(&digest_bytes(&Sha256::digest(&wrapped_manifest).into()))?;
        Ok(())
    });
    enc(|e| {
        e.tag(minicbor::data::Tag::new(TAG_ENVELOPE))?.map(if integrated.is_some() { 3 } else { 2 })?;
        e.i64(AUTHENTICATION_WRAPPER)?.bytes(&auth)?;
        e.i64(MANIFEST)?;
        e.writer_mut().0.extend_from_slice(&wrapped_manifest);
        if let Some((name, bytes)) = integrated {
            e.str(name)?.bytes(bytes)?;
        }
        Ok(())
    })
}

/// The key ids named by the signatures already in `envelope`.
pub fn signer_key_ids(envelope: &[u8]) -> Result<Vec<Option<KeyId>>, Error> {
    let env = Envelope::parse(envelope)?;
    let (_, blocks) = split_auth(env.authentication_wrapper())?;
    blocks.iter().map(|b| Sign1::parse(b, TagRule::Required).map(|s| s.key_id().and_then(KeyId::from_slice))).collect()
}

fn split_auth(auth: &[u8]) -> Result<(&[u8], Vec<&[u8]>), Error> {
    let mut r = Reader::new(auth);
    let n = r.array("authentication wrapper")?;
    if n == 0 {
        return Err(Error::Missing("SUIT_Digest in authentication wrapper"));
    }
    let digest = r.bytes("digest bstr")?;
    let blocks = (1..n).map(|_| r.bytes("authentication block")).collect::<Result<Vec<_>, _>>()?;
    r.finish("authentication wrapper")?;
    Ok((digest, blocks))
}

/// Adds a COSE_Sign1 by `source` to `envelope`, keeping every other member
/// and signature byte for byte. Refuses an envelope whose digest does not
/// match its manifest (it would sign something other than what it shows)
/// and a key that already signed.
pub fn add_signature(envelope: &[u8], source: &dyn KeySource) -> Result<Vec<u8>, Error> {
    let env = Envelope::parse(envelope)?;
    let (digest_bstr, blocks) = split_auth(env.authentication_wrapper())?;
    if !Digest::parse(digest_bstr)?.matches(env.manifest().wrapped)? {
        return Err(Error::DigestMismatch);
    }
    let kid = source.key_id();
    for b in &blocks {
        if Sign1::parse(b, TagRule::Required)?.key_id() == Some(&kid.as_bytes()[..]) {
            return Err(Error::Build(format!("key {kid} already signed this envelope")));
        }
    }
    if blocks.len() >= crate::MAX_SIGNATURES {
        return Err(Error::LimitExceeded { what: "signatures", limit: crate::MAX_SIGNATURES });
    }
    let alg = iana::Algorithm::from_i64(source.algorithm().cose_id())
        .ok_or_else(|| Error::Build(format!("algorithm {} unknown to coset", source.algorithm())))?;
    let sign1 = coset::CoseSign1Builder::new()
        .protected(coset::HeaderBuilder::new().algorithm(alg).build())
        .unprotected(coset::HeaderBuilder::new().key_id(kid.as_bytes().to_vec()).build())
        .try_create_detached_signature(digest_bstr, b"", |tbs| source.sign(tbs))?
        .build();
    let sign1 = sign1.to_tagged_vec().map_err(|e| Error::Build(e.to_string()))?;

    let auth = enc(|e| {
        e.array(blocks.len() as u64 + 2)?.bytes(digest_bstr)?;
        for b in &blocks {
            e.bytes(b)?;
        }
        e.bytes(&sign1)?;
        Ok(())
    });
    // Copy the other members exactly as they are.
    let mut r = Reader::new(envelope);
    r.maybe_tag()?;
    let n = r.map("envelope")?;
    let mut order = KeyOrder::new();
    let mut members = Vec::new();
    for _ in 0..n {
        let start = r.position();
        let key = r.any_key(&mut order)?;
        let raw_key = &envelope[start..r.position()];
        let value = r.raw_value()?;
        members.push((key, raw_key, value));
    }
    Ok(enc(|e| {
        if env.is_tagged() {
            e.tag(minicbor::data::Tag::new(TAG_ENVELOPE))?;
        }
        e.map(members.len() as u64)?;
        for (key, raw_key, value) in &members {
            e.writer_mut().0.extend_from_slice(raw_key);
            if *key == Key::Int(AUTHENTICATION_WRAPPER) {
                e.bytes(&auth)?;
            } else {
                e.writer_mut().0.extend_from_slice(value);
            }
        }
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Policy, Section, verify};
    use gantry_keys::{FileKeySource, KeyType, SigningKey};

    fn release_bytes(seq: u64) -> Vec<u8> {
        let config = ContainerConfig::from_toml("name = \"demo\"\nversion = \"1.0\"\n").unwrap();
        let blob = vec![7u8; 1000];
        let blobs = [("model.bin".to_string(), &blob[..])];
        let vendor = vendor_id_from_domain("example.com");
        ContainerRelease {
            config: &config,
            module: b"\0asm\x01\0\0\0",
            blobs: &blobs,
            sequence: seq,
            vendor_id: vendor,
            class_id: class_id_from_model(&vendor, "gateway"),
        }
        .build_unsigned()
        .unwrap()
    }

    #[test]
    fn build_is_deterministic_and_verifies_once_signed() {
        let unsigned = release_bytes(7);
        assert_eq!(unsigned, release_bytes(7));
        let ed = FileKeySource::from_key("ed".into(), SigningKey::generate(KeyType::Ed25519));
        let p = FileKeySource::from_key("p".into(), SigningKey::generate(KeyType::P256));
        let anchors = [ed.public_key().clone(), p.public_key().clone()];
        assert!(matches!(verify(&unsigned, &Policy::new(&anchors, 1)), Err(Error::Unsigned)));

        let one = add_signature(&unsigned, &ed).unwrap();
        assert!(matches!(add_signature(&one, &ed), Err(Error::Build(_))));
        let two = add_signature(&one, &p).unwrap();
        let m = verify(&two, &Policy::new(&anchors, 2).min_sequence(7)).unwrap();
        assert_eq!(m.sequence_number(), 7);
        assert_eq!(m.manifest().component_count(), 3);
        assert_eq!(
            m.envelope().integrated_payload(CONFIG_PAYLOAD).map(|c| c.len()),
            Some(ContainerConfig::from_toml("name = \"demo\"\nversion = \"1.0\"\n").unwrap().to_cbor().len())
        );
        assert!(m.section(Section::Install).unwrap().is_some());
        let module = m.declared_image(0).unwrap();
        assert_eq!(module.sha256, Some(Sha256::digest(b"\0asm\x01\0\0\0").into()));
        assert_eq!((module.size, module.uri), (Some(8), Some(blob_uri(&module.sha256.unwrap()).as_str())));
        assert_eq!(m.declared_image(1).unwrap().uri, Some(CONFIG_PAYLOAD));
        assert_eq!(m.declared_image(2).unwrap().size, Some(1000));
        assert!(matches!(m.declared_image(3), Err(Error::ComponentIndex(3))));
        assert!(matches!(verify(&one, &Policy::new(&anchors, 2)), Err(Error::ThresholdNotMet { have: 1, need: 2 })));
        assert_eq!(signer_key_ids(&two).unwrap(), vec![Some(ed.key_id()), Some(p.key_id())]);

        let vendor = vendor_id_from_domain("example.com");
        let class = class_id_from_model(&vendor, "gateway");
        verify(&two, &Policy::new(&anchors, 1).identity(Some(&vendor), Some(&class))).unwrap();
        let other = class_id_from_model(&vendor, "camera");
        assert!(matches!(
            verify(&two, &Policy::new(&anchors, 1).identity(Some(&vendor), Some(&other))),
            Err(Error::WrongClass)
        ));
    }

    #[test]
    fn refuses_to_sign_an_inconsistent_envelope() {
        let mut bytes = release_bytes(1);
        // Change one byte inside the manifest (the sequence number).
        let pos = bytes.windows(3).position(|w| w == [0x01, 0x01, 0x02]).unwrap();
        bytes[pos + 3] ^= 0x01;
        let ed = FileKeySource::from_key("ed".into(), SigningKey::generate(KeyType::Ed25519));
        assert!(matches!(add_signature(&bytes, &ed), Err(Error::DigestMismatch)));
    }
}
