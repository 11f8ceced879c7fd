//! A strict CBOR reader over borrowed bytes: definite lengths only, bounded
//! counts and depth, map keys checked for duplicates and deterministic order
//! (RFC 8949 §4.2.1). It allocates nothing, so the bootloader can use it on
//! untrusted flash contents.

use minicbor::Decoder;
use minicbor::data::Type;

use crate::Error;

/// Deepest nesting accepted anywhere (SUIT needs about 8).
pub(crate) const MAX_DEPTH: u8 = 16;
/// Most elements in one array or map.
pub(crate) const MAX_ITEMS: u64 = 256;

pub(crate) struct Reader<'b> {
    d: Decoder<'b>,
}

/// The raw encoding of the previous map key, to check ordering.
pub(crate) struct KeyOrder<'b> {
    prev: Option<&'b [u8]>,
}

impl<'b> KeyOrder<'b> {
    pub(crate) fn new() -> Self {
        KeyOrder { prev: None }
    }
}

impl<'b> Reader<'b> {
    pub(crate) fn new(bytes: &'b [u8]) -> Self {
        Reader { d: Decoder::new(bytes) }
    }

    pub(crate) fn position(&self) -> usize {
        self.d.position()
    }

    pub(crate) fn input(&self) -> &'b [u8] {
        self.d.input()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.d.position() >= self.d.input().len()
    }

    pub(crate) fn finish(&self, what: &'static str) -> Result<(), Error> {
        if self.at_end() { Ok(()) } else { Err(Error::TrailingBytes(what)) }
    }

    pub(crate) fn datatype(&self) -> Result<Type, Error> {
        self.d.datatype().map_err(|_| Error::cbor("a value", self.position()))
    }

    fn len(&self, n: Option<u64>, at: usize) -> Result<u64, Error> {
        let n = n.ok_or(Error::NonCanonical { what: "indefinite length", offset: at })?;
        if n > MAX_ITEMS {
            return Err(Error::LimitExceeded { what: "items in an array or map", limit: MAX_ITEMS as usize });
        }
        Ok(n)
    }

    pub(crate) fn array(&mut self, expected: &'static str) -> Result<u64, Error> {
        let at = self.position();
        let n = self.d.array().map_err(|_| Error::cbor(expected, at))?;
        self.len(n, at)
    }

    pub(crate) fn map(&mut self, expected: &'static str) -> Result<u64, Error> {
        let at = self.position();
        let n = self.d.map().map_err(|_| Error::cbor(expected, at))?;
        self.len(n, at)
    }

    pub(crate) fn u64(&mut self, expected: &'static str) -> Result<u64, Error> {
        let at = self.position();
        self.d.u64().map_err(|_| Error::cbor(expected, at))
    }

    pub(crate) fn i64(&mut self, expected: &'static str) -> Result<i64, Error> {
        let at = self.position();
        self.d.i64().map_err(|_| Error::cbor(expected, at))
    }

    pub(crate) fn bytes(&mut self, expected: &'static str) -> Result<&'b [u8], Error> {
        let at = self.position();
        if self.datatype()? == Type::BytesIndef {
            return Err(Error::NonCanonical { what: "indefinite length", offset: at });
        }
        self.d.bytes().map_err(|_| Error::cbor(expected, at))
    }

    pub(crate) fn str(&mut self, expected: &'static str) -> Result<&'b str, Error> {
        let at = self.position();
        if self.datatype()? == Type::StringIndef {
            return Err(Error::NonCanonical { what: "indefinite length", offset: at });
        }
        self.d.str().map_err(|_| Error::cbor(expected, at))
    }

    /// A bstr, returned with its header: SUIT digests cover the bstr-wrapped form.
    pub(crate) fn bytes_with_header(&mut self, expected: &'static str) -> Result<(&'b [u8], &'b [u8]), Error> {
        let start = self.position();
        let content = self.bytes(expected)?;
        Ok((&self.d.input()[start..self.position()], content))
    }

    pub(crate) fn tag(&mut self) -> Result<u64, Error> {
        let at = self.position();
        self.d.tag().map(|t| t.as_u64()).map_err(|_| Error::cbor("a tag", at))
    }

    /// An optional tag: returns it if the next item is tagged.
    pub(crate) fn maybe_tag(&mut self) -> Result<Option<u64>, Error> {
        if self.datatype()? == Type::Tag { self.tag().map(Some) } else { Ok(None) }
    }

    pub(crate) fn null(&mut self) -> Result<bool, Error> {
        if self.datatype()? == Type::Null {
            self.d.skip().map_err(|_| Error::cbor("null", self.position()))?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    pub(crate) fn bool(&mut self, expected: &'static str) -> Result<bool, Error> {
        let at = self.position();
        self.d.bool().map_err(|_| Error::cbor(expected, at))
    }

    /// Reads an integer map key and checks it follows `order` strictly and is
    /// minimally encoded.
    pub(crate) fn int_key(&mut self, order: &mut KeyOrder<'b>) -> Result<i64, Error> {
        let start = self.position();
        let key = self.i64("an integer map key")?;
        let raw = &self.d.input()[start..self.position()];
        if raw.len() != minimal_int_len(key) {
            return Err(Error::NonCanonical { what: "non-minimal integer key", offset: start });
        }
        order.check(raw, start)?;
        Ok(key)
    }

    /// Reads any map key (integer or text), checking order and returning its
    /// raw encoding and, if it is an integer, its value.
    pub(crate) fn any_key(&mut self, order: &mut KeyOrder<'b>) -> Result<Key<'b>, Error> {
        match self.datatype()? {
            Type::String => {
                let start = self.position();
                let s = self.str("a text key")?;
                let raw = &self.d.input()[start..self.position()];
                if raw.len() != minimal_int_len(s.len() as i64) + s.len() {
                    return Err(Error::NonCanonical { what: "non-minimal length", offset: start });
                }
                order.check(raw, start)?;
                Ok(Key::Text(s))
            }
            _ => self.int_key(order).map(Key::Int),
        }
    }

    /// Skips one value of any type, refusing indefinite lengths and deep nesting.
    pub(crate) fn skip(&mut self) -> Result<(), Error> {
        self.skip_depth(MAX_DEPTH)
    }

    fn skip_depth(&mut self, depth: u8) -> Result<(), Error> {
        if depth == 0 {
            return Err(Error::TooDeep);
        }
        let at = self.position();
        match self.datatype()? {
            Type::Array => {
                for _ in 0..self.array("an array")? {
                    self.skip_depth(depth - 1)?;
                }
            }
            Type::Map => {
                for _ in 0..self.map("a map")? * 2 {
                    self.skip_depth(depth - 1)?;
                }
            }
            Type::Tag => {
                self.tag()?;
                self.skip_depth(depth - 1)?;
            }
            Type::ArrayIndef | Type::MapIndef | Type::BytesIndef | Type::StringIndef => {
                return Err(Error::NonCanonical { what: "indefinite length", offset: at });
            }
            Type::Break | Type::Unknown(_) => return Err(Error::cbor("a value", at)),
            _ => self.d.skip().map_err(|_| Error::cbor("a value", at))?,
        }
        Ok(())
    }
}

impl<'b> Reader<'b> {
    /// The raw encoding of the next value, skipped.
    #[cfg(feature = "std")]
    pub(crate) fn raw_value(&mut self) -> Result<&'b [u8], Error> {
        let start = self.position();
        self.skip()?;
        Ok(&self.d.input()[start..self.position()])
    }
}

/// A map key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key<'b> {
    Int(i64),
    Text(&'b str),
}

impl<'b> KeyOrder<'b> {
    fn check(&mut self, raw: &'b [u8], offset: usize) -> Result<(), Error> {
        if let Some(prev) = self.prev {
            match prev.cmp(raw) {
                core::cmp::Ordering::Less => {}
                core::cmp::Ordering::Equal => return Err(Error::DuplicateKey { offset }),
                core::cmp::Ordering::Greater => {
                    return Err(Error::NonCanonical { what: "map keys out of deterministic order", offset });
                }
            }
        }
        self.prev = Some(raw);
        Ok(())
    }
}

/// Length of the shortest CBOR encoding of an integer (or a length header).
pub(crate) fn minimal_int_len(v: i64) -> usize {
    let u = if v < 0 { !(v as u64) } else { v as u64 };
    match u {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_keys_and_shapes() {
        // {1: 0, 1: 0}
        let mut r = Reader::new(&[0xa2, 0x01, 0x00, 0x01, 0x00]);
        let mut o = KeyOrder::new();
        r.map("m").unwrap();
        r.int_key(&mut o).unwrap();
        r.skip().unwrap();
        assert!(matches!(r.int_key(&mut o), Err(Error::DuplicateKey { offset: 3 })));
        // {2: 0, 1: 0}
        let mut r = Reader::new(&[0xa2, 0x02, 0x00, 0x01, 0x00]);
        let mut o = KeyOrder::new();
        r.map("m").unwrap();
        r.int_key(&mut o).unwrap();
        r.skip().unwrap();
        assert!(matches!(r.int_key(&mut o), Err(Error::NonCanonical { .. })));
        // key 1 encoded in two bytes
        let mut r = Reader::new(&[0xa1, 0x18, 0x01, 0x00]);
        r.map("m").unwrap();
        assert!(matches!(r.int_key(&mut KeyOrder::new()), Err(Error::NonCanonical { .. })));
        // -1 sorts after 1 and after 23
        let mut r = Reader::new(&[0xa2, 0x17, 0x00, 0x20, 0x00]);
        let mut o = KeyOrder::new();
        r.map("m").unwrap();
        assert_eq!(r.int_key(&mut o).unwrap(), 23);
        r.skip().unwrap();
        assert_eq!(r.int_key(&mut o).unwrap(), -1);
    }

    #[test]
    fn skip_is_bounded() {
        let deep = [0x81u8; 64];
        assert!(matches!(Reader::new(&deep).skip(), Err(Error::TooDeep)));
        // An array claiming 2^32 elements.
        assert!(Reader::new(&[0x9a, 0xff, 0xff, 0xff, 0xff, 0x00]).skip().is_err());
        // A bstr claiming 4 GiB.
        assert!(matches!(Reader::new(&[0x5a, 0xff, 0xff, 0xff, 0xff, 0x00]).skip(), Err(Error::Cbor { .. })));
        assert!(matches!(Reader::new(&[0x9f, 0xff]).skip(), Err(Error::NonCanonical { .. })));
        assert_eq!(minimal_int_len(-25), 2);
        assert_eq!(minimal_int_len(-24), 1);
    }
}
