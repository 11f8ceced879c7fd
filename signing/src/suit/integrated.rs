//! Integrated payloads (envelope members keyed by text, such as Gantry's
//! `#config`), checked against what was signed.
//!
//! The signatures cover the manifest, not the envelope's other members. An
//! integrated payload is authenticated only through the image digest and
//! size the manifest declares for the component whose URI names it, so it
//! is handed out only after that check:
//!
//! ```text
//!  envelope["#config"] ─────────────────────────────┐ bytes
//!  manifest: component with uri "#config"           │
//!            (shared sequence + payload-fetch,       ▼
//!             shared sequence + install) ──► SHA-256 and length match
//!            image-digest, image-size           its digest and size?
//!                                                   │ yes
//!                                                   ▼
//!                                           IntegratedPayload
//! ```
//!
//! URIs, digests and sizes are taken as a top-level pass over the shared
//! sequence and then one fetching section leaves them, as the interpreter
//! would before it fetches. Options of try-each are not followed (which one a
//! device takes depends on its answers), so a payload named only there counts
//! as unreferenced and is refused; so is a payload named only by a severed
//! section the envelope does not carry. Like the rest of the verification
//! core, this allocates nothing.

use crate::Error;
use crate::cbor::{KeyOrder, Reader};
use crate::suit::envelope::Digest;
use crate::suit::interp::read_component_selection;
use crate::suit::labels::*;
use crate::suit::manifest::{MAX_COMPONENTS, Section};
use crate::verify::VerifiedManifest;

/// An integrated payload whose SHA-256 digest and size match those signed
/// for its component. Only [`VerifiedManifest::integrated_payload`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntegratedPayload<'a> {
    /// Index of the component whose URI names the payload (the first, if
    /// several do; every one of them was checked).
    pub component: usize,
    /// The payload.
    pub bytes: &'a [u8],
}

impl<'a> VerifiedManifest<'a> {
    /// The integrated payload `name` (its envelope key, which is also the
    /// fragment-only URI naming it, e.g. `#config`), returned only if its
    /// SHA-256 digest and size match the image digest and size signed for
    /// every component whose URI names it.
    ///
    /// `Ok(None)` if neither the envelope carries it nor a component names
    /// it. Refused: a payload no component names
    /// ([`Error::PayloadUnreferenced`]: nothing signed covers it), a
    /// component naming a payload the envelope lacks
    /// ([`Error::PayloadMissing`]), different bytes or length
    /// ([`Error::PayloadMismatch`]), a component without an image digest or
    /// size ([`Error::MissingParameter`]).
    pub fn integrated_payload(&self, name: &str) -> Result<Option<IntegratedPayload<'a>>, Error> {
        let bytes = self.envelope().integrated_payload(name);
        let mut first = None;
        for_each_declared(self, |component, declared| {
            if declared.uri != Some(name) {
                return Ok(());
            }
            let bytes = bytes.ok_or(Error::PayloadMissing { component })?;
            declared.check(component, bytes)?;
            first.get_or_insert(component);
            Ok(())
        })?;
        match (first, bytes) {
            (Some(component), Some(bytes)) => Ok(Some(IntegratedPayload { component, bytes })),
            (None, Some(_)) => Err(Error::PayloadUnreferenced),
            (_, None) => Ok(None),
        }
    }

    /// Checks every integrated payload the envelope carries, as
    /// [`integrated_payload`](Self::integrated_payload) does, and that every
    /// fragment-only URI (`#...`) a component names is carried.
    pub fn check_integrated_payloads(&self) -> Result<(), Error> {
        for name in self.envelope().integrated_payload_names() {
            self.integrated_payload(name)?;
        }
        for_each_declared(self, |component, declared| match declared.uri {
            Some(uri) if uri.starts_with('#') && self.envelope().integrated_payload(uri).is_none() => {
                Err(Error::PayloadMissing { component })
            }
            _ => Ok(()),
        })
    }
}

/// What the manifest declares for one component's image, as the device sees
/// it before fetching: after the shared sequence and the install section
/// (or payload-fetch, if there is no install section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeclaredImage<'a> {
    /// The SHA-256 image digest, if one is declared (other algorithms: `None`).
    pub sha256: Option<[u8; 32]>,
    /// The image size, if declared.
    pub size: Option<u64>,
    /// The URI, if declared.
    pub uri: Option<&'a str>,
}

impl<'a> VerifiedManifest<'a> {
    /// What the manifest declares for `component`'s image: a device that
    /// stores the payloads itself checks them against this.
    pub fn declared_image(&self, component: usize) -> Result<DeclaredImage<'a>, Error> {
        if component >= self.manifest().component_count() {
            return Err(Error::ComponentIndex(component as u64));
        }
        let mut found = DeclaredImage { sha256: None, size: None, uri: None };
        for_each_declared(self, |i, d| {
            if i == component {
                found = DeclaredImage { sha256: d.digest.and_then(|d| d.sha256()), size: d.size, uri: d.uri };
            }
            Ok(())
        })?;
        Ok(found)
    }
}

/// What the manifest declares for one component, as far as payloads go.
#[derive(Clone, Copy, Debug, Default)]
struct Declared<'a> {
    digest: Option<Digest<'a>>,
    size: Option<u64>,
    uri: Option<&'a str>,
}

impl Declared<'_> {
    fn check(&self, component: usize, bytes: &[u8]) -> Result<(), Error> {
        let missing = |parameter| Error::MissingParameter { command: "integrated payload", parameter };
        let digest = self.digest.ok_or(missing("image-digest"))?;
        let size = self.size.ok_or(missing("image-size"))?;
        if digest.matches(bytes)? && size == bytes.len() as u64 {
            Ok(())
        } else {
            Err(Error::PayloadMismatch { component })
        }
    }
}

/// A command sequence with no commands (CBOR `[]`).
const EMPTY_SEQUENCE: &[u8] = &[0x80];

/// Calls `f` with each component's declarations after the shared sequence
/// and each fetching section present (or the shared sequence alone, if the
/// manifest fetches nothing).
fn for_each_declared<'a>(
    m: &VerifiedManifest<'a>,
    mut f: impl FnMut(usize, &Declared<'a>) -> Result<(), Error>,
) -> Result<(), Error> {
    let count = m.manifest().component_count();
    let shared = m.manifest().shared_sequence();
    // A severed section the envelope does not carry cannot be read; what it
    // names stays unknown (and unreferenced).
    let fetching = [Section::PayloadFetch, Section::Install].map(|s| m.section(s).ok().flatten());
    let runs = if fetching.iter().any(Option::is_some) { fetching } else { [Some(EMPTY_SEQUENCE), None] };
    for section in runs.into_iter().flatten() {
        let mut declared = [Declared::default(); MAX_COMPONENTS];
        for seq in shared.into_iter().chain([section]) {
            declare(seq, count, &mut declared)?;
        }
        for (i, d) in declared.iter().enumerate().take(count) {
            f(i, d)?;
        }
    }
    Ok(())
}

/// Applies the top-level override-parameters of `seq` to `declared`.
fn declare<'a>(seq: &'a [u8], count: usize, declared: &mut [Declared<'a>; MAX_COMPONENTS]) -> Result<(), Error> {
    let mut r = Reader::new(seq);
    let n = r.array("command sequence")?;
    if n % 2 != 0 {
        return Err(Error::Invalid("command sequence must have command/argument pairs"));
    }
    let mut selected: u32 = 1;
    for _ in 0..n / 2 {
        match r.i64("command")? {
            DIR_SET_COMPONENT_INDEX => selected = read_component_selection(&mut r, count)?,
            DIR_OVERRIDE_PARAMETERS => {
                let mut order = KeyOrder::new();
                for _ in 0..r.map("parameters map")? {
                    let key = r.int_key(&mut order)?;
                    let targets = declared.iter_mut().take(count).enumerate().filter(|(i, _)| selected & (1 << i) != 0);
                    match key {
                        PARAM_IMAGE_DIGEST => {
                            let d = Digest::parse(r.bytes("image digest bstr")?)?;
                            targets.for_each(|(_, t)| t.digest = Some(d));
                        }
                        PARAM_IMAGE_SIZE => {
                            let s = r.u64("image size")?;
                            targets.for_each(|(_, t)| t.size = Some(s));
                        }
                        PARAM_URI => {
                            let u = r.str("uri")?;
                            targets.for_each(|(_, t)| t.uri = Some(u));
                        }
                        _ => r.skip()?,
                    }
                }
            }
            // Conditions, directives and try-each set no parameter at this level.
            _ => r.skip()?,
        }
    }
    r.finish("command sequence")
}
