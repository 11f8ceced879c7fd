//! A device: the container store on its flash file plus the sandbox, in one
//! state directory. Installing goes through both in the order that keeps a
//! refusal free of side effects: verify the release, compile it and check
//! its imports, and only then write and switch the slot.
//!
//! ```text
//! STATE/
//!   device.toml          geometry and identity (what `init` chose)
//!   flash.bin            the simulated NOR flash (allocated, bytes inverted)
//!   cache/<profile>/     compiled artifacts
//!   containers/<name>/   log, log.1, kv, data/ (the preopened /data)
//!   blobs/<sha256>/      blob trees the configs mount, read-only
//! ```
//!
//! **A full disk never blocks an install or a revert.** Both write only
//! the flash, whose every block is allocated when the device is created
//! ([`Device::init`] refuses a disk that cannot hold it), so a flash write
//! never needs new space; an artifact the cache cannot take is kept in
//! memory ([`Sandbox::cache_faults`]). A flash left sparse by an older
//! version is allocated at [`Device::open`]; if the disk cannot hold it
//! then, the device still opens and says so ([`Device::warnings`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{ReentrantMutex, ReentrantMutexGuard};

use crate::bundle::BundleError;
use crate::clock::Clock;
use crate::firmware::{Firmware, PowerOn, Probation, ProbationStep, TrialEvent};
use crate::layout::{DeviceLayout, Geometry};
use crate::sandbox::{Artifact, HostIo, HostMount, Outcome, Sandbox, SandboxError, Stdio};
use crate::store::{self, HostFlash, Identity, Runnable, Stage, Staging, Store};
use crate::update::{Refusal, UpdateEvent};
use gantry_signing::config::MountSource;
use gantry_signing::tree;

/// Errors of device operations.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] store::Error),
    /// The sandbox failed.
    #[error("{0}")]
    Sandbox(#[from] SandboxError),
    /// The state directory.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// `device.toml` is malformed.
    #[error("{0}")]
    Config(String),
    /// A blob tree could not be unpacked or is not what was signed.
    #[error("blob tree: {0}")]
    Tree(tree::TreeError),
    /// The disk cannot hold the flash image.
    #[error("{path}: the disk cannot hold this {size}-byte flash ({error}); free space or choose a smaller geometry")]
    NoRoomForFlash {
        /// The flash image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// What failed.
        error: std::io::Error,
    },
}

/// Largest `last-run` file read back.
const MAX_LAST_RUN: usize = 4096;

/// How a container's last run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastRun {
    /// The release it ran.
    pub sequence: u64,
    /// When it ended, in Unix seconds.
    pub ended_at: u64,
    /// How (a trap's message kept to `table::MAX_REASON` bytes).
    pub outcome: Outcome,
}

impl LastRun {
    /// `{"sequence", "ended_at", "outcome": kind, "exit_code": number or
    /// null, "detail": text or null}`: what `status --json` shows.
    pub fn to_json(&self) -> serde_json::Value {
        let detail = self.outcome.detail().map(|d| crate::table::RevertReason::new(d).as_str().to_owned());
        serde_json::json!({
            "sequence": self.sequence,
            "ended_at": self.ended_at,
            "outcome": self.outcome.kind(),
            "exit_code": self.outcome.exit_code(),
            "detail": detail,
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<LastRun> {
        let detail = || v["detail"].as_str().map(|d| crate::table::RevertReason::new(d).as_str().to_owned());
        let outcome = match v["outcome"].as_str()? {
            "exited" => Outcome::Exited(i32::try_from(v["exit_code"].as_i64()?).ok()?),
            "trapped" => Outcome::Trapped(detail()?),
            "deadline" => Outcome::Deadline,
            "memory-limit" => Outcome::MemoryLimit,
            "stopped" => Outcome::Stopped,
            "failed" => Outcome::Failed(detail()?),
            _ => return None,
        };
        Some(LastRun { sequence: v["sequence"].as_u64()?, ended_at: v["ended_at"].as_u64()?, outcome })
    }
}

/// Something the device works without but an operator should know.
#[derive(Debug)]
pub enum Warning {
    /// The flash image could not be allocated (it was left sparse by an
    /// older version): a flash write may fail while the disk is full.
    FlashNotAllocated(std::io::Error),
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::FlashNotAllocated(e) => write!(
                f,
                "flash.bin is sparse and could not be allocated ({e}): installs may fail while the disk is full"
            ),
        }
    }
}

fn no_blob(name: &str) -> DeviceError {
    DeviceError::Tree(tree::TreeError::Refused(format!("the release carries no blob {name:?}")))
}

/// The data directory `data`, or its subdirectory `sub` (a validated
/// relative path), created if missing. The guest can make links in its
/// data directory: a component that is anything but a directory is
/// refused, so a mount never follows a link the guest made out of it.
fn data_subdir(data: &Path, sub: Option<&str>) -> Result<PathBuf, DeviceError> {
    let mut dir = data.to_owned();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for part in sub.into_iter().flat_map(|s| s.split('/')) {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                let error = std::io::Error::other("not a directory (a link or a file made by the container?)");
                return Err(DeviceError::Io { path: dir, error });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir).map_err(io(&dir))?,
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    Ok(dir)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError + '_ {
    move |error| DeviceError::Io { path: path.to_owned(), error }
}

/// The device as the CLI and the supervisor use it.
pub struct Device {
    dir: PathBuf,
    warnings: Vec<Warning>,
    /// One thread's operations at a time: a store operation is many flash
    /// operations. Reentrant: a thread holding the lock may take it again
    /// (`device.store().a(device.store().b())` cannot deadlock), which is
    /// safe because each store operation completes before the next starts.
    store: ReentrantMutex<Store<HostFlash>>,
    sandbox: Sandbox,
    /// What the last [`Device::power_on`] found (confirmed since, if it was).
    firmware: parking_lot::Mutex<Firmware>,
}

/// An exclusive `flock` on a file of the state directory, held until it
/// drops (the kernel releases it when the process dies, kill -9 included).
pub struct StateLock(#[allow(dead_code)] std::fs::File);

impl StateLock {
    fn take(path: &Path, wait: bool) -> Result<Option<StateLock>, DeviceError> {
        use rustix::fs::{FlockOperation, flock};
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io(path))?;
        let op = if wait { FlockOperation::LockExclusive } else { FlockOperation::NonBlockingLockExclusive };
        match flock(&file, op) {
            Ok(()) => Ok(Some(StateLock(file))),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(io(path)(e.into())),
        }
    }
}

impl Device {
    /// Creates a device in the empty or missing directory `dir`.
    pub fn init(
        dir: &Path,
        geometry: Geometry,
        identity: &Identity,
        trust_root: &[u8],
        now: u64,
    ) -> Result<Device, DeviceError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // Containers' data, seeds and logs are theirs alone.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let toml = dir.join("device.toml");
        if toml.exists() {
            return Err(DeviceError::Config(format!(
                "{} exists: this directory already holds a device",
                toml.display()
            )));
        }
        let layout = DeviceLayout::new(geometry).map_err(store::Error::from)?;
        let flash_path = dir.join("flash.bin");
        let size = layout.size();
        let existed = flash_path.exists();
        if let Err(error) = allocate(&flash_path, size) {
            if !existed {
                let _ = std::fs::remove_file(&flash_path);
            }
            return Err(DeviceError::NoRoomForFlash { path: flash_path, size, error });
        }
        let flash = HostFlash::open(&flash_path, layout.size() as usize)
            .map_err(|e| DeviceError::Config(format!("{}: {e}", flash_path.display())))?;
        let store = Store::open(flash, geometry)?;
        store.provision(identity, trust_root, now)?;
        std::fs::write(&toml, geometry_toml(&geometry).map_err(DeviceError::Config)?).map_err(io(&toml))?;
        Self::open(dir)
    }

    /// Opens the device in `dir`.
    pub fn open(dir: &Path) -> Result<Device, DeviceError> {
        let toml = dir.join("device.toml");
        let text = std::fs::read_to_string(&toml).map_err(io(&toml))?;
        let geometry = parse_geometry(&text).map_err(|e| DeviceError::Config(format!("{}: {e}", toml.display())))?;
        let layout = DeviceLayout::new(geometry).map_err(store::Error::from)?;
        let flash_path = dir.join("flash.bin");
        let flash = HostFlash::open(&flash_path, layout.size() as usize)
            .map_err(|e| DeviceError::Config(format!("{}: {e}", flash_path.display())))?;
        // Only once the simulator accepted the file: its size is right.
        let warnings = allocate(&flash_path, layout.size()).err().map(Warning::FlashNotAllocated);
        let store = Store::open(flash, geometry)?;
        let sandbox = Sandbox::new(&dir.join("cache"))?;
        let warnings = warnings.into_iter().collect();
        let firmware = parking_lot::Mutex::new(Firmware::Unknown);
        Ok(Device { dir: dir.to_owned(), warnings, store: ReentrantMutex::new(store), sandbox, firmware })
    }

    /// Power-on ([`Store::power_on`]): the bootloader's decision over this
    /// device's flash, kept for [`Device::firmware`], the outcome of a
    /// firmware update requested before, and the probation of firmware on
    /// trial.
    pub fn power_on(&self, now_ms: u64, probation_ms: u64) -> Result<PowerOn, DeviceError> {
        let power_on = self.store().power_on(now_ms, probation_ms)?;
        *self.firmware.lock() = power_on.firmware.clone();
        Ok(power_on)
    }

    /// Steps firmware's probation ([`Probation::step`]); once it is
    /// confirmed, [`Device::firmware`] (what check-ins report) says so.
    pub fn step_probation(
        &self,
        probation: &mut Probation,
        event: Option<&TrialEvent>,
        now_ms: u64,
    ) -> Result<ProbationStep, DeviceError> {
        let step = probation.step(&*self.store(), event, now_ms)?;
        if matches!(step, ProbationStep::Confirmed(_)) {
            *self.firmware.lock() = Firmware::Running(crate::firmware::confirmed(probation.record()));
        }
        Ok(step)
    }

    /// What the last [`Device::power_on`] found.
    pub fn firmware(&self) -> Firmware {
        self.firmware.lock().clone()
    }

    /// Moves the device, its bootloader first, to the newest trust root of
    /// `chain` ([`Store::rotate_trust_root`]), keeping the firmware this
    /// boot runs bootable.
    pub fn rotate_trust_root(&self, chain: &[Vec<u8>], now: u64) -> Result<Option<u64>, DeviceError> {
        let firmware = self.firmware();
        Ok(self.store().rotate_trust_root(chain, now, firmware.record())?)
    }

    /// What went wrong at open that the device works without.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Removes container `name`: its slots are freed in the store, then its
    /// host files (log, key-value store, `/data`) are deleted. A revert
    /// keeps them: `/data` belongs to the version that runs again, and its
    /// quota bounds it.
    pub fn remove(&self, name: &str) -> Result<UpdateEvent, DeviceError> {
        let event = self.store().remove(name)?;
        // `name` is a table entry's, so a validated container name.
        let files = self.dir.join("containers").join(name);
        match std::fs::remove_dir_all(&files) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&files)(e)),
            _ => Ok(event),
        }
    }

    /// The container store, locked for the caller's operations.
    pub fn store(&self) -> ReentrantMutexGuard<'_, Store<HostFlash>> {
        // A panic while holding the lock leaves no half-done table (every
        // table write is atomic on flash, and the flash is the state), and
        // this lock is never poisoned.
        self.store.lock()
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Where a container's host-side files live (the directory is
    /// created), its heartbeats timed by `clock`, with what its config
    /// mounts made ready: each blob tree found intact or unpacked again
    /// from its verified slot ([`Device::blob_tree`]), the data directory
    /// created from its seed when it has none, data subdirectories
    /// created, stdin read from its blob.
    pub fn host_io(&self, r: &Runnable, clock: Arc<dyn Clock>) -> Result<HostIo, DeviceError> {
        let config = &r.release.config;
        let base = self.dir.join("containers").join(&r.name);
        std::fs::create_dir_all(&base).map_err(io(&base))?;
        let mut host = HostIo { clock, ..HostIo::under(&base) };
        let read = |name: &str| -> Result<(Vec<u8>, [u8; 32]), DeviceError> {
            let p = r.release.blob(name).ok_or_else(|| no_blob(name))?;
            Ok((self.store().read_payload(r, p)?, p.sha256))
        };
        if let Some(seed) = &config.seed
            && !host.data_dir.exists()
        {
            // Unpacked beside it, then renamed: a crash leaves no
            // half-seeded data directory.
            let (bytes, sha256) = read(seed)?;
            let tmp = base.join("data.seed");
            tree::remove(&tmp).map_err(DeviceError::Tree)?;
            tree::unpack(&bytes, &sha256, &tmp, false).map_err(DeviceError::Tree)?;
            std::fs::rename(&tmp, &host.data_dir).map_err(io(&host.data_dir))?;
        }
        for m in &config.mounts {
            let dir = match &m.source {
                MountSource::Data(sub) => data_subdir(&host.data_dir, sub.as_deref())?,
                MountSource::Blob(name) => {
                    let p = r.release.blob(name).ok_or_else(|| no_blob(name))?;
                    self.blob_tree(&p.sha256, || read(name).map(|(bytes, _)| bytes))?
                }
            };
            host.mounts.push(HostMount { host: dir, guest: m.path.clone(), writable: m.writable });
        }
        if let Some(stdin) = &config.stdin {
            host.stdin = Some(read(stdin)?.0.into());
        }
        Ok(host)
    }

    /// The directory a blob tree of digest `sha256` is unpacked in,
    /// `STATE/blobs/<sha256>/`, read-only and shared by every release that
    /// carries it. It is used only if it archives to that digest again
    /// (checked every time: a changed file, an extra or a missing one is
    /// found); otherwise it is unpacked again from `read` (the verified
    /// slot).
    pub fn blob_tree(
        &self,
        sha256: &[u8; 32],
        read: impl FnOnce() -> Result<Vec<u8>, DeviceError>,
    ) -> Result<PathBuf, DeviceError> {
        let _one = self.blobs_lock()?;
        let dir = self.dir.join("blobs").join(hex::encode(sha256));
        if tree::digest(&dir).is_ok_and(|d| d == *sha256) {
            return Ok(dir);
        }
        let parent = self.dir.join("blobs");
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        tree::remove(&dir).map_err(DeviceError::Tree)?;
        let tmp = dir.with_extension("tmp");
        tree::remove(&tmp).map_err(DeviceError::Tree)?;
        tree::unpack(&read()?, sha256, &tmp, true).map_err(DeviceError::Tree)?;
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Keeps how container `name`'s run of release `sequence` ended, for
    /// `status` ([`Device::last_run`]): one small file, replaced whole.
    pub fn record_run(&self, name: &str, sequence: u64, outcome: &Outcome, now: u64) -> Result<(), DeviceError> {
        let run = LastRun { sequence, ended_at: now, outcome: outcome.clone() };
        let path = self.dir.join("containers").join(name).join("last-run");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, run.to_json().to_string()).and_then(|()| std::fs::rename(&tmp, &path)).map_err(io(&path))
    }

    /// How container `name`'s last run ended, if it was kept and reads
    /// back (a file that does not is ignored).
    pub fn last_run(&self, name: &str) -> Option<LastRun> {
        let path = self.dir.join("containers").join(name).join("last-run");
        let mut bytes = Vec::new();
        let file = std::fs::File::open(path).ok()?;
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_LAST_RUN as u64 + 1), &mut bytes).ok()?;
        if bytes.len() > MAX_LAST_RUN {
            return None;
        }
        LastRun::from_json(&serde_json::from_slice(&bytes).ok()?)
    }

    /// The right to run containers on this device: one process at a time
    /// (`gantry-device run` or `run --once`), so two instances of one
    /// container never race on its files and a start never collects a tree
    /// another process runs. `None` while another process holds it.
    pub fn runner_lock(&self) -> Result<Option<StateLock>, DeviceError> {
        StateLock::take(&self.dir.join("run.lock"), false)
    }

    /// One process and thread at a time unpacks or collects blob trees.
    fn blobs_lock(&self) -> Result<StateLock, DeviceError> {
        let path = self.dir.join("blobs.lock");
        StateLock::take(&path, true)?.ok_or_else(|| io(&path)(std::io::ErrorKind::WouldBlock.into()))
    }

    /// Deletes every blob tree in `STATE/blobs/` that none of `running`
    /// mounts (trees of older releases, of removed
    /// containers, unpacks a crash interrupted). Call it before any of
    /// them runs: a tree in use is never deleted, and one a later revert
    /// needs is unpacked again from its slot. Returns how many it deleted.
    pub fn collect_blob_trees(&self, running: &[Runnable]) -> Result<usize, DeviceError> {
        let _one = self.blobs_lock()?;
        let keep: std::collections::BTreeSet<String> = running
            .iter()
            .flat_map(|r| {
                let trees = r.release.config.mounts.iter().filter_map(|m| m.blob());
                trees.filter_map(|b| r.release.blob(b)).map(|p| hex::encode(p.sha256)).collect::<Vec<_>>()
            })
            .collect();
        let dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            other => other.map_err(io(&dir))?,
        };
        let mut deleted = 0;
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            if !entry.file_name().to_str().is_some_and(|n| keep.contains(n)) {
                tree::remove(&entry.path()).map_err(DeviceError::Tree)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Runs a runnable container's entry point once: its module, its host
    /// files and mounts ([`Device::host_io`]) with stdout and stderr sent
    /// where `stdio` says.
    pub fn run_once(
        &self,
        r: &Runnable,
        stdio: Stdio,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Outcome, DeviceError> {
        let module = self.module(r)?;
        let host = HostIo { stdio, ..self.host_io(r, Arc::new(crate::clock::SystemClock::new()))? };
        Ok(self.sandbox.run(&module, &r.release.config, host, stop)?.0)
    }

    /// Installs a release given whole (see [`Device::stage`] for one that
    /// streams): refused if it does not verify or its module imports what
    /// its config does not grant.
    pub fn install(&self, envelope: &[u8], payloads: &[&[u8]], now: u64) -> Result<UpdateEvent, DeviceError> {
        let mut staging = match self.stage(envelope, now)? {
            Stage::Writing(s) => s,
            Stage::Refused(event) => return Ok(event),
        };
        if let Some(reason) = self.store().write_all(&mut staging, payloads)? {
            return Ok(UpdateEvent::Refused { name: staging.release().config.name.clone(), reason });
        }
        self.finish(staging, now)
    }

    /// Starts or resumes an install that streams: its envelope is
    /// verified and its standby slot readied; then [`Device::stage_write`]
    /// takes the payloads from [`Staging::position`] on, and
    /// [`Device::finish`] switches to it. The RAM this needs does not grow
    /// with the release, except the module's compilation.
    pub fn stage(&self, envelope: &[u8], now: u64) -> Result<Stage, DeviceError> {
        Ok(self.store().stage(envelope, now)?)
    }

    /// The next bytes of an install (each call holds the store's lock only
    /// for its own write).
    pub fn stage_write(&self, staging: &mut Staging, data: &[u8]) -> Result<(), DeviceError> {
        Ok(self.store().stage_write(staging, data)?)
    }

    /// Keeps what an install received so far, when its download stopped
    /// ([`Store::checkpoint`]).
    pub fn checkpoint(&self, staging: &mut Staging) -> Result<(), DeviceError> {
        Ok(self.store().checkpoint(staging)?)
    }

    /// Ends an install: verifies the slot from flash, compiles its module
    /// and checks its imports (without holding the store's lock: seconds
    /// for a large module), and only then switches to it on probation. A
    /// module the sandbox refuses leaves the running version as it was.
    pub fn finish(&self, staging: Box<Staging>, now: u64) -> Result<UpdateEvent, DeviceError> {
        let staged = self.store().finish(staging, now)?;
        let name = staged.release.config.name.clone();
        let module = staged.release.module().clone();
        let wasm = self.store().read_staged(&staged, &module)?;
        // Every blob tree the config mounts or seeds from must be a
        // canonical archive: unpacked now, so a bad one is refused before
        // the switch. A disk that cannot hold it refuses nothing (the next
        // start unpacks it again).
        let config = &staged.release.config;
        let mounted: Vec<&str> = config.mounts.iter().filter_map(|m| m.blob()).collect();
        for blob in mounted.iter().copied().chain(config.seed.as_deref()) {
            let Some(p) = staged.release.blob(blob).cloned() else { continue };
            match self.blob_tree(&p.sha256, || Ok(self.store().read_staged(&staged, &p)?)) {
                Err(DeviceError::Tree(e @ (tree::TreeError::Refused(_) | tree::TreeError::NotCanonical))) => {
                    self.store().abandon(&name);
                    let reason = format!("blob {blob:?} is not a blob tree: {e}");
                    return Ok(UpdateEvent::Refused { name, reason: Refusal::Sandbox(reason) });
                }
                // A seed is checked, not kept: its copy is the data
                // directory's, made at the first start.
                Ok(dir) if !mounted.contains(&blob) => {
                    let _one = self.blobs_lock()?;
                    let _ = tree::remove(&dir);
                }
                _ => {}
            }
        }
        // The same module compiled before (another release, another
        // config): its recorded artifact is used if it still loads, once
        // the module passes this config's check; else it is compiled.
        let recorded = self.store().artifact(&module.sha256)?.map(|sha256| Artifact { sha256 });
        let reusable = recorded.filter(|a| {
            crate::sandbox::check_module(&wasm, config).is_ok() && self.sandbox.load(&module.sha256, a, config).is_ok()
        });
        let installed = match reusable {
            Some(a) => Ok(a),
            None => self.sandbox.install(&module.sha256, &wasm, config),
        };
        let artifact = match installed {
            Ok(a) => a,
            Err(e @ (SandboxError::Module(_) | SandboxError::Compile(_))) => {
                self.store().abandon(&name);
                return Ok(UpdateEvent::Refused { name, reason: Refusal::Sandbox(e.to_string()) });
            }
            Err(e) => return Err(e.into()),
        };
        drop(wasm);
        let store = self.store();
        let event = store.commit(staged)?;
        store.record_artifact(&module.sha256, &artifact.sha256)?;
        Ok(event)
    }

    /// Loads a runnable container's module from its verified slot, compiling
    /// it again if its artifact is missing or not the recorded one (without
    /// holding the store's lock while it compiles).
    pub fn module(&self, r: &Runnable) -> Result<wasmtime::Module, DeviceError> {
        let digest = r.release.module().sha256;
        let recorded = self.store().artifact(&digest)?;
        if let Some(sha256) = recorded
            && let Ok(m) = self.sandbox.load(&digest, &Artifact { sha256 }, &r.release.config)
        {
            return Ok(m);
        }
        let wasm = self.store().read_payload(r, r.release.module())?;
        let artifact = self.sandbox.install(&digest, &wasm, &r.release.config)?;
        self.store().record_artifact(&digest, &artifact.sha256)?;
        Ok(self.sandbox.load(&digest, &artifact, &r.release.config)?)
    }
}

/// Allocates every block of the `size`-byte file at `path` (creating it
/// if missing), so writing it later never needs space. The flash stores
/// bytes inverted, so the zeros of newly allocated blocks read as erased,
/// as holes did. A file already without holes is left alone.
fn allocate(path: &Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    let meta = file.metadata()?;
    if meta.len() == size && meta.blocks().saturating_mul(512) >= size {
        return Ok(());
    }
    match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size) {
        // A file system without fallocate: a new, empty file can be filled
        // with the zeros it would read as; an existing one cannot be
        // without erasing what it holds.
        Err(rustix::io::Errno::OPNOTSUPP) if meta.len() == 0 => {
            std::io::copy(&mut std::io::Read::take(std::io::repeat(0), size), &mut &file).map(drop)
        }
        other => Ok(other?),
    }
}

impl From<BundleError> for DeviceError {
    fn from(e: BundleError) -> Self {
        DeviceError::Store(e.into())
    }
}

/// `device.toml`: what `init` chose. Every key is required and no other
/// is allowed, so a typo is an error, not a silent default.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GeometryFile {
    firmware_pages: u32,
    device_kv_pages: u32,
    max_containers: u8,
    slot_size: u32,
}

fn geometry_toml(g: &Geometry) -> Result<String, String> {
    let file = GeometryFile {
        firmware_pages: g.firmware_pages,
        device_kv_pages: g.device_kv_pages,
        max_containers: g.max_containers,
        slot_size: g.slot_size,
    };
    let body = toml::to_string(&file).map_err(|e| e.to_string())?;
    Ok(format!("# Written by `gantry-device init`; the flash layout depends on it.\n{body}"))
}

fn parse_geometry(text: &str) -> Result<Geometry, String> {
    let f: GeometryFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    Ok(Geometry {
        firmware_pages: f.firmware_pages,
        device_kv_pages: f.device_kv_pages,
        max_containers: f.max_containers,
        slot_size: f.slot_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_run_reads_back_as_written_and_nothing_else_does() {
        let long = "é".repeat(400);
        for outcome in [
            Outcome::Exited(-7),
            Outcome::Exited(255),
            Outcome::Trapped("wasm trap: unreachable".into()),
            Outcome::Deadline,
            Outcome::MemoryLimit,
            Outcome::Stopped,
            Outcome::Failed(long.clone()),
        ] {
            let run = LastRun { sequence: 9, ended_at: 1_800_000_000, outcome: outcome.clone() };
            let json = run.to_json();
            assert_eq!(json["exit_code"].as_i64(), outcome.exit_code().map(i64::from));
            let back = LastRun::from_json(&json).unwrap();
            match outcome {
                // Kept to the slot table's reason bound, on a character boundary.
                Outcome::Failed(_) => {
                    let Outcome::Failed(d) = back.outcome else { panic!() };
                    assert!(d.len() <= crate::table::MAX_REASON && long.starts_with(d.trim_end_matches('…')));
                }
                _ => assert_eq!(back, run),
            }
        }
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"sequence": 1, "ended_at": 2, "outcome": "exited", "exit_code": 1u64 << 40}),
            serde_json::json!({"sequence": 1, "ended_at": 2, "outcome": "exploded"}),
            serde_json::json!({"sequence": -1, "ended_at": 2, "outcome": "stopped"}),
            serde_json::json!({"sequence": 1, "ended_at": 2, "outcome": "trapped"}),
        ] {
            assert!(LastRun::from_json(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn geometry_file_round_trip() {
        let g = Geometry { firmware_pages: 3, device_kv_pages: 5, max_containers: 2, slot_size: 1 << 20 };
        assert_eq!(parse_geometry(&geometry_toml(&g).unwrap()), Ok(g));
        assert!(parse_geometry("slot_size = lots").is_err());
        assert!(parse_geometry("colour = 3").is_err());
        assert!(parse_geometry("max_containers = 300").is_err());
        let complete = geometry_toml(&g).unwrap();
        assert!(parse_geometry(&complete.replace("slot_size", "slot_sise")).is_err(), "a typo is an error");
        assert!(parse_geometry(&format!("{complete}slot_size = 4096\n")).is_err(), "a key twice");
    }
}
