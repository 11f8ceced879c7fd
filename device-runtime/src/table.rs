//! The slot table: which container lives in which slot pair, which slot is
//! active, what each slot holds, and where each update stands. One record
//! in the device map, rewritten atomically, so a power cut leaves either
//! the table before a step or the table after it.
//!
//! ```cddl
//! slot-table = [1, [* container]]
//! container  = [name: tstr, pair: uint, active: 0 / 1, phase, slot-a: installed / null,
//!               slot-b: installed / null, counter: uint, enabled: bool]
//! phase      = [0] / [1, restarts: uint] / [2, reason: tstr]   ; confirmed / probation / reverted
//! installed  = [manifest-digest: bstr .size 32, sequence: uint, version: tstr]
//! ```

use gantry_boot::Slot;
use gantry_keys::cbor_vec::VecWriter;
use minicbor::{Decoder, Encoder};

const TABLE_VERSION: u8 = 1;
const MAX_NAME: usize = 63;
const MAX_TEXT: usize = 256;

/// What a slot holds, as verified when it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// SHA-256 of the bstr-wrapped manifest.
    pub manifest_digest: [u8; 32],
    /// The manifest's sequence number.
    pub sequence: u64,
    /// The config's version string.
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
        reason: String,
    },
}

/// One container's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// Container name (the first segment of its component ids).
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

/// A table record that does not decode.
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

    /// The lowest slot pair no container uses, below `max`.
    pub fn free_pair(&self, max: u8) -> Option<u8> {
        (0..max).find(|p| self.containers.iter().all(|c| c.pair != *p))
    }

    /// Canonical CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(VecWriter::default());
        // Writing into a Vec cannot fail.
        let _ = (|| -> Result<(), minicbor::encode::Error<core::convert::Infallible>> {
            e.array(2)?.u8(TABLE_VERSION)?.array(self.containers.len() as u64)?;
            for c in &self.containers {
                e.array(8)?.str(&c.name)?.u8(c.pair)?.u8(index(c.active) as u8)?;
                match &c.phase {
                    Phase::Confirmed => e.array(1)?.u8(0)?,
                    Phase::Probation { restarts } => e.array(2)?.u8(1)?.u8(*restarts)?,
                    Phase::Reverted { reason } => e.array(2)?.u8(2)?.str(reason)?,
                };
                for slot in &c.slots {
                    match slot {
                        None => e.null()?,
                        Some(i) => e.array(3)?.bytes(&i.manifest_digest)?.u64(i.sequence)?.str(&i.version)?,
                    };
                }
                e.u64(c.counter)?.bool(c.enabled)?;
            }
            Ok(())
        })();
        e.into_writer().0
    }

    /// Decodes a table; anything unexpected is an error.
    pub fn decode(bytes: &[u8]) -> Result<SlotTable, TableError> {
        let mut d = Decoder::new(bytes);
        let bad = |what| move |_| TableError(what);
        if d.array().map_err(bad("table"))? != Some(2) || d.u8().map_err(bad("version"))? != TABLE_VERSION {
            return Err(TableError("unknown table version"));
        }
        let n = d.array().map_err(bad("containers"))?.ok_or(TableError("indefinite array"))?;
        if n > u8::MAX as u64 {
            return Err(TableError("too many containers"));
        }
        let mut containers = Vec::with_capacity(n as usize);
        for _ in 0..n {
            containers.push(decode_container(&mut d)?);
        }
        if d.position() != bytes.len() {
            return Err(TableError("trailing bytes"));
        }
        for (i, c) in containers.iter().enumerate() {
            if containers[..i].iter().any(|o| o.name == c.name || o.pair == c.pair) {
                return Err(TableError("a name or slot pair is used twice"));
            }
        }
        Ok(SlotTable { containers })
    }
}

fn text(d: &mut Decoder<'_>, max: usize, what: &'static str) -> Result<String, TableError> {
    let s = d.str().map_err(|_| TableError(what))?;
    if s.len() > max {
        return Err(TableError(what));
    }
    Ok(s.to_owned())
}

fn decode_container(d: &mut Decoder<'_>) -> Result<Container, TableError> {
    let bad = |what| move |_| TableError(what);
    if d.array().map_err(bad("container"))? != Some(8) {
        return Err(TableError("container"));
    }
    let name = text(d, MAX_NAME, "name")?;
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
        (Some(2), 2) => Phase::Reverted { reason: text(d, MAX_TEXT, "reason")? },
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
        *slot = Some(Installed { manifest_digest, sequence, version: text(d, MAX_TEXT, "version")? });
    }
    let counter = d.u64().map_err(bad("counter"))?;
    let enabled = d.bool().map_err(bad("enabled"))?;
    Ok(Container { name, pair, active, phase, slots, counter, enabled })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SlotTable {
        let installed =
            |seq| Installed { manifest_digest: [seq as u8; 32], sequence: seq, version: format!("1.{seq}") };
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

    #[test]
    fn round_trip() {
        let t = sample();
        assert_eq!(SlotTable::decode(&t.encode()), Ok(t.clone()));
        assert_eq!(SlotTable::decode(&SlotTable::default().encode()), Ok(SlotTable::default()));
        assert_eq!(t.free_pair(8), Some(1));
        assert_eq!(t.get("ml").and_then(Container::running).map(|i| i.sequence), Some(7));
        assert_eq!(t.get("sensor").and_then(Container::standby).map(|i| i.sequence), Some(1));
    }

    #[test]
    fn every_truncation_and_duplicates_are_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(SlotTable::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut twice = sample();
        twice.containers[1].name = "sensor".into();
        assert_eq!(SlotTable::decode(&twice.encode()), Err(TableError("a name or slot pair is used twice")));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(SlotTable::decode(&trailing).is_err());
    }
}
