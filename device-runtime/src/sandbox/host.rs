//! Gantry's host API, linked function by function only when the signed
//! config grants it (`gantry_signing::module::gantry_capability`). Every call bounds what it
//! reads from and writes to guest memory and returns an error code rather
//! than trapping on a bad argument.
//!
//! ```text
//! gantry.log(ptr: i32, len: i32)                                  gantry:log
//! gantry.kv_get(key: i32, key_len: i32, buf: i32, cap: i32) -> i32  gantry:kv   value length, -1 no such key, -2 buffer too small, -3 bad argument
//! gantry.kv_put(key: i32, key_len: i32, val: i32, len: i32) -> i32  gantry:kv   0, -3 bad argument, -4 store full, -5 I/O
//! gantry.sensor_read(channel: i32) -> f64                        gantry:sensor  a simulated temperature in °C
//! gantry.heartbeat()                                             (always)       liveness for heartbeat health checks
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gantry_signing::config::ContainerConfig;
use wasmtime::{Caller, Extern, Linker};

use super::log::LogWriter;
use super::run::Ctx;
use crate::clock::{Clock, SystemClock};

/// Longest log line kept from one `gantry.log` call.
const MAX_LOG: usize = 4096;
/// Key-value store bounds per container.
const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 4096;
const MAX_KEYS: usize = 256;

/// Where a container's host-side state lives.
#[derive(Clone, Debug)]
pub struct HostIo {
    /// Its log file (stdout, stderr and `gantry.log`, appended), rotated
    /// to `log.1` ([`HostIo::log_files`]) within `limits.log`.
    pub log: PathBuf,
    /// Log bytes dropped because they could not be written (a full disk),
    /// shared with the supervisor, which reports them.
    pub log_dropped: Arc<AtomicU64>,
    /// Its private data directory, preopened as `/data` when granted.
    pub data_dir: PathBuf,
    /// Its key-value store file.
    pub kv: PathBuf,
    /// [`Clock::now_ms`] of the last heartbeat, shared with the supervisor.
    pub heartbeat: Arc<AtomicU64>,
    /// Time base of heartbeats and the sensor: the supervisor's clock.
    pub clock: Arc<dyn Clock>,
    /// Directories preopened besides `/data`, in the config's order.
    pub mounts: Vec<HostMount>,
    /// The guest's stdin; empty when `None`.
    pub stdin: Option<bytes::Bytes>,
    /// Where stdout and stderr go: the log, or (`gantry-device run
    /// --once`) the runtime's own stdout and stderr, apart.
    pub stdio: Stdio,
}

/// Where a container's stdout and stderr go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// Into its log, in order, as far as `wasi:stdout` / `wasi:stderr`
    /// are granted.
    Log,
    /// To the runtime's own stdout and stderr, each to its own (a batch
    /// run), as far as they are granted.
    Inherit,
}

/// A host directory preopened for the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMount {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Whether the guest may change it.
    pub writable: bool,
}

impl HostIo {
    /// The layout of a container's files under `dir` (`log`, `kv`, `data/`),
    /// on the real clock. Creates nothing.
    pub fn under(dir: &std::path::Path) -> HostIo {
        HostIo {
            log: dir.join("log"),
            log_dropped: Arc::default(),
            data_dir: dir.join("data"),
            kv: dir.join("kv"),
            heartbeat: Arc::new(AtomicU64::new(0)),
            clock: Arc::new(SystemClock::new()),
            mounts: Vec::new(),
            stdin: None,
            stdio: Stdio::Log,
        }
    }

    /// The log's files, oldest first: the previous generation, then the
    /// current one (either may be missing).
    pub fn log_files(&self) -> [PathBuf; 2] {
        [super::log::previous(&self.log), self.log.clone()]
    }
}

/// The Gantry host functions a config grants: what a linker holds, so
/// one linker serves every container granted the same set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Grants {
    log: bool,
    kv: bool,
    sensor: bool,
    /// The data directory is mounted writable: the quota's wrappers are
    /// linked.
    pub(crate) data: bool,
}

impl Grants {
    pub(crate) fn of(config: &ContainerConfig) -> Grants {
        let has = |cap: &str| config.capabilities.iter().any(|c| c == cap);
        Grants {
            log: has("gantry:log"),
            kv: has("gantry:kv"),
            sensor: has("gantry:sensor"),
            data: config.writes_data(),
        }
    }
}

/// The host side of one instance.
pub(crate) struct Host {
    io: HostIo,
    /// The container's log (shared with stdout and stderr), when
    /// `gantry:log` is granted.
    log: Option<LogWriter>,
    /// Read from its file at the first `kv_*` call, so an instance that
    /// never uses the store costs no read at start.
    kv: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Host {
    pub(crate) fn new(io: HostIo, log: Option<LogWriter>) -> Host {
        Host { io, log, kv: None }
    }

    fn log(&mut self, line: &[u8]) {
        if let Some(log) = self.log.as_ref() {
            // One write per line, so lines from stdout and gantry.log never tear.
            let mut out = Vec::with_capacity(line.len().min(MAX_LOG) + 1);
            out.extend_from_slice(&line[..line.len().min(MAX_LOG)]);
            out.push(b'\n');
            log.write(&out);
        }
    }

    fn kv(&mut self) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        let path = &self.io.kv;
        self.kv.get_or_insert_with(|| std::fs::read(path).ok().and_then(|b| decode_kv(&b)).unwrap_or_default())
    }

    fn save_kv(&mut self) -> std::io::Result<()> {
        let tmp = self.io.kv.with_extension("tmp");
        std::fs::write(&tmp, encode_kv(self.kv()))?;
        std::fs::rename(&tmp, &self.io.kv)
    }
}

fn encode_kv(kv: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in kv {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn decode_kv(mut b: &[u8]) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut kv = BTreeMap::new();
    while !b.is_empty() {
        let kl = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
        let k = b.get(2..2 + kl)?.to_vec();
        let b2 = b.get(2 + kl..)?;
        let vl = u32::from_le_bytes(b2.get(..4)?.try_into().ok()?) as usize;
        if kl > MAX_KEY || vl > MAX_VALUE || kv.len() >= MAX_KEYS {
            return None;
        }
        kv.insert(k, b2.get(4..4 + vl)?.to_vec());
        b = b2.get(4 + vl..)?;
    }
    Some(kv)
}

/// The guest's exported memory, bounds-checked.
fn guest<'a>(caller: &'a mut Caller<'_, Ctx>, ptr: i32, len: i32) -> Option<(usize, usize, &'a mut [u8])> {
    let Some(Extern::Memory(m)) = caller.get_export("memory") else { return None };
    let (ptr, len) = (usize::try_from(ptr).ok()?, usize::try_from(len).ok()?);
    let data = m.data_mut(caller);
    data.get(ptr..ptr.checked_add(len)?)?;
    Some((ptr, len, data))
}

/// Links the Gantry functions in `grants`.
pub(crate) fn add_to_linker(linker: &mut Linker<Ctx>, grants: Grants) -> wasmtime::Result<()> {
    linker.func_wrap("gantry", "heartbeat", |caller: Caller<'_, Ctx>| {
        let io = &caller.data().host.io;
        io.heartbeat.store(io.clock.now_ms(), Ordering::Relaxed);
    })?;
    if grants.log {
        linker.func_wrap("gantry", "log", |mut caller: Caller<'_, Ctx>, ptr: i32, len: i32| {
            let len = len.min(MAX_LOG as i32);
            let line = guest(&mut caller, ptr, len).map(|(p, l, d)| d[p..p + l].to_vec());
            if let Some(line) = line {
                caller.data_mut().host.log(&line);
            }
        })?;
    }
    if grants.kv {
        linker.func_wrap(
            "gantry",
            "kv_get",
            |mut caller: Caller<'_, Ctx>, key: i32, key_len: i32, buf: i32, cap: i32| -> i32 {
                if !(0..=MAX_KEY as i32).contains(&key_len) {
                    return -3;
                }
                let Some(k) = guest(&mut caller, key, key_len).map(|(p, l, d)| d[p..p + l].to_vec()) else {
                    return -3;
                };
                let Some(v) = caller.data_mut().host.kv().get(&k).cloned() else { return -1 };
                if (cap as i64) < v.len() as i64 {
                    return -2;
                }
                match guest(&mut caller, buf, v.len() as i32) {
                    Some((p, l, d)) => {
                        d[p..p + l].copy_from_slice(&v);
                        v.len() as i32
                    }
                    None => -3,
                }
            },
        )?;
        linker.func_wrap(
            "gantry",
            "kv_put",
            |mut caller: Caller<'_, Ctx>, key: i32, key_len: i32, val: i32, len: i32| -> i32 {
                if !(0..=MAX_KEY as i32).contains(&key_len) || !(0..=MAX_VALUE as i32).contains(&len) {
                    return -3;
                }
                let Some(k) = guest(&mut caller, key, key_len).map(|(p, l, d)| d[p..p + l].to_vec()) else {
                    return -3;
                };
                let Some(v) = guest(&mut caller, val, len).map(|(p, l, d)| d[p..p + l].to_vec()) else {
                    return -3;
                };
                let host = &mut caller.data_mut().host;
                let kv = host.kv();
                if !kv.contains_key(&k) && kv.len() >= MAX_KEYS {
                    return -4;
                }
                kv.insert(k, v);
                if host.save_kv().is_err() { -5 } else { 0 }
            },
        )?;
    }
    if grants.sensor {
        linker.func_wrap("gantry", "sensor_read", |caller: Caller<'_, Ctx>, channel: i32| -> f64 {
            let t = caller.data().host.io.clock.now_ms() as f64 / 1000.0;
            20.0 + 5.0 * (t / 60.0 + channel as f64).sin()
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_file_round_trip_and_refuses_garbage() {
        let mut kv = BTreeMap::new();
        kv.insert(b"count".to_vec(), vec![1, 2, 3]);
        kv.insert(Vec::new(), Vec::new());
        assert_eq!(decode_kv(&encode_kv(&kv)), Some(kv.clone()));
        let bytes = encode_kv(&kv);
        for cut in 1..bytes.len() {
            assert!(decode_kv(&bytes[..cut]).is_none() || cut == 6, "cut {cut}");
        }
        assert!(decode_kv(&[0xFF, 0xFF]).is_none());
    }
}
