//! A readable description of an envelope, for humans and `--json` scripts.
//!
//! Inspection does **not** verify: it reports what the envelope claims
//! (components, digests, sizes, sequence, who signed) and whether the
//! internal digests agree, so an engineer can see what they are about to
//! sign or why verification failed. Use [`crate::verify()`] to trust it.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::build::CONFIG_PAYLOAD;
use crate::cbor::{KeyOrder, Reader};
use crate::config::ContainerConfig;
use crate::cose::{Sign1, TagRule};
use crate::suit::envelope::{Digest, Envelope};
use crate::suit::labels::*;
use crate::suit::manifest::{MAX_COMPONENTS, Manifest, Member};

/// What an envelope claims.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// Whether the envelope carries tag 107.
    pub tagged: bool,
    /// SHA-256 of the bstr-wrapped manifest (hex).
    pub manifest_digest: String,
    /// Whether the authentication wrapper's digest matches the manifest.
    pub digest_matches: bool,
    /// The sequence number.
    pub sequence_number: u64,
    /// Vendor id (hex) the shared sequence sets, if any.
    pub vendor_id: Option<String>,
    /// Class id (hex) the shared sequence sets, if any.
    pub class_id: Option<String>,
    /// Components with their parameters.
    pub components: Vec<ComponentInfo>,
    /// Signatures present (unverified).
    pub signatures: Vec<SignatureInfo>,
    /// Integrated payloads.
    pub integrated_payloads: Vec<PayloadInfo>,
    /// Severable members: name and state (`inline`, `severed`, `present`).
    pub severable: Vec<(String, String)>,
    /// The container config, if the envelope carries one.
    pub container: Option<ContainerConfig>,
    /// Problems found without keys: digest mismatches, a config that does not parse.
    pub problems: Vec<String>,
}

/// One component.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ComponentInfo {
    /// Index in the manifest.
    pub index: usize,
    /// Identifier, e.g. `["demo", "module"]`.
    pub id: String,
    /// Image digest (hex SHA-256), if set.
    pub digest: Option<String>,
    /// Image size, if set.
    pub size: Option<u64>,
    /// URI, if set (outside try-each).
    pub uri: Option<String>,
}

/// One signature, as claimed.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureInfo {
    /// Algorithm name and id, e.g. `ESP256 (-9)`.
    pub algorithm: String,
    /// Key id (hex), if the signature names one.
    pub key_id: Option<String>,
}

/// One integrated payload.
#[derive(Clone, Debug, Serialize)]
pub struct PayloadInfo {
    /// Its name (`#config`).
    pub name: String,
    /// Its size.
    pub size: usize,
    /// SHA-256 (hex).
    pub digest: String,
}

/// Describes `envelope` without verifying it.
pub fn inspect(envelope: &[u8]) -> Result<Inspection, Error> {
    let env = Envelope::parse(envelope)?;
    let mut r = Reader::new(env.authentication_wrapper());
    let n = r.array("authentication wrapper")?;
    if n == 0 {
        return Err(Error::Missing("SUIT_Digest in authentication wrapper"));
    }
    let claimed = Digest::parse(r.bytes("digest bstr")?)?;
    let mut signatures = Vec::new();
    for _ in 1..n {
        let block = r.bytes("authentication block")?;
        match Sign1::parse(block, TagRule::Required) {
            Ok(s) => signatures
                .push(SignatureInfo { algorithm: s.algorithm().to_string(), key_id: s.key_id().map(hex::encode) }),
            Err(e) => signatures.push(SignatureInfo { algorithm: format!("unreadable: {e}"), key_id: None }),
        }
    }
    let manifest = Manifest::parse(env.manifest().content)?;
    let mut problems = Vec::new();
    let digest_matches = claimed.matches(env.manifest().wrapped).unwrap_or(false);
    if !digest_matches {
        problems.push("the authentication wrapper's digest does not match the manifest".into());
    }

    let mut components: Vec<ComponentInfo> = manifest
        .components()
        .enumerate()
        .map(|(index, id)| ComponentInfo { index, id: id.to_string(), ..Default::default() })
        .collect();
    let (mut vendor_id, mut class_id) = (None, None);
    let mut sequences = vec![manifest.shared_sequence()];
    let mut severable = Vec::new();
    for (key, name) in [(PAYLOAD_FETCH, "payload-fetch"), (INSTALL, "install"), (TEXT, "text")] {
        let state = match (manifest.severable(key), env.severable(key)) {
            (Member::Absent, None) => continue,
            (Member::Inline(seq), _) => {
                if key != TEXT {
                    sequences.push(Some(seq));
                }
                "inline"
            }
            (Member::Severed(d), Some(w)) => {
                if !d.matches(w.wrapped).unwrap_or(false) {
                    problems.push(format!("severable member {name} does not match its digest"));
                }
                if key != TEXT {
                    sequences.push(Some(w.content));
                }
                "present"
            }
            (Member::Severed(_), None) => "severed",
            (Member::Absent, Some(_)) => {
                problems.push(format!("severable member {name} is not referenced by the manifest"));
                "unreferenced"
            }
        };
        severable.push((name.to_owned(), state.to_owned()));
    }
    sequences.extend([manifest.validate, manifest.load, manifest.invoke]);
    for seq in sequences.into_iter().flatten() {
        collect_parameters(seq, &mut components, &mut vendor_id, &mut class_id)?;
    }

    let integrated_payloads: Vec<PayloadInfo> = env
        .integrated_payload_names()
        .filter_map(|name| {
            let bytes = env.integrated_payload(name)?;
            Some(PayloadInfo { name: name.to_owned(), size: bytes.len(), digest: hex::encode(Sha256::digest(bytes)) })
        })
        .collect();
    for c in &components {
        let Some(uri) = c.uri.as_deref().filter(|u| u.starts_with('#')) else { continue };
        match integrated_payloads.iter().find(|p| p.name == uri) {
            None => problems.push(format!("component {} names integrated payload {uri}, which is missing", c.id)),
            Some(p) if Some(&p.digest) != c.digest.as_ref() || Some(p.size as u64) != c.size => problems
                .push(format!("integrated payload {uri} does not match the digest and size of component {}", c.id)),
            Some(_) => {}
        }
    }
    let container = match env.integrated_payload(CONFIG_PAYLOAD) {
        None => None,
        Some(bytes) => match ContainerConfig::from_cbor(bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("{CONFIG_PAYLOAD}: {e}"));
                None
            }
        },
    };
    if let Some(c) = &container {
        let prefix = format!("[{:?}, ", c.name);
        if let Some(bad) = components.iter().find(|x| !x.id.starts_with(&prefix)) {
            problems.push(format!("component {} does not belong to container {:?}", bad.id, c.name));
        }
    }

    Ok(Inspection {
        tagged: env.is_tagged(),
        manifest_digest: hex::encode(Sha256::digest(env.manifest().wrapped)),
        digest_matches,
        sequence_number: manifest.sequence_number(),
        vendor_id: vendor_id.map(hex::encode),
        class_id: class_id.map(hex::encode),
        components,
        signatures,
        integrated_payloads,
        severable,
        container,
        problems,
    })
}

/// Records what top-level override-parameters set, per selected component.
/// try-each options are alternatives and are not descended into.
fn collect_parameters<'a>(
    seq: &'a [u8],
    components: &mut [ComponentInfo],
    vendor: &mut Option<&'a [u8]>,
    class: &mut Option<&'a [u8]>,
) -> Result<(), Error> {
    let mut r = Reader::new(seq);
    let n = r.array("command sequence")?;
    let mut selected: u32 = 1;
    let count = components.len().min(MAX_COMPONENTS);
    for _ in 0..n / 2 {
        match r.i64("command")? {
            DIR_SET_COMPONENT_INDEX => {
                selected = match r.datatype()? {
                    minicbor::data::Type::Bool => {
                        if r.bool("index")? {
                            (1 << count) - 1
                        } else {
                            0
                        }
                    }
                    minicbor::data::Type::Array => {
                        let mut s = 0;
                        for _ in 0..r.array("indices")? {
                            s |= 1u32.checked_shl(r.u64("index")? as u32).unwrap_or(0);
                        }
                        s
                    }
                    _ => 1u32.checked_shl(r.u64("index")? as u32).unwrap_or(0),
                };
            }
            DIR_OVERRIDE_PARAMETERS => {
                let mut order = KeyOrder::new();
                for _ in 0..r.map("parameters")? {
                    let key = r.int_key(&mut order)?;
                    let targets = components.iter_mut().enumerate().filter(|(i, _)| selected & (1 << i) != 0);
                    match key {
                        PARAM_VENDOR_ID => *vendor = vendor.or(Some(r.bytes("vendor id")?)),
                        PARAM_CLASS_ID => *class = class.or(Some(r.bytes("class id")?)),
                        PARAM_IMAGE_DIGEST => {
                            let d = Digest::parse(r.bytes("digest")?)?;
                            targets.for_each(|(_, c)| c.digest = Some(hex::encode(d.bytes)));
                        }
                        PARAM_IMAGE_SIZE => {
                            let s = r.u64("size")?;
                            targets.for_each(|(_, c)| c.size = Some(s));
                        }
                        PARAM_URI => {
                            let u = r.str("uri")?;
                            targets.for_each(|(_, c)| c.uri = Some(u.to_owned()));
                        }
                        _ => r.skip()?,
                    }
                }
            }
            _ => r.skip()?,
        }
    }
    Ok(())
}
