//! The commands other than `trust`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use gantry_keys::{FileKeySource, KeySource as _, KeyType, SigningKey};
use gantry_signing::build::{
    ContainerRelease, FirmwareRelease, add_signature, class_id_from_model, signer_key_ids, vendor_id_from_domain,
};
use gantry_signing::config::ContainerConfig;
use gantry_signing::inspect::{Inspection, inspect};
use gantry_signing::{Policy, VerifiedManifest, verify};
use serde_json::json;

use crate::cli::{Alg, Cli, Command, Identity, OptionalIdentity};
use crate::files::{read_document, write_atomic};
use crate::output::{errln, outln};
use crate::{Invalid, print_refusal};

pub(crate) fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Keygen { alg, out, cose } => keygen(alg, &out, cose, json),
        Command::Container { module, config, blob, sequence, identity, key, out } => {
            container(&module, &config, &blob, sequence, &identity, &key, &out, json)
        }
        Command::Firmware { image, sequence, identity, key, out } => {
            firmware(&image, sequence, &identity, &key, &out, json)
        }
        Command::Sign { key, input, out } => sign(&key, &input, &out, json),
        Command::Verify { trust, min_sequence, identity, file } => {
            // A refused trust root is a refusal of the envelope too: with
            // --json it gets the same {"valid": false, "code", ...} answer.
            let (anchors, threshold) = print_refusal(json, crate::trust::anchors(&trust))?;
            verify_cmd(&anchors, threshold, min_sequence, &identity, &file, json)
        }
        Command::Trust(cmd) => crate::trust::run(cmd, json),
        Command::Inspect { file } => {
            let bytes = read_document(&file)?;
            // Tag 98 (COSE_Sign) is a trust root; anything else is read as an envelope.
            if bytes.starts_with(&[0xd8, 0x62]) {
                return crate::trust::show_bytes(&bytes, json);
            }
            let report = inspect(&bytes).map_err(|e| Invalid::new(e.code(), format!("{}: {e}", file.display())))?;
            print_inspection(&report, json)
        }
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn keygen(alg: Alg, out: &Path, cose: bool, json: bool) -> Result<()> {
    let key = SigningKey::generate(match alg {
        Alg::Ed25519 => KeyType::Ed25519,
        Alg::P256 => KeyType::P256,
    });
    let public = key.public_key();
    let (key_path, pub_path, cose_path) =
        (with_suffix(out, ".key"), with_suffix(out, ".pub"), with_suffix(out, ".cose"));
    for p in [&key_path, &pub_path].into_iter().chain(cose.then_some(&cose_path)) {
        anyhow::ensure!(!p.exists(), "{} exists; refusing to overwrite a key", p.display());
    }
    key.write_pkcs8_file(&key_path)?;
    write_atomic(&pub_path, public.to_spki_pem().as_bytes())?;
    if cose {
        write_atomic(&cose_path, &public.to_cose_key())?;
    }
    let id = public.key_id().to_string();
    if json {
        outln!(
            "{}",
            json!({"key_id": id, "algorithm": key.algorithm().to_string(), "private_key": key_path, "public_key": pub_path,
                   "cose_key": cose.then_some(&cose_path)})
        )?;
    } else {
        outln!("{id}")?;
        errln!("wrote {} (private, mode 0600) and {}", key_path.display(), pub_path.display());
    }
    Ok(())
}

fn parse_id(hex_id: &str, what: &str) -> Result<[u8; 16]> {
    let bytes = hex::decode(hex_id.replace('-', "")).with_context(|| format!("{what} {hex_id:?} is not hex"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("{what} must be 16 bytes (32 hex digits)"))
}

fn resolve_vendor(domain: Option<&str>, id: Option<&str>) -> Result<Option<[u8; 16]>> {
    Ok(match (domain, id) {
        (Some(d), _) => Some(vendor_id_from_domain(d)),
        (None, Some(h)) => Some(parse_id(h, "--vendor-id")?),
        (None, None) => None,
    })
}

fn resolve_class(vendor: Option<&[u8; 16]>, model: Option<&str>, id: Option<&str>) -> Result<Option<[u8; 16]>> {
    Ok(match (model, id) {
        (Some(m), _) => {
            let vendor =
                vendor.context("--class needs --vendor or --vendor-id (the class id is derived from the vendor id)")?;
            Some(class_id_from_model(vendor, m))
        }
        (None, Some(h)) => Some(parse_id(h, "--class-id")?),
        (None, None) => None,
    })
}

#[allow(clippy::too_many_arguments)]
fn container(
    module: &Path,
    config: &Path,
    blobs: &[String],
    sequence: u64,
    identity: &Identity,
    keys: &[PathBuf],
    out: &Path,
    json: bool,
) -> Result<()> {
    let module_bytes = std::fs::read(module).with_context(|| format!("cannot read module {}", module.display()))?;
    anyhow::ensure!(module_bytes.starts_with(b"\0asm"), "{} is not a Wasm module (no \\0asm header)", module.display());
    let text = std::fs::read_to_string(config).with_context(|| format!("cannot read config {}", config.display()))?;
    let config = ContainerConfig::from_toml(&text).with_context(|| format!("in {}", config.display()))?;
    // The same check the device makes before it compiles: refused here,
    // not on every device.
    gantry_signing::module::check(&module_bytes, &config)
        .with_context(|| format!("{} does not fit its config", module.display()))?;
    let mut blob_data = Vec::new();
    for b in blobs {
        let (name, path) = b.split_once('=').with_context(|| format!("--blob {b:?}: use NAME=PATH"))?;
        anyhow::ensure!(
            gantry_signing::config::is_blob_name(name),
            "--blob {name:?}: use 1-{} of a-z, 0-9, '.', '_' and '-'",
            gantry_signing::config::MAX_BLOB_NAME
        );
        let bytes = if Path::new(path).is_dir() {
            // A directory travels as its canonical archive, written next
            // to the envelope for shipping (the device makes the same bytes
            // from the same directory).
            let mut tar = Vec::new();
            gantry_signing::tree::archive(Path::new(path), &mut tar).with_context(|| format!("blob {name}: {path}"))?;
            let file = PathBuf::from(format!("{}.{name}.tar", out.display()));
            write_atomic(&file, &tar)?;
            if !json {
                errln!("blob {name}: the tree {path} archived as {} ({} bytes)", file.display(), tar.len());
            }
            tar
        } else {
            std::fs::read(path).with_context(|| format!("cannot read blob {path}"))?
        };
        blob_data.push((name.to_owned(), bytes));
    }
    if let Some(missing) = config.blobs().find(|b| !blob_data.iter().any(|(n, _)| n == b)) {
        anyhow::bail!("the config names blob {missing:?}: give it with --blob {missing}=PATH");
    }
    let blob_refs: Vec<(String, &[u8])> = blob_data.iter().map(|(n, b)| (n.clone(), &b[..])).collect();
    let (vendor, class) = resolve_identity(identity)?;
    let envelope = ContainerRelease {
        config: &config,
        module: &module_bytes,
        blobs: &blob_refs,
        sequence,
        vendor_id: vendor,
        class_id: class,
    }
    .build_unsigned()?;
    sign_and_write(envelope, keys, out, "the module and blobs as the URIs", json)
}

fn firmware(image: &Path, sequence: u64, identity: &Identity, keys: &[PathBuf], out: &Path, json: bool) -> Result<()> {
    let bytes = std::fs::read(image).with_context(|| format!("cannot read firmware image {}", image.display()))?;
    let (vendor_id, class_id) = resolve_identity(identity)?;
    let envelope = FirmwareRelease { image: &bytes, sequence, vendor_id, class_id }.build_unsigned()?;
    sign_and_write(envelope, keys, out, "the image as the URI", json)
}

/// Signs a new envelope with each key, writes it and prints its
/// inspection; `payloads` says what to ship beside it, and where.
fn sign_and_write(mut envelope: Vec<u8>, keys: &[PathBuf], out: &Path, payloads: &str, json: bool) -> Result<()> {
    for k in keys {
        let source = FileKeySource::open(k)?;
        envelope = add_signature(&envelope, &source).with_context(|| format!("signing with {}", k.display()))?;
    }
    write_atomic(out, &envelope)?;
    let report = inspect(&envelope)?;
    if !json {
        errln!(
            "wrote {} ({} bytes, {}); ship {payloads} below",
            out.display(),
            envelope.len(),
            if keys.is_empty() { "unsigned".to_owned() } else { format!("{} signature(s)", keys.len()) }
        );
    }
    print_inspection(&report, json)
}

/// The vendor and class ids `identity` names (both required).
fn resolve_identity(identity: &Identity) -> Result<([u8; 16], [u8; 16])> {
    let vendor = resolve_vendor(identity.vendor.as_deref(), identity.vendor_id.as_deref())?
        .context("--vendor or --vendor-id is required")?;
    let class = resolve_class(Some(&vendor), identity.class.as_deref(), identity.class_id.as_deref())?
        .context("--class or --class-id is required")?;
    Ok((vendor, class))
}

fn sign(keys: &[PathBuf], input: &Path, out: &Path, json: bool) -> Result<()> {
    let mut envelope = read_document(input)?;
    for k in keys {
        let source = FileKeySource::open(k)?;
        envelope = add_signature(&envelope, &source)
            .with_context(|| format!("signing {} with {}", input.display(), k.display()))?;
        if !json {
            errln!("signed with {} ({})", source.key_id(), source.algorithm());
        }
    }
    write_atomic(out, &envelope)?;
    let signers: Vec<_> = signer_key_ids(&envelope)?.into_iter().map(|k| k.map(|k| k.to_string())).collect();
    if json {
        outln!("{}", json!({"out": out, "signers": signers}))?;
    } else {
        outln!("{}: {} signature(s)", out.display(), signers.len())?;
    }
    Ok(())
}

fn verify_cmd(
    anchors: &[gantry_keys::PublicKey],
    threshold: usize,
    min_sequence: u64,
    identity: &OptionalIdentity,
    file: &Path,
    json: bool,
) -> Result<()> {
    let bytes = read_document(file)?;
    let vendor = resolve_vendor(identity.vendor.as_deref(), identity.vendor_id.as_deref())?;
    let class = resolve_class(vendor.as_ref(), identity.class.as_deref(), identity.class_id.as_deref())?;
    let policy = Policy::new(anchors, threshold)
        .min_sequence(min_sequence)
        .identity(vendor.as_ref().map(|v| &v[..]), class.as_ref().map(|c| &c[..]));
    let (verified, config) = print_refusal(json, check_envelope(&bytes, &policy))?;
    let signers: Vec<String> = verified.signer_indices().map(|i| anchors[i].key_id().to_string()).collect();
    if json {
        outln!(
            "{}",
            json!({"valid": true, "sequence_number": verified.sequence_number(), "manifest_digest": hex::encode(verified.digest()),
                   "signers": signers, "container": config.as_ref().map(|c| &c.name)})
        )?;
    } else {
        outln!("valid: sequence {}, manifest {}", verified.sequence_number(), hex::encode(verified.digest()))?;
        for s in &signers {
            outln!("  signed by {s}")?;
        }
    }
    Ok(())
}

/// Verifies the envelope, then what SUIT verification alone does not cover
/// for a Gantry container: every integrated payload matches the digest and
/// size signed for its component, and the `#config` parses and belongs to
/// this container. Any refusal is an [`Invalid`]: the library's code for
/// the envelope, `payload-mismatch` for whatever refuses its payloads.
fn check_envelope<'a>(bytes: &'a [u8], policy: &Policy<'_>) -> Result<(VerifiedManifest<'a>, Option<ContainerConfig>)> {
    let verified = verify(bytes, policy).map_err(|e| Invalid::new(e.code(), e.to_string()))?;
    // One code for the payload step, whatever the cause (digest, size, a
    // config that does not parse or names another container), as documented.
    let payloads = |e: gantry_signing::Error| Invalid::new("payload-mismatch", e.to_string());
    verified.check_integrated_payloads().map_err(payloads)?;
    let config = ContainerConfig::from_verified(&verified).map_err(payloads)?;
    Ok((verified, config))
}

fn print_inspection(r: &Inspection, json: bool) -> Result<()> {
    if json {
        return outln!("{}", serde_json::to_string(r)?);
    }
    if let Some(c) = &r.container {
        outln!("container {} {}", c.name, c.version)?;
    }
    outln!("sequence    {}", r.sequence_number)?;
    outln!(
        "manifest    {}{}",
        r.manifest_digest,
        if r.digest_matches { "" } else { "  (DOES NOT MATCH the signed digest)" }
    )?;
    if let Some(v) = &r.vendor_id {
        outln!("vendor id   {v}")?;
    }
    if let Some(c) = &r.class_id {
        outln!("class id    {c}")?;
    }
    outln!("components")?;
    for c in &r.components {
        outln!("  {} {}", c.index, c.id)?;
        if let Some(d) = &c.digest {
            outln!("      sha256 {d}")?;
        }
        if let Some(s) = c.size {
            outln!("      size   {s}")?;
        }
        if let Some(u) = &c.uri {
            outln!("      uri    {u}")?;
        }
    }
    if r.signatures.is_empty() {
        outln!("signatures  none (unsigned)")?;
    } else {
        outln!("signatures  (not verified by inspect)")?;
        for s in &r.signatures {
            outln!("  {} {}", s.key_id.as_deref().unwrap_or("(no key id)"), s.algorithm)?;
        }
    }
    for p in &r.problems {
        outln!("PROBLEM: {p}")?;
    }
    Ok(())
}
