//! `gantry-sign trust ...` and loading the keys a verification trusts.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use gantry_keys::trust::{Role, SignedTrustRoot, TrustError, TrustRoot, VerifiedTrustRoot};
use gantry_keys::{FileKeySource, PublicKey, read_public_key_file};
use serde_json::json;

use crate::cli::{TrustArgs, TrustCommand};
use crate::files::{format_time, now_or, parse_time, read_document, write_atomic};
use crate::output::{errln, outln};
use crate::{Invalid, print_refusal};

/// A refused trust root as a refusal the CLI reports (exit 1): a stable
/// `trust-root-…` code, the reason in words with times in RFC 3339, and for
/// an expired root the times in Unix seconds for `--json`.
pub(crate) fn refusal(e: &TrustError) -> Invalid {
    match e {
        TrustError::Expired { version, expires, now } => Invalid::new(
            "trust-root-expired",
            format!(
                "trust root version {version} expired at {} (checked at {}); a newer root is needed",
                format_time(*expires),
                format_time(*now)
            ),
        )
        .with("expires", *expires)
        .with("checked_at", *now),
        TrustError::UnderSigned { .. } => Invalid::new("trust-root-under-signed", e.to_string()),
        TrustError::Malformed(_) => Invalid::new("trust-root-malformed", e.to_string()),
        TrustError::InvalidPolicy(_) => Invalid::new("trust-root-invalid-policy", e.to_string()),
        TrustError::VersionNotIncreasing { .. } => Invalid::new("trust-root-version-not-increasing", e.to_string()),
        _ => Invalid::new("trust-root-invalid", e.to_string()),
    }
}

pub(crate) fn load_public_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    paths.iter().map(|p| read_public_key_file(p).map_err(anyhow::Error::from)).collect()
}

pub(crate) fn load_root(path: &Path) -> Result<SignedTrustRoot> {
    let bytes = read_document(path)?;
    // A malformed root is a refusal (exit 1), like a badly signed one.
    SignedTrustRoot::from_bytes(&bytes).map_err(|e| {
        let refused = refusal(&e);
        Invalid { message: format!("{}: {}", path.display(), refused.message), ..refused }.into()
    })
}

/// Loads and verifies a chain of trust roots, oldest first; returns the
/// verified newest root and its document (for its signatures).
fn verify_files<'p>(
    paths: impl IntoIterator<Item = &'p Path>,
    at: Option<&str>,
) -> Result<(VerifiedTrustRoot, SignedTrustRoot)> {
    let mut chain = paths.into_iter().map(load_root).collect::<Result<Vec<_>>>()?;
    let now = now_or(at)?;
    let verified = SignedTrustRoot::verify_chain(&chain, now).map_err(|e| refusal(&e))?;
    let newest = chain.pop().context("no trust root")?;
    Ok((verified, newest))
}

/// The verified trust root from `--trust` and `--trust-update`.
pub(crate) fn verified_root(trust: &Path, updates: &[PathBuf], at: Option<&str>) -> Result<VerifiedTrustRoot> {
    verify_files(std::iter::once(trust).chain(updates.iter().map(PathBuf::as_path)), at).map(|(v, _)| v)
}

/// The anchors and threshold a `verify` uses.
pub(crate) fn anchors(args: &TrustArgs) -> Result<(Vec<PublicKey>, usize)> {
    if let Some(root) = &args.source.trust {
        let v = verified_root(root, &args.trust_update, args.at.as_deref())?;
        let policy = v.root().policy(Role::Release);
        return Ok((v.root().role_keys(Role::Release), policy.threshold as usize));
    }
    let keys = load_public_keys(&args.source.key)?;
    anyhow::ensure!(
        (1..=keys.len()).contains(&args.threshold),
        "--threshold must be between 1 and the number of --key options ({})",
        keys.len()
    );
    Ok((keys, args.threshold))
}

fn expiry(expires: Option<&str>, expires_in: &str) -> Result<u64> {
    match expires {
        Some(t) => parse_time(t),
        None => {
            let d = humantime::parse_duration(expires_in)
                .with_context(|| format!("--expires-in {expires_in:?}: use e.g. 365d"))?;
            Ok(now_or(None)? + d.as_secs())
        }
    }
}

fn describe(root: &TrustRoot, doc: &SignedTrustRoot) -> serde_json::Value {
    let roles: serde_json::Map<_, _> = Role::ALL
        .iter()
        .map(|r| {
            let p = root.policy(*r);
            let keys: Vec<_> = p.keys.iter().map(|k| k.to_string()).collect();
            (r.name().to_owned(), json!({"threshold": p.threshold, "keys": keys}))
        })
        .collect();
    let keys: Vec<_> =
        root.keys.iter().map(|(id, k)| json!({"key_id": id.to_string(), "type": k.key_type().name()})).collect();
    let sigs: Vec<_> = doc
        .signatures()
        .iter()
        .map(|s| json!({"key_id": s.key_id.map(|k| k.to_string()), "algorithm": s.algorithm.map(|a| a.to_string())}))
        .collect();
    json!({
        "version": root.version,
        "expires": root.expires,
        "expires_rfc3339": format_time(root.expires),
        "keys": keys,
        "roles": roles,
        "signatures": sigs,
    })
}

fn print_root(json: bool, value: &serde_json::Value) -> Result<()> {
    if json {
        return outln!("{value}");
    }
    outln!("trust root version {}, expires {}", value["version"], value["expires_rfc3339"].as_str().unwrap_or("?"))?;
    for role in ["root", "release", "server"] {
        let r = &value["roles"][role];
        outln!("  {role}: {} of", r["threshold"])?;
        for k in r["keys"].as_array().into_iter().flatten() {
            outln!("    {}", k.as_str().unwrap_or("?"))?;
        }
    }
    let sigs = value["signatures"].as_array().map(Vec::len).unwrap_or(0);
    outln!("  signatures: {sigs} (unverified here; use `trust verify`)")?;
    for s in value["signatures"].as_array().into_iter().flatten() {
        outln!(
            "    {} {}",
            s["key_id"].as_str().unwrap_or("(no key id)"),
            s["algorithm"].as_str().unwrap_or("(unsupported)")
        )?;
    }
    Ok(())
}

fn roles_from(
    base: Option<&TrustRoot>,
    sets: [(Role, &[PathBuf], Option<u32>); 3],
) -> Result<Vec<(Role, Vec<PublicKey>, u32)>> {
    sets.into_iter()
        .map(|(role, paths, threshold)| {
            let keys = if paths.is_empty() {
                base.map(|b| b.role_keys(role)).unwrap_or_default()
            } else {
                load_public_keys(paths)?
            };
            let threshold = threshold.or(base.map(|b| b.policy(role).threshold)).unwrap_or(1);
            Ok((role, keys, threshold))
        })
        .collect()
}

pub(crate) fn run(cmd: TrustCommand, json: bool) -> Result<()> {
    match cmd {
        TrustCommand::Create {
            root,
            root_threshold,
            release,
            release_threshold,
            server,
            server_threshold,
            version,
            expires,
            expires_in,
            out,
        } => {
            let roles = roles_from(
                None,
                [
                    (Role::Root, &root, Some(root_threshold)),
                    (Role::Release, &release, Some(release_threshold)),
                    (Role::Server, &server, Some(server_threshold)),
                ],
            )?;
            let content = TrustRoot::new(version, expiry(expires.as_deref(), &expires_in)?, &roles)?;
            let doc = SignedTrustRoot::new(content)?;
            write_atomic(&out, &doc.to_bytes())?;
            let value = describe(doc.unverified_content(), &doc);
            if !json {
                errln!("wrote {} (unsigned: sign it with `gantry-sign trust sign`)", out.display());
            }
            print_root(json, &value)?;
        }
        TrustCommand::Rotate {
            previous,
            root,
            root_threshold,
            release,
            release_threshold,
            server,
            server_threshold,
            expires,
            expires_in,
            out,
        } => {
            let prev = load_root(&previous)?;
            let base = prev.unverified_content();
            let roles = roles_from(
                Some(base),
                [
                    (Role::Root, &root, root_threshold),
                    (Role::Release, &release, release_threshold),
                    (Role::Server, &server, server_threshold),
                ],
            )?;
            let content = TrustRoot::new(base.version + 1, expiry(expires.as_deref(), &expires_in)?, &roles)?;
            let doc = SignedTrustRoot::new(content)?;
            write_atomic(&out, &doc.to_bytes())?;
            if !json {
                errln!(
                    "wrote {} (unsigned: it needs {} signatures from the previous root keys and {} from its own)",
                    out.display(),
                    base.policy(Role::Root).threshold,
                    doc.unverified_content().policy(Role::Root).threshold
                );
            }
            print_root(json, &describe(doc.unverified_content(), &doc))?;
        }
        TrustCommand::Sign { key, input, out } => {
            let mut doc = load_root(&input)?;
            for k in &key {
                let source = FileKeySource::open(k)?;
                doc.sign_with(&source).with_context(|| format!("signing with {}", k.display()))?;
            }
            write_atomic(&out, &doc.to_bytes())?;
            print_root(json, &describe(doc.unverified_content(), &doc))?;
        }
        TrustCommand::Verify { previous, at, file } => {
            let paths = previous.iter().chain(std::iter::once(&file)).map(PathBuf::as_path);
            let (v, doc) = print_refusal(json, verify_files(paths, at.as_deref()))?;
            if json {
                let mut value = describe(v.root(), &doc);
                value["valid"] = json!(true);
                outln!("{value}")?;
            } else {
                outln!("valid: trust root version {}, expires {}", v.root().version, format_time(v.root().expires))?;
            }
        }
        TrustCommand::Show { file } => {
            let doc = load_root(&file)?;
            print_root(json, &describe(doc.unverified_content(), &doc))?;
        }
    }
    Ok(())
}

/// `inspect` on a trust root.
pub(crate) fn show_bytes(bytes: &[u8], json: bool) -> Result<()> {
    let doc = SignedTrustRoot::from_bytes(bytes).map_err(|e| refusal(&e))?;
    print_root(json, &describe(doc.unverified_content(), &doc))
}
