//! The slot table: which container lives in which slot pair, which slot is
//! active, what each slot holds, and where each update stands.
//!
//! On flash the table is one **record per slot pair**, and each pair has two
//! record keys that take turns: a step of the update flow changes one
//! container, so it rewrites that container's record alone, atomically, into
//! the key that does not hold the newest record. A power cut leaves the
//! record before the step or after it, and a record that does not decode
//! (written by older firmware, or damaged) never stops the device: the other
//! key still holds the container's previous state, which is used and the
//! fault reported.
//!
//! ```cddl
//! record     = [2, generation: uint, container / null]     ; null: the pair is free
//! container  = [name: tstr .size (1..63), pair: uint, active: 0 / 1, phase,
//!               slot-a: installed / null, slot-b: installed / null,
//!               counter: uint, enabled: bool]
//! phase      = [0] / [1, restarts: uint] / [2, reason: tstr .size (0..256)]
//! installed  = [manifest-digest: bstr .size 32, sequence: uint, version: tstr .size (1..64)]
//! ; before records: the whole table in one value, read once to migrate
//! legacy     = [1, [* container]]
//! ```
//!
//! Every string is bounded when it is written, by the constant its reader
//! checks ([`MAX_NAME`], [`MAX_VERSION`], [`MAX_REASON`]): a reason is a
//! [`RevertReason`], which truncates, and a name or version that the signed
//! config allowed is within bounds by construction. The legacy table is read
//! leniently (over-long text is truncated), since earlier firmware wrote
//! reasons of any length.

use gantry_boot::Slot;
use gantry_keys::cbor_vec::VecWriter;
use minicbor::{Decoder, Encoder};

pub use gantry_signing::config::{MAX_NAME, MAX_VERSION};

const LEGACY_VERSION: u8 = 1;
const RECORD_VERSION: u8 = 2;
/// Longest revert reason stored, in bytes.
pub const MAX_REASON: usize = 256;
/// Most containers a device holds: two record keys each must fit the
/// device map's one-byte keys.
pub const MAX_CONTAINERS: u8 = 96;
/// Largest encoded record (a container with every string at its bound and
/// every number at its widest); `table::tests` proves the bound.
pub const MAX_RECORD: usize = 600;

/// Why a container update failed, bounded to [`MAX_REASON`] bytes (cut on
/// a character boundary, ending in `…` when cut).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevertReason(String);

impl RevertReason {
    /// `text`, cut to fit.
    pub fn new(text: &str) -> RevertReason {
        if text.len() <= MAX_REASON {
            return RevertReason(text.to_owned());
        }
        const ELLIPSIS: &str = "…";
        let mut end = MAX_REASON - ELLIPSIS.len();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        RevertReason(format!("{}{ELLIPSIS}", &text[..end]))
    }

    /// A reason of any length, as earlier firmware stored them (tests of
    /// the migration only).
    #[cfg(test)]
    pub(crate) fn unbounded(text: String) -> RevertReason {
        RevertReason(text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RevertReason {
    fn from(text: &str) -> RevertReason {
        RevertReason::new(text)
    }
}

impl From<String> for RevertReason {
    fn from(text: String) -> RevertReason {
        RevertReason::new(&text)
    }
}

impl core::fmt::Display for RevertReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a slot holds, as verified when it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// SHA-256 of the bstr-wrapped manifest.
    pub manifest_digest: [u8; 32],
    /// The manifest's sequence number.
    pub sequence: u64,
    /// The config's version string (at most [`MAX_VERSION`] bytes, as the
    /// signed config allows).
    pub version: String,
}

/// Where a container's latest update stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The active slot is confirmed.
    Confirmed,
    /// The active slot was just switched to and must prove itself;
    /// `restarts` counts runtime restarts during the probation.
    Probation {
        /// Runtime restarts during this probation.
        restarts: u8,
    },
    /// The update failed and the active slot is the previous version again.
    Reverted {
        /// Why.
        reason: RevertReason,
    },
}

impl Phase {
    /// Its stable name (`confirmed`, `probation`, `reverted`).
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Confirmed => "confirmed",
            Phase::Probation { .. } => "probation",
            Phase::Reverted { .. } => "reverted",
        }
    }
}

/// One container's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Container name (the first segment of its component ids), 1 to
    /// [`MAX_NAME`] bytes.
    pub name: String,
    /// Its slot pair.
    pub pair: u8,
    /// The slot that runs.
    pub active: Slot,
    /// Where the latest update stands.
    pub phase: Phase,
    /// What slots A and B hold (`None`: nothing usable).
    pub slots: [Option<Installed>; 2],
    /// Anti-rollback: the highest confirmed sequence number.
    pub counter: u64,
    /// Whether the operator wants it running.
    pub enabled: bool,
}

impl Container {
    /// What the active slot holds.
    pub fn running(&self) -> Option<&Installed> {
        self.slots[index(self.active)].as_ref()
    }

    /// What the other slot holds.
    pub fn standby(&self) -> Option<&Installed> {
        self.slots[index(other(self.active))].as_ref()
    }
}

/// The other slot of a pair.
pub fn other(slot: Slot) -> Slot {
    match slot {
        Slot::A => Slot::B,
        Slot::B => Slot::A,
    }
}

/// Index of a slot in [`Container::slots`].
pub fn index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// The table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotTable {
    /// One entry per installed container.
    pub containers: Vec<Container>,
}

/// A record that does not decode, or a container that cannot be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed slot table: {0}")]
pub struct TableError(pub &'static str);

impl SlotTable {
    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The entry for `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|c| c.name == name)
    }

    /// The entry in slot pair `pair`.
    pub fn in_pair(&self, pair: u8) -> Option<&Container> {
        self.containers.iter().find(|c| c.pair == pair)
    }

    /// The lowest slot pair no container uses, below `max`.
    pub fn free_pair(&self, max: u8) -> Option<u8> {
        (0..max).find(|p| self.containers.iter().all(|c| c.pair != *p))
    }

    /// Decodes a table written whole by earlier firmware (`[1, [*
    /// container]]`), leniently: over-long text is truncated rather than
    /// refused, since that firmware bounded nothing when writing.
    pub fn decode_legacy(bytes: &[u8]) -> Result<SlotTable, TableError> {
        let mut d = Decoder::new(bytes);
        let bad = |what| move |_| TableError(what);
        if d.array().map_err(bad("table"))? != Some(2) || d.u8().map_err(bad("version"))? != LEGACY_VERSION {
            return Err(TableError("unknown table version"));
        }
        let n = d.array().map_err(bad("containers"))?.ok_or(TableError("indefinite array"))?;
        if n > u8::MAX as u64 {
            return Err(TableError("too many containers"));
        }
        let mut containers: Vec<Container> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let c = decode_container(&mut d, Text::Lenient)?;
            if containers.iter().any(|o| o.name == c.name || o.pair == c.pair) {
                return Err(TableError("a name or slot pair is used twice"));
            }
            containers.push(c);
        }
        if d.position() != bytes.len() {
            return Err(TableError("trailing bytes"));
        }
        Ok(SlotTable { containers })
    }
}

/// One slot pair's record: its generation (which of the pair's two keys is
/// newer) and its container, if the pair is in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Counts up with every write of the pair.
    pub generation: u64,
    /// The container in the pair; `None` once it was removed.
    pub container: Option<Container>,
}

impl Record {
    /// Canonical CBOR, at most [`MAX_RECORD`] bytes. Refuses a container
    /// whose name or version is out of bounds rather than storing something
    /// its reader would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, TableError> {
        if let Some(c) = &self.container {
            if c.name.is_empty() || c.name.len() > MAX_NAME {
                return Err(TableError("name"));
            }
            if c.slots.iter().flatten().any(|i| i.version.is_empty() || i.version.len() > MAX_VERSION) {
                return Err(TableError("version"));
            }
        }
        let mut e = Encoder::new(VecWriter::default());
        // Writing into a Vec cannot fail.
        let _ = (|| -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
            e.array(3)?.u8(RECORD_VERSION)?.u64(self.generation)?;
            match &self.container {
                None => e.null().map(|_| ()),
                Some(c) => encode_container(&mut e, c),
            }
        })();
        Ok(e.into_writer().0)
    }

    /// Decodes a record; anything unexpected is an error.
    pub fn decode(bytes: &[u8]) -> Result<Record, TableError> {
        let mut d = Decoder::new(bytes);
        let bad = |what| move |_| TableError(what);
        if d.array().map_err(bad("record"))? != Some(3) || d.u8().map_err(bad("version"))? != RECORD_VERSION {
            return Err(TableError("unknown record version"));
        }
        let generation = d.u64().map_err(bad("generation"))?;
        let container = if d.datatype().map_err(bad("container"))? == minicbor::data::Type::Null {
            d.null().map_err(bad("container"))?;
            None
        } else {
            Some(decode_container(&mut d, Text::Strict)?)
        };
        if d.position() != bytes.len() {
            return Err(TableError("trailing bytes"));
        }
        Ok(Record { generation, container })
    }
}

type Cbor = Encoder<VecWriter>;

/// One `container` (the record's and the legacy table's alike).
fn encode_container(e: &mut Cbor, c: &Container) -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
    e.array(8)?.str(&c.name)?.u8(c.pair)?.u8(index(c.active) as u8)?;
    match &c.phase {
        Phase::Confirmed => e.array(1)?.u8(0)?,
        Phase::Probation { restarts } => e.array(2)?.u8(1)?.u8(*restarts)?,
        Phase::Reverted { reason } => e.array(2)?.u8(2)?.str(reason.as_str())?,
    };
    for slot in &c.slots {
        match slot {
            None => e.null()?,
            Some(i) => e.array(3)?.bytes(&i.manifest_digest)?.u64(i.sequence)?.str(&i.version)?,
        };
    }
    e.u64(c.counter)?.bool(c.enabled)?;
    Ok(())
}

/// How text longer than its bound is read.
#[derive(Clone, Copy)]
enum Text {
    /// Refused.
    Strict,
    /// Truncated (the legacy table only).
    Lenient,
}

fn text(d: &mut Decoder<'_>, max: usize, mode: Text, what: &'static str) -> Result<String, TableError> {
    let s = d.str().map_err(|_| TableError(what))?;
    match mode {
        _ if s.len() <= max => Ok(s.to_owned()),
        Text::Strict => Err(TableError(what)),
        Text::Lenient => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Ok(s[..end].to_owned())
        }
    }
}

fn decode_container(d: &mut Decoder<'_>, mode: Text) -> Result<Container, TableError> {
    let bad = |what| move |_| TableError(what);
    if d.array().map_err(bad("container"))? != Some(8) {
        return Err(TableError("container"));
    }
    // A name is an identity: never truncated, even leniently.
    let name = text(d, MAX_NAME, Text::Strict, "name")?;
    if name.is_empty() {
        return Err(TableError("name"));
    }
    let pair = d.u8().map_err(bad("pair"))?;
    let active = match d.u8().map_err(bad("active"))? {
        0 => Slot::A,
        1 => Slot::B,
        _ => return Err(TableError("active")),
    };
    let len = d.array().map_err(bad("phase"))?;
    let phase = match (len, d.u8().map_err(bad("phase"))?) {
        (Some(1), 0) => Phase::Confirmed,
        (Some(2), 1) => Phase::Probation { restarts: d.u8().map_err(bad("restarts"))? },
        (Some(2), 2) => {
            let reason = text(d, MAX_REASON, mode, "reason")?;
            Phase::Reverted { reason: RevertReason::new(&reason) }
        }
        _ => return Err(TableError("phase")),
    };
    let mut slots = [None, None];
    for slot in &mut slots {
        if d.datatype().map_err(bad("slot"))? == minicbor::data::Type::Null {
            d.null().map_err(bad("slot"))?;
            continue;
        }
        if d.array().map_err(bad("slot"))? != Some(3) {
            return Err(TableError("slot"));
        }
        let digest = d.bytes().map_err(bad("manifest digest"))?;
        let manifest_digest = digest.try_into().map_err(|_| TableError("manifest digest"))?;
        let sequence = d.u64().map_err(bad("sequence"))?;
        let version = text(d, MAX_VERSION, mode, "version")?;
        *slot = Some(Installed { manifest_digest, sequence, version });
    }
    let counter = d.u64().map_err(bad("counter"))?;
    let enabled = d.bool().map_err(bad("enabled"))?;
    Ok(Container { name, pair, active, phase, slots, counter, enabled })
}

/// Encodes a whole table as earlier firmware did (tests and fuzz seeds of
/// the migration path only).
#[doc(hidden)]
pub fn encode_legacy(table: &SlotTable) -> Vec<u8> {
    let mut e = Encoder::new(VecWriter::default());
    let _ = (|| -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
        e.array(2)?.u8(LEGACY_VERSION)?.array(table.containers.len() as u64)?;
        table.containers.iter().try_for_each(|c| encode_container(&mut e, c))
    })();
    e.into_writer().0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(seq: u64) -> Installed {
        Installed { manifest_digest: [seq as u8; 32], sequence: seq, version: format!("1.{seq}") }
    }

    fn sample() -> SlotTable {
        SlotTable {
            containers: vec![
                Container {
                    name: "sensor".into(),
                    pair: 0,
                    active: Slot::B,
                    phase: Phase::Probation { restarts: 1 },
                    slots: [Some(installed(1)), Some(installed(2))],
                    counter: 1,
                    enabled: true,
                },
                Container {
                    name: "ml".into(),
                    pair: 3,
                    active: Slot::A,
                    phase: Phase::Reverted { reason: "health check failed".into() },
                    slots: [Some(installed(7)), None],
                    counter: 7,
                    enabled: false,
                },
            ],
        }
    }

    fn widest() -> Container {
        Container {
            name: "n".repeat(MAX_NAME),
            pair: u8::MAX,
            active: Slot::B,
            phase: Phase::Reverted { reason: RevertReason::new(&"é".repeat(10_000)) },
            slots: [
                Some(Installed { manifest_digest: [0xFF; 32], sequence: u64::MAX, version: "v".repeat(MAX_VERSION) }),
                Some(Installed { manifest_digest: [0xFF; 32], sequence: u64::MAX, version: "é".repeat(32) }),
            ],
            counter: u64::MAX,
            enabled: true,
        }
    }

    #[test]
    fn records_round_trip_within_their_bound() {
        for c in sample().containers.into_iter().chain([widest()]) {
            let r = Record { generation: u64::MAX, container: Some(c) };
            let bytes = r.encode().unwrap();
            assert!(bytes.len() <= MAX_RECORD, "{} bytes", bytes.len());
            assert_eq!(Record::decode(&bytes), Ok(r));
        }
        let free = Record { generation: 3, container: None };
        assert_eq!(Record::decode(&free.encode().unwrap()), Ok(free));
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let r = RevertReason::new(&"é".repeat(1000));
        assert!(r.as_str().len() <= MAX_REASON && r.as_str().ends_with('…'), "{}", r.as_str().len());
        assert_eq!(RevertReason::new("short").as_str(), "short");
        let exact = "x".repeat(MAX_REASON);
        assert_eq!(RevertReason::new(&exact).as_str(), exact);
    }

    #[test]
    fn what_the_reader_would_refuse_is_never_written() {
        let mut c = widest();
        c.name = "n".repeat(MAX_NAME + 1);
        assert_eq!(Record { generation: 1, container: Some(c) }.encode(), Err(TableError("name")));
        let mut c = widest();
        c.slots[0].as_mut().unwrap().version = "v".repeat(MAX_VERSION + 1);
        assert_eq!(Record { generation: 1, container: Some(c) }.encode(), Err(TableError("version")));
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let bytes = Record { generation: 9, container: Some(widest()) }.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Record::decode(&trailing).is_err());
    }

    /// Earlier firmware stored a revert reason of any length whole and then
    /// refused to read it back: every command failed with "malformed slot
    /// table" from then on. The migration reads such a table.
    #[test]
    fn a_legacy_table_with_an_unbounded_reason_still_reads() {
        let mut t = sample();
        let long = format!("entry point {} not exported; {}", "x".repeat(90), "trap ".repeat(400));
        t.containers[1].phase = Phase::Reverted { reason: RevertReason::unbounded(long) };
        t.containers[0].slots[0].as_mut().unwrap().version = "v".repeat(300);
        let read = SlotTable::decode_legacy(&encode_legacy(&t)).unwrap();
        let Phase::Reverted { reason } = &read.containers[1].phase else { panic!() };
        assert!(reason.as_str().len() <= MAX_REASON && reason.as_str().starts_with("entry point"));
        assert_eq!(read.containers[0].slots[0].as_ref().unwrap().version.len(), MAX_VERSION);
        assert_eq!(read.containers[1].slots, t.containers[1].slots);

        let bytes = encode_legacy(&sample());
        assert_eq!(SlotTable::decode_legacy(&bytes), Ok(sample()));
        for cut in 0..bytes.len() {
            assert!(SlotTable::decode_legacy(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut twice = sample();
        twice.containers[1].name = "sensor".into();
        assert_eq!(
            SlotTable::decode_legacy(&encode_legacy(&twice)),
            Err(TableError("a name or slot pair is used twice"))
        );
    }

    #[test]
    fn table_lookups() {
        let t = sample();
        assert_eq!(t.free_pair(8), Some(1));
        assert_eq!(t.in_pair(3).map(|c| c.name.as_str()), Some("ml"));
        assert_eq!(t.get("ml").and_then(Container::running).map(|i| i.sequence), Some(7));
        assert_eq!(t.get("sensor").and_then(Container::standby).map(|i| i.sequence), Some(1));
    }
}
