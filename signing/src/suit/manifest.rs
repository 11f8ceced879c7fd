//! The SUIT manifest: sequence number, components, and command sequences.
//! Parsed only after its digest was authenticated (see [`crate::verify`]).

use core::fmt;

use crate::Error;
use crate::cbor::{Key, KeyOrder, Reader};
use crate::suit::envelope::{Digest, severable_slot};
use crate::suit::labels::*;

/// Most components one manifest may declare.
pub const MAX_COMPONENTS: usize = 16;
/// Most segments in one component identifier.
const MAX_ID_SEGMENTS: u64 = 8;

/// A severable member as the manifest holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member<'a> {
    /// Not in the manifest.
    Absent,
    /// Present inline: the command sequence (or text map) bytes.
    Inline(&'a [u8]),
    /// Severed: the manifest holds its digest, the envelope may hold the bytes.
    Severed(Digest<'a>),
}

/// The sections a device can be asked to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// suit-payload-fetch (16).
    PayloadFetch,
    /// suit-install (20).
    Install,
    /// suit-validate (7).
    Validate,
    /// suit-load (8).
    Load,
    /// suit-invoke (9).
    Invoke,
}

impl Section {
    /// The draft's name of the section.
    pub const fn name(self) -> &'static str {
        match self {
            Section::PayloadFetch => "payload-fetch",
            Section::Install => "install",
            Section::Validate => "validate",
            Section::Load => "load",
            Section::Invoke => "invoke",
        }
    }
}

/// A parsed manifest.
#[derive(Clone, Copy, Debug)]
pub struct Manifest<'a> {
    pub(crate) sequence: u64,
    pub(crate) components: &'a [u8],
    pub(crate) component_count: usize,
    pub(crate) shared_sequence: Option<&'a [u8]>,
    pub(crate) validate: Option<&'a [u8]>,
    pub(crate) load: Option<&'a [u8]>,
    pub(crate) invoke: Option<&'a [u8]>,
    pub(crate) severable: [Member<'a>; 3],
    pub(crate) reference_uri: Option<&'a str>,
}

impl<'a> Manifest<'a> {
    /// Parses the manifest's content (the bytes inside its bstr).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let n = r.map("manifest map")?;
        let mut order = KeyOrder::new();
        let (mut version, mut sequence, mut common) = (None, None, None);
        let mut m = Manifest {
            sequence: 0,
            components: &[],
            component_count: 0,
            shared_sequence: None,
            validate: None,
            load: None,
            invoke: None,
            severable: [Member::Absent; 3],
            reference_uri: None,
        };
        for _ in 0..n {
            match r.any_key(&mut order)? {
                Key::Int(MANIFEST_VERSION) => version = Some(r.u64("manifest version")?),
                Key::Int(SEQUENCE_NUMBER) => sequence = Some(r.u64("sequence number")?),
                Key::Int(COMMON) => common = Some(r.bytes("common bstr")?),
                Key::Int(REFERENCE_URI) => m.reference_uri = Some(r.str("reference URI")?),
                Key::Int(VALIDATE) => m.validate = Some(r.bytes("validate bstr")?),
                Key::Int(LOAD) => m.load = Some(r.bytes("load bstr")?),
                Key::Int(INVOKE) => m.invoke = Some(r.bytes("invoke bstr")?),
                Key::Int(k) if SEVERABLE.contains(&k) => {
                    m.severable[severable_slot(k)] = match r.datatype()? {
                        minicbor::data::Type::Array => Member::Severed(Digest::read(&mut r)?),
                        _ => Member::Inline(r.bytes("severable member bstr or digest")?),
                    };
                }
                _ => r.skip()?,
            }
        }
        r.finish("manifest")?;
        match version {
            Some(1) => {}
            Some(v) => return Err(Error::UnsupportedManifestVersion(v)),
            None => return Err(Error::Missing("manifest version")),
        }
        m.sequence = sequence.ok_or(Error::Missing("sequence number"))?;
        m.parse_common(common.ok_or(Error::Missing("common"))?)?;
        Ok(m)
    }

    fn parse_common(&mut self, bytes: &'a [u8]) -> Result<(), Error> {
        let mut r = Reader::new(bytes);
        let n = r.map("common map")?;
        let mut order = KeyOrder::new();
        for _ in 0..n {
            match r.int_key(&mut order)? {
                COMPONENTS => {
                    let start = r.position();
                    let count = r.array("components array")?;
                    if count == 0 {
                        return Err(Error::NoComponents);
                    }
                    if count as usize > MAX_COMPONENTS {
                        return Err(Error::LimitExceeded { what: "components", limit: MAX_COMPONENTS });
                    }
                    for _ in 0..count {
                        read_component_id(&mut r)?;
                    }
                    self.components = &bytes[start..r.position()];
                    self.component_count = count as usize;
                }
                SHARED_SEQUENCE => self.shared_sequence = Some(r.bytes("shared sequence bstr")?),
                // Dependencies (trust domains) are not supported: refusing is
                // safer than installing without the dependency's checks.
                1 => return Err(Error::Invalid("dependencies are not supported")),
                _ => r.skip()?,
            }
        }
        r.finish("common")?;
        if self.component_count == 0 {
            return Err(Error::NoComponents);
        }
        Ok(())
    }

    /// The sequence number (anti-rollback counter).
    pub fn sequence_number(&self) -> u64 {
        self.sequence
    }

    /// Number of components.
    pub fn component_count(&self) -> usize {
        self.component_count
    }

    /// The component identifiers, in index order.
    pub fn components(&self) -> impl Iterator<Item = ComponentId<'a>> + 'a {
        let mut r = Reader::new(self.components);
        let n = r.array("components").unwrap_or(0);
        (0..n).map_while(move |_| read_component_id(&mut r).ok())
    }

    /// The component at `index`.
    pub fn component(&self, index: usize) -> Option<ComponentId<'a>> {
        self.components().nth(index)
    }

    /// The shared sequence, run before every section.
    pub fn shared_sequence(&self) -> Option<&'a [u8]> {
        self.shared_sequence
    }

    /// The reference URI, if any.
    pub fn reference_uri(&self) -> Option<&'a str> {
        self.reference_uri
    }

    /// A severable member as the manifest holds it.
    pub fn severable(&self, key: i64) -> Member<'a> {
        if SEVERABLE.contains(&key) { self.severable[severable_slot(key)] } else { Member::Absent }
    }
}

fn read_component_id<'a>(r: &mut Reader<'a>) -> Result<ComponentId<'a>, Error> {
    let start = r.position();
    let segments = r.array("component identifier array")?;
    if segments > MAX_ID_SEGMENTS {
        return Err(Error::LimitExceeded { what: "component identifier segments", limit: MAX_ID_SEGMENTS as usize });
    }
    for _ in 0..segments {
        r.bytes("component identifier segment bstr")?;
    }
    Ok(ComponentId { raw: &r.input()[start..r.position()] })
}

/// A component identifier: an array of byte strings, kept in its encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ComponentId<'a> {
    raw: &'a [u8],
}

impl<'a> ComponentId<'a> {
    /// The identifier's CBOR encoding.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The segments (already validated as byte strings).
    pub fn segments(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::new(self.raw);
        let n = r.array("component id").unwrap_or(0);
        (0..n).map_while(move |_| r.bytes("segment").ok())
    }
}

impl fmt::Display for ComponentId<'_> {
    /// Segments joined by `/`; printable ASCII as text, anything else as hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, seg) in self.segments().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match core::str::from_utf8(seg) {
                Ok(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()) => write!(f, "{s:?}")?,
                _ => {
                    f.write_str("h'")?;
                    for b in seg {
                        write!(f, "{b:02x}")?;
                    }
                    f.write_str("'")?;
                }
            }
        }
        f.write_str("]")
    }
}

impl fmt::Debug for ComponentId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComponentId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `{1: 1, 2: 0, 3: << {2: [[h'00'] × n]} >>}` into `buf`, or with
    /// `n` = `None`, a common without components; returns its length.
    fn manifest(buf: &mut [u8; 96], n: Option<u8>) -> usize {
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        match n {
            Some(n) => {
                put(&[0xa3, 0x01, 0x01, 0x02, 0x00, 0x03, 0x58, 3 + 3 * n, 0xa1, 0x02, 0x80 + n]);
                for _ in 0..n {
                    put(&[0x81, 0x41, 0x00]);
                }
            }
            // common = {4: h'80'}: a shared sequence and nothing else.
            None => put(&[0xa3, 0x01, 0x01, 0x02, 0x00, 0x03, 0x44, 0xa1, 0x04, 0x41, 0x80]),
        }
        len
    }

    #[test]
    fn no_components_is_its_own_refusal_not_a_limit() {
        let mut buf = [0; 96];
        let len = manifest(&mut buf, Some(1));
        assert_eq!(Manifest::parse(&buf[..len]).unwrap().component_count(), 1);
        for n in [Some(0), None] {
            let len = manifest(&mut buf, n);
            let err = Manifest::parse(&buf[..len]).unwrap_err();
            assert!(matches!(err, Error::NoComponents), "{err}");
        }
        let len = manifest(&mut buf, Some(MAX_COMPONENTS as u8 + 1));
        assert!(matches!(Manifest::parse(&buf[..len]), Err(Error::LimitExceeded { what: "components", .. })));
    }

    #[cfg(feature = "std")]
    #[test]
    fn no_components_says_so() {
        let mut buf = [0; 96];
        let len = manifest(&mut buf, Some(0));
        let err = Manifest::parse(&buf[..len]).unwrap_err();
        assert_eq!(err.to_string(), "manifest declares no components; at least one is required");
    }
}
