//! `gantry-device`: the device agent's command line.
//!
//! Exit codes: 0 success, 1 refused (an install that does not verify), 2
//! usage or I/O error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use gantry_device::agent::{self, Agent, AgentConfig, AgentEvent, Caps, Schedule};
use std::io::{Read as _, Seek as _};

use gantry_device::bundle::{self, BundleError, VerifiedRelease};
use gantry_device::clock::Clock as _;
use gantry_device::clock::SystemClock;
use gantry_device::device::{Device, DeviceError};
use gantry_device::firmware::{Firmware, FirmwareOutcome, PowerOn, ProbationStep, TrialEvent};
use gantry_device::layout::Geometry;
use gantry_device::store::{self, Identity, Stage};
use gantry_device::supervisor::{self, Control, Report};
use gantry_device::table::{Container, Phase};
use gantry_device::update::{Refusal, UpdateEvent};
use gantry_signing::build::{class_id_from_model, vendor_id_from_domain};
use serde_json::json;

/// Runs Gantry containers on this device: installs signed releases into
/// A/B slots on flash, runs them sandboxed, and rolls back a new version
/// that fails by itself.
#[derive(Parser)]
#[command(name = "gantry-device", version, about, long_about = None)]
struct Cli {
    /// The device's state directory (flash image, artifact cache, logs).
    #[arg(long, global = true, env = "GANTRY_STATE", default_value = "gantry-state")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a device: its flash, identity and trust root.
    Init {
        /// The signed trust root (`gantry-sign trust create` / `sign`).
        #[arg(long)]
        trust: PathBuf,
        /// Vendor domain; the SUIT vendor id is its UUIDv5 (as `gantry-sign container --vendor`).
        #[arg(long, default_value = "example.com")]
        vendor: String,
        /// Device model; the SUIT class id is its UUIDv5 under the vendor id.
        #[arg(long, default_value = "gateway")]
        class: String,
        /// Containers the store can hold.
        #[arg(long, default_value_t = 8)]
        max_containers: u8,
        /// Bytes per container slot (module, blobs and envelope), in MiB.
        #[arg(long, default_value_t = 32)]
        slot_mib: u32,
    },
    /// Installs a signed release: verified, its imports checked against its
    /// capabilities, written to the standby slot, verified again and
    /// switched to on probation. Exit 1 if refused (nothing is written).
    Install {
        /// The signed envelope (`gantry-sign container` + `sign`).
        envelope: PathBuf,
        /// The Wasm module the envelope names.
        #[arg(long)]
        module: PathBuf,
        /// A blob the envelope names, as NAME=PATH.
        #[arg(long = "blob", value_name = "NAME=PATH")]
        blobs: Vec<String>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stages a signed firmware release into the bootloader's DFU
    /// partition, streamed and verified from flash, and asks for it at the
    /// next power-on: `run` then boots it on trial and confirms it once
    /// every container is healthy, else the next power-on reverts it.
    /// Exit 1 if refused.
    Firmware {
        /// The signed envelope (one `["firmware"]` component).
        envelope: PathBuf,
        /// The firmware image it names.
        #[arg(long)]
        image: PathBuf,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Marks a container to be run by `run`.
    Start {
        /// Container name.
        name: String,
    },
    /// Marks a container not to be run (takes effect at the next `run`).
    Stop {
        /// Container name.
        name: String,
    },
    /// Forgets a container and deletes its files (log, kv, /data); its
    /// slots are reused.
    Remove {
        /// Container name.
        name: String,
    },
    /// Shows every container: version, slot, update phase, counter.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prints a container's log (stdout, stderr and gantry.log).
    Logs {
        /// Container name.
        name: String,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Runs the enabled containers, supervised, until SIGINT or SIGTERM
    /// (or for --seconds). With --server, also pulls updates: enrolls,
    /// polls, verifies ticket and release, downloads, installs, reports.
    /// With --once NAME, runs that container's entry point once, its
    /// stdout and stderr to this process's, and exits with its exit code.
    Run {
        /// Run only this container, once, unsupervised, and exit with its
        /// exit code (a trap, deadline or memory limit: 134; not runnable: 2).
        #[arg(long, value_name = "NAME", conflicts_with_all = ["seconds", "server"])]
        once: Option<String>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// Print reports as JSON lines.
        #[arg(long)]
        json: bool,
        /// The update server to pull from (e.g. http://10.0.0.5:8480).
        #[arg(long, env = "GANTRY_SERVER")]
        server: Option<String>,
        /// A one-time enrollment token, if the operator did not
        /// pre-authorize this device's key (`gantry-device identity`).
        #[arg(long, env = "GANTRY_ENROLL_TOKEN", hide_env_values = true)]
        enroll_token: Option<String>,
        /// Poll interval until the server names one, in seconds.
        #[arg(long, default_value_t = 60)]
        poll_seconds: u64,
        /// How long firmware booted on trial is watched before it is
        /// confirmed (every enabled container must start and none fail),
        /// in seconds.
        #[arg(long, default_value_t = gantry_device::firmware::DEFAULT_FIRMWARE_PROBATION_MS / 1000)]
        firmware_probation: u64,
    },
    /// Prints the device's id and public key (created on first use), for
    /// an operator to pre-authorize on the update server.
    Identity {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gantry-device: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let state = &cli.state;
    match cli.command {
        Command::Init { trust, vendor, class, max_containers, slot_mib } => {
            let root = read(&trust)?;
            let vendor_id = vendor_id_from_domain(&vendor);
            let mut device_id = [0u8; 16];
            rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut device_id)
                .context("no randomness for the device id")?;
            let identity = Identity { device_id, vendor_id, class_id: class_id_from_model(&vendor_id, &class) };
            let geometry = Geometry { max_containers, slot_size: slot_mib << 20, ..Geometry::default() };
            Device::init(state, geometry, &identity, &root, supervisor::unix_now())?;
            println!("initialized {} (device {}, {vendor} / {class})", state.display(), hex::encode(device_id));
        }
        Command::Install { envelope, module, blobs, json } => {
            let blobs = blobs
                .iter()
                .map(|b| {
                    let (name, path) = b.split_once('=').with_context(|| format!("--blob {b:?}: use NAME=PATH"))?;
                    Ok((name.to_owned(), PathBuf::from(path)))
                })
                .collect::<Result<Vec<_>>>()?;
            let device = Device::open(state)?;
            // A directory given as a blob is its canonical archive, as
            // `gantry-sign container` made it from the same directory.
            let mut archives = Vec::new();
            let blobs = blobs
                .into_iter()
                .map(|(name, path)| {
                    if !path.is_dir() {
                        return Ok((name, path));
                    }
                    if !gantry_signing::config::is_blob_name(&name) {
                        bail!("--blob {name:?}: not a blob name (1-63 of a-z, 0-9, '.', '_', '-')");
                    }
                    let tar = state.join(format!(".install.{name}.tar"));
                    let _ = std::fs::remove_file(&tar);
                    let file = std::fs::File::create_new(&tar).with_context(|| format!("writing {}", tar.display()))?;
                    gantry_signing::tree::archive(&path, std::io::BufWriter::new(file))
                        .with_context(|| format!("blob {name}: {}", path.display()))?;
                    archives.push(tar.clone());
                    Ok((name, tar))
                })
                .collect::<Result<Vec<_>>>();
            let event = blobs.and_then(|blobs| install(&device, &envelope, &module, &blobs));
            for tar in archives {
                let _ = std::fs::remove_file(tar);
            }
            let event = event?;
            for f in device.sandbox().cache_faults() {
                eprintln!("note: the compiled module was not cached ({}); it is compiled again at start", f.error);
            }
            return Ok(print_outcome(&event, json));
        }
        Command::Start { name } => Device::open(state)?.store().set_enabled(&name, true)?,
        Command::Stop { name } => Device::open(state)?.store().set_enabled(&name, false)?,
        Command::Remove { name } => {
            Device::open(state)?.remove(&name)?;
            println!("removed {name} and its files (log, kv, /data)");
        }
        Command::Firmware { envelope, image, json } => {
            let device = Device::open(state)?;
            let outcome = stage_firmware(&device, &envelope, &image);
            let said = match &outcome {
                Ok(m) => json!({
                    "event": "firmware-requested",
                    "sequence": m.sequence,
                    "manifest_digest": hex::encode(m.manifest_digest),
                    "image_digest": hex::encode(m.image_digest),
                }),
                Err(e) => json!({ "event": "refused", "reason": format!("{e:#}") }),
            };
            if json {
                println!("{said}");
            } else if let Ok(m) = &outcome {
                println!(
                    "firmware sequence {} staged and requested: the next power-on (`run`) boots it on trial",
                    m.sequence
                );
            } else {
                println!("refused: {}", said["reason"].as_str().unwrap_or_default());
            }
            return Ok(if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Status { json } => {
            let device = Device::open(state)?;
            let store = device.store();
            let (table, faults, root) = (store.table()?, store.table_faults()?, store.trust_root()?);
            drop(store);
            let (version, expires) = (root.root().version, root.root().expires);
            let expired = root.check_unexpired(supervisor::unix_now()).is_err();
            let store = device.store();
            let boot = store.boot_keys()?.map(|keys| (keys.version, store.boot_state()));
            drop(store);
            let boot = match boot {
                None => json!(null),
                Some((keys, Err(e))) => json!({ "keys_version": keys, "error": e.to_string() }),
                Some((keys, Ok((swap, st)))) => json!({
                    "keys_version": keys,
                    "swap_state": format!("{swap:?}"),
                    "security_counter": st.security_counter,
                    "boot_count": st.boot_count,
                    "last_failure": st.last_failure.map(|f| f.code()),
                }),
            };
            if json {
                let list: Vec<_> = table
                    .containers
                    .iter()
                    .map(|c| {
                        let mut v = container_json(c);
                        v["last_run"] = device.last_run(&c.name).map_or(json!(null), |l| l.to_json());
                        v
                    })
                    .collect();
                let faults: Vec<String> = faults.iter().map(ToString::to_string).collect();
                let root = json!({ "version": version, "expires": expires, "expired": expired });
                let status =
                    json!({ "containers": list, "table_faults": faults, "trust_root": root, "bootloader": boot });
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "trust root version {version}{}",
                if expired { ", EXPIRED: installs are refused until a newer root arrives" } else { "" }
            );
            if !boot.is_null() {
                println!(
                    "bootloader: keys of trust root {}, {}, anti-rollback counter {}, {} boots{}",
                    boot["keys_version"],
                    boot["swap_state"].as_str().unwrap_or("unknown state"),
                    boot["security_counter"],
                    boot["boot_count"],
                    boot["last_failure"].as_str().map(|f| format!(", last update failed: {f}")).unwrap_or_default()
                );
            }
            for f in &faults {
                println!("slot table fault: {f} (its previous state is used)");
            }
            if table.containers.is_empty() {
                println!("no containers installed");
            } else {
                println!(
                    "{:<20} {:<12} {:>8} {:<4} {:<10} {:>8} {:<8}",
                    "NAME", "VERSION", "SEQ", "SLOT", "PHASE", "COUNTER", "ENABLED"
                );
                for c in &table.containers {
                    let (version, seq) = c.running().map_or(("-".into(), 0), |i| (i.version.clone(), i.sequence));
                    println!(
                        "{:<20} {:<12} {:>8} {:<4} {:<10} {:>8} {:<8}",
                        c.name,
                        version,
                        seq,
                        format!("{:?}", c.active),
                        c.phase.name(),
                        c.counter,
                        c.enabled
                    );
                }
            }
        }
        Command::Logs { name, tail } => {
            if Device::open(state)?.store().table()?.get(&name).is_none() {
                bail!("no container named {name:?} (`gantry-device status` lists them)");
            }
            // Both generations, oldest first (a line may span the two).
            let io = gantry_device::sandbox::HostIo::under(&state.join("containers").join(&name));
            let bytes: Vec<u8> = io.log_files().iter().flat_map(|f| std::fs::read(f).unwrap_or_default()).collect();
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
            for line in &lines[skip..] {
                println!("{line}");
            }
        }
        Command::Identity { json } => {
            let device = Device::open(state)?;
            let id = agent::device_id(&device)?;
            let key = agent::device_key(state)?;
            let pem = gantry_keys::KeySource::public_key(&key).to_spki_pem();
            if json {
                println!("{}", json!({ "device_id": id, "public_key": pem }));
            } else {
                print!("device {id}\n{pem}");
            }
        }
        Command::Run { once: Some(name), .. } => return run_once(state, &name),
        Command::Run { once: None, seconds, json, server, enroll_token, poll_seconds, firmware_probation } => {
            let agent = server.map(|server| AgentConfig {
                server,
                enrollment_token: enroll_token,
                schedule: Schedule { default_interval: Duration::from_secs(poll_seconds), ..Schedule::default() },
                caps: Caps::default(),
                call_timeout: Duration::from_secs(30),
            });
            run_device(state, seconds, json, agent, Duration::from_secs(firmware_probation))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `gantry-device run --once NAME`: the container's active slot verified
/// from flash, its entry point run once with stdout and stderr apart (this
/// process's own), the outcome kept for `status`, and its exit code
/// returned. A release on probation without a health check is confirmed
/// when the run succeeds, as the supervisor would; nothing is reverted.
fn run_once(state: &Path, name: &str) -> Result<ExitCode> {
    let device = Device::open(state)?;
    let Some(_running) = device.runner_lock()? else {
        bail!("another gantry-device run uses {}: one process runs containers at a time", state.display());
    };
    let Some(r) = device.store().runnable(name)? else {
        bail!("{name} is not installed, or not enabled, or its slot does not verify (`gantry-device status`)");
    };
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let outcome = device.run_once(&r, gantry_device::sandbox::Stdio::Inherit, stop)?;
    device.record_run(name, r.release.sequence, &outcome, supervisor::unix_now())?;
    let on_probation = device.store().table()?.get(name).is_some_and(|c| matches!(c.phase, Phase::Probation { .. }));
    if on_probation
        && r.release.config.health.is_none()
        && !outcome.is_failure(&r.release.config)
        && let Some(event) = device.store().confirm(name)?
    {
        eprintln!("{}", describe(&event));
    }
    Ok(match outcome {
        // As a shell sees an exit code: its low 8 bits.
        gantry_device::sandbox::Outcome::Exited(code) => ExitCode::from(code as u8),
        other => {
            eprintln!("{name}: {}{}", other.kind(), other.detail().map(|d| format!(": {d}")).unwrap_or_default());
            ExitCode::from(134)
        }
    })
}

/// `gantry-device run`: power-on after power-on until `seconds` pass or a
/// signal comes. Each power-on runs the bootloader's decision over the
/// flash, then the supervisor (unless the firmware is in recovery) and the
/// pull agent when a server is given; reports go to stdout. Firmware
/// booted on trial is watched for `probation`: confirmed if every enabled
/// container starts and none fails, else the device restarts and the
/// bootloader reverts it.
fn run_device(
    state: &Path,
    seconds: Option<u64>,
    json: bool,
    agent: Option<AgentConfig>,
    probation: Duration,
) -> Result<()> {
    let device = Device::open(state)?;
    let Some(_running) = device.runner_lock()? else {
        bail!("another gantry-device run uses {}: one process runs containers at a time", state.display());
    };
    for w in device.warnings() {
        eprintln!("warning: {w}");
    }
    for f in device.store().table_faults()? {
        if json {
            println!("{}", json!({ "report": "table-fault", "fault": f.to_string() }));
        } else {
            eprintln!("slot table fault: {f} (its previous state is used)");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let until = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    loop {
        let restart = power_on(&device, state, &stop, until, json, agent.clone(), probation)?;
        if !restart || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
    }
}

/// One power-on: the boot decision, then the runtime until `stop`,
/// `until`, or a restart the firmware's trial or the agent asks for (then
/// true).
fn power_on(
    device: &Device,
    state: &Path,
    stop: &Arc<AtomicBool>,
    until: Option<Instant>,
    json: bool,
    agent: Option<AgentConfig>,
    probation: Duration,
) -> Result<bool> {
    let clock = SystemClock::new();
    let PowerOn { firmware, outcome, mut probation } = device.power_on(clock.now_ms(), probation.as_millis() as u64)?;
    println!("{}", if json { firmware_json(&firmware).to_string() } else { firmware_text(&firmware) });
    // This power-on's own stop: the device's, or a restart.
    let halt = Arc::new(AtomicBool::new(false));
    let restart = AtomicBool::new(false);
    let (tx, rx) = channel();
    let (control, commands) = channel();
    let (outcomes, to_report) = channel();
    let agent = agent.map(|config| Agent::new(config, device, state)).transpose()?;
    let recovery = matches!(firmware, Firmware::Recovery(_));
    // A firmware update requested before this power-on: what became of it.
    if let Some(outcome) = outcome {
        println!(
            "{}",
            if json { firmware_outcome_json(&outcome).to_string() } else { firmware_outcome_text(&outcome) }
        );
        let _ = outcomes.send(Outcome::Firmware(outcome));
    }
    std::thread::scope(|s| {
        // In recovery nothing the firmware would run is started; the agent
        // can still bring a verified image.
        let supervisor = if recovery {
            drop(tx);
            None
        } else {
            let halt = halt.clone();
            let clock = Arc::new(SystemClock::new());
            Some(s.spawn(move || supervisor::run_controlled(device, clock, &halt, &tx, commands)))
        };
        if let Some(agent) = agent {
            s.spawn(|| pull(agent, device, &halt, &restart, &control, to_report, json));
        }
        loop {
            let report = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => Some(r),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) if recovery => {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if let Some(r) = &report {
                println!("{}", if json { report_json(r).to_string() } else { report_text(r) });
            }
            if let Some(p) = probation.as_mut() {
                let sequence = p.record().sequence;
                let event = report.as_ref().and_then(TrialEvent::from_report);
                let said = match device.step_probation(p, event.as_ref(), clock.now_ms()) {
                    Ok(ProbationStep::Pending) => None,
                    Ok(ProbationStep::Confirmed(outcome)) => {
                        if let Some(o) = outcome {
                            let _ = outcomes.send(Outcome::Firmware(o));
                        }
                        probation = None;
                        Some(json!({ "report": "firmware-confirmed", "sequence": sequence }))
                    }
                    Ok(ProbationStep::Failed(reason)) => {
                        restart.store(true, Ordering::Relaxed);
                        probation = None;
                        Some(json!({ "report": "firmware-trial-failed", "sequence": sequence, "reason": reason }))
                    }
                    // Tried again at the next report or tick, never forgotten.
                    Err(e) => Some(json!({ "report": "firmware-confirm-failed", "error": e.to_string() })),
                };
                if let Some(said) = said {
                    println!("{}", if json { said.to_string() } else { format!("firmware: {said}") });
                }
            }
            if let Some(Report::Update(e)) = report {
                let _ = outcomes.send(Outcome::Container(e));
            }
            if restart.load(Ordering::Relaxed) {
                halt.store(true, Ordering::Relaxed);
            }
            if until.is_some_and(|u| Instant::now() >= u) || stop.load(Ordering::Relaxed) {
                halt.store(true, Ordering::Relaxed);
            }
            let finished = supervisor.as_ref().is_none_or(|t| t.is_finished());
            if finished && halt.load(Ordering::Relaxed) {
                break;
            }
        }
        halt.store(true, Ordering::Relaxed);
        match supervisor.map(|t| t.join()) {
            None | Some(Ok(Ok(()))) => Ok(restart.load(Ordering::Relaxed)),
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(_)) => bail!("the supervisor panicked"),
        }
    })
}

fn firmware_text(f: &Firmware) -> String {
    match f {
        Firmware::Unknown | Firmware::Absent => "firmware: none (the runtime runs on its own)".into(),
        Firmware::Running(r) => format!(
            "firmware: sequence {}{}, boot {}{}",
            r.sequence,
            if r.trial { " on trial" } else { "" },
            r.boot_count,
            r.last_failure.map(|f| format!(", last update failed: {}", f.code())).unwrap_or_default()
        ),
        Firmware::Recovery(reason) => {
            format!("firmware: RECOVERY ({}): nothing verifies; containers are not started", reason.code())
        }
    }
}

fn firmware_outcome_text(o: &FirmwareOutcome) -> String {
    match o {
        FirmwareOutcome::Confirmed { sequence, .. } => format!("firmware: update to sequence {sequence} confirmed"),
        FirmwareOutcome::Reverted { sequence, reason, .. } => {
            format!("firmware: update to sequence {sequence} did not take: {reason}")
        }
    }
}

fn firmware_outcome_json(o: &FirmwareOutcome) -> serde_json::Value {
    match o {
        FirmwareOutcome::Confirmed { manifest_digest, sequence } => json!({
            "report": "firmware-update", "outcome": "confirmed", "sequence": sequence,
            "manifest_digest": hex::encode(manifest_digest),
        }),
        FirmwareOutcome::Reverted { manifest_digest, sequence, reason } => json!({
            "report": "firmware-update", "outcome": "reverted", "sequence": sequence,
            "manifest_digest": hex::encode(manifest_digest), "reason": reason,
        }),
    }
}

fn firmware_json(f: &Firmware) -> serde_json::Value {
    match f {
        Firmware::Unknown | Firmware::Absent => json!({ "report": "firmware", "state": "none" }),
        Firmware::Running(r) => json!({
            "report": "firmware",
            "state": if r.trial { "trial" } else { "running" },
            "sequence": r.sequence,
            "manifest_digest": hex::encode(r.manifest_digest),
            "image_digest": hex::encode(r.image_digest),
            "boot_count": r.boot_count,
            "security_counter": r.security_counter,
            "last_failure": r.last_failure.map(|f| f.code()),
        }),
        Firmware::Recovery(reason) => json!({ "report": "firmware", "state": "recovery", "reason": reason.code() }),
    }
}

/// An outcome the agent reports.
enum Outcome {
    /// A container's confirm or revert.
    Container(UpdateEvent),
    /// What became of a firmware update.
    Firmware(FirmwareOutcome),
}

/// The agent's loop: poll, install, have the supervisor reload what was
/// switched, restart the device into requested firmware, report the
/// outcomes the supervisor reaches, wait until the agent's next check-in
/// (which a reported outcome brings forward).
fn pull(
    mut agent: Agent,
    device: &Device,
    stop: &AtomicBool,
    restart: &AtomicBool,
    control: &Sender<Control>,
    outcomes: Receiver<Outcome>,
    json: bool,
) {
    let say = |e: &AgentEvent| match e {
        AgentEvent::Unchanged => {}
        e if json => println!("{}", agent_json(e)),
        e => println!("agent: {}", agent_text(e)),
    };
    while !stop.load(Ordering::Relaxed) {
        // A panic in a cycle (a bug, or an input nobody thought of) must not
        // end the updates until the next restart: it is reported, and the
        // loop backs off and tries again with a fresh cycle.
        let cycle = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent.cycle(device, &mut |e| say(&e))))
            .unwrap_or_else(|panic| agent.panicked(device, panic_message(panic.as_ref())));
        match cycle {
            Ok(cycle) => {
                for name in cycle.switched {
                    let _ = control.send(Control::Reload(name));
                }
                if cycle.restart {
                    restart.store(true, Ordering::Relaxed);
                    return;
                }
            }
            Err(e) => {
                let wait = agent.next_check_in().saturating_duration_since(Instant::now());
                eprintln!("agent: {e}; next try in {wait:?}");
            }
        }
        while Instant::now() < agent.next_check_in() && !stop.load(Ordering::Relaxed) {
            match outcomes.recv_timeout(Duration::from_millis(100)) {
                Ok(Outcome::Container(e)) => agent.report_event(device, &e),
                Ok(Outcome::Firmware(o)) => agent.report_firmware(device, &o),
                Err(_) => {}
            }
        }
    }
}

/// What a caught panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// `gantry-device firmware`: the image streams from its file into DFU,
/// its size checked against the signed one before a byte is read.
fn stage_firmware(device: &Device, envelope: &Path, image: &Path) -> Result<gantry_boot::Measurement> {
    use std::io::Read as _;
    let envelope_len = std::fs::metadata(envelope).with_context(|| format!("reading {}", envelope.display()))?.len();
    if envelope_len > gantry_boot::image::MAX_ENVELOPE as u64 {
        bail!("an envelope of {envelope_len} bytes is larger than {}", gantry_boot::image::MAX_ENVELOPE);
    }
    let store = device.store();
    let mut staging = store.stage_firmware(&read(envelope)?, supervisor::unix_now())?;
    let mut file = std::fs::File::open(image).with_context(|| format!("reading {}", image.display()))?;
    let len = file.metadata()?.len();
    if len != staging.image_size {
        bail!("{} does not match the release: {len} bytes, signed {}", image.display(), staging.image_size);
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        store.firmware_write(&mut staging, &buf[..n])?;
    }
    Ok(store.finish_firmware(staging)?)
}

/// `gantry-device install`. Sizes first: the envelope's from the file
/// system, then the payloads' from the signed manifest (does the release
/// fit a slot, are the files the sizes signed), before a byte of them is
/// read; then they stream into the slot a chunk at a time.
fn install(device: &Device, envelope: &Path, module: &Path, blobs: &[(String, PathBuf)]) -> Result<UpdateEvent> {
    let refused = |name: &str, reason: Refusal| Ok(UpdateEvent::Refused { name: name.to_owned(), reason });
    let size = |p: &Path| std::fs::metadata(p).with_context(|| format!("reading {}", p.display())).map(|m| m.len());
    let (envelope_len, max_envelope) = (size(envelope)?, gantry_boot::image::MAX_ENVELOPE as u64);
    if envelope_len > max_envelope {
        return refused(
            "?",
            Refusal::Unverified(format!("an envelope of {envelope_len} bytes is above {max_envelope}")),
        );
    }
    let (now, envelope) = (supervisor::unix_now(), read(envelope)?);
    let trust = device.store().trust(now)?;
    let release = match bundle::verify_envelope(&envelope, &trust, 0) {
        Ok(r) => r,
        Err(e) => return refused("?", Refusal::Unverified(e.to_string())),
    };
    let name = release.config.name.as_str();
    let needed = bundle::slot_bytes(envelope.len(), release.payloads.iter().map(|p| p.len));
    let slot = u64::from(device.store().layout().slot_size);
    if needed > slot {
        return refused(name, Refusal::TooLarge { size: needed, slot });
    }
    let files = payload_files(&release, module, blobs)?;
    for (p, path) in release.payloads.iter().zip(&files) {
        let len = size(path)?;
        if len != p.len {
            let why = format!("{} does not match the release: {len} bytes, signed {}", path.display(), p.len);
            return refused(name, Refusal::Unverified(why));
        }
    }
    let mut staging = match device.stage(&envelope, now)? {
        Stage::Writing(s) => s,
        Stage::Refused(event) => return Ok(event),
    };
    let mut buf = vec![0u8; 64 * 1024];
    while let Some((i, at)) = staging.position() {
        let path = &files[i];
        let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        file.seek(std::io::SeekFrom::Start(at))?;
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        let result = match n {
            0 => Err(format!("{} ended early", path.display())),
            n => match device.stage_write(&mut staging, &buf[..n]) {
                Err(DeviceError::Store(store::Error::Bundle(e @ BundleError::PayloadMismatch { .. }))) => {
                    Err(e.to_string())
                }
                other => Ok(other?),
            },
        };
        if let Err(why) = result {
            device.store().abandon(name);
            return refused(name, Refusal::Unverified(why));
        }
    }
    Ok(device.finish(staging, supervisor::unix_now())?)
}

/// Module first, then each blob in the order the manifest names them (the
/// order they are stored in the slot). The manifest is read unverified here
/// only to order the files; `install` verifies everything.
/// The file of each payload the release names, in component order: the
/// module, then each blob by its name.
fn payload_files(release: &VerifiedRelease, module: &Path, blobs: &[(String, PathBuf)]) -> Result<Vec<PathBuf>> {
    let files = release
        .payloads
        .iter()
        .map(|p| match &p.blob {
            None => Ok(module.to_owned()),
            Some(name) => blobs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, path)| path.clone())
                .with_context(|| format!("the release needs --blob {name}=PATH")),
        })
        .collect::<Result<Vec<_>>>()?;
    if files.len() != blobs.len() + 1 {
        bail!("the release names {} blobs, {} were given", files.len() - 1, blobs.len());
    }
    Ok(files)
}

fn container_json(c: &Container) -> serde_json::Value {
    let slot = |i: Option<&gantry_device::table::Installed>| {
        i.map(|i| json!({ "version": i.version, "sequence": i.sequence, "manifest_digest": hex::encode(i.manifest_digest) }))
    };
    json!({
        "name": c.name,
        "active_slot": format!("{:?}", c.active),
        "running": slot(c.running()),
        "standby": slot(c.standby()),
        "phase": c.phase.name(),
        "reason": match &c.phase { Phase::Reverted { reason } => Some(reason.to_string()), _ => None },
        "counter": c.counter,
        "enabled": c.enabled,
    })
}

/// Prints an install's outcome; exit 1 if it was refused.
fn print_outcome(event: &UpdateEvent, json: bool) -> ExitCode {
    let refused = matches!(event, UpdateEvent::Refused { .. });
    if json {
        println!("{}", event_json(event));
    } else if refused {
        eprintln!("refused: {}", describe(event));
    } else {
        println!("{}", describe(event));
    }
    if refused { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn describe(e: &UpdateEvent) -> String {
    match e {
        UpdateEvent::Refused { name, reason } if name == "?" => reason.to_string(),
        UpdateEvent::Refused { name, reason } => format!("{name}: {reason}"),
        UpdateEvent::Switched { name, version, sequence, slot } => {
            format!(
                "{name} {version} (sequence {sequence}) installed in slot {slot:?}; on probation until `run` confirms it"
            )
        }
        UpdateEvent::Confirmed { name, sequence } => format!("{name}: sequence {sequence} confirmed"),
        UpdateEvent::Reverted { name, from, to, reason } => match to {
            Some(to) => format!("{name}: reverted from sequence {from} to {to}: {reason}"),
            None => format!("{name}: sequence {from} failed and was disabled: {reason}"),
        },
        UpdateEvent::Removed { name } => format!("{name} removed"),
    }
}

fn event_json(e: &UpdateEvent) -> serde_json::Value {
    match e {
        UpdateEvent::Refused { name, reason } => {
            json!({ "event": "refused", "name": name, "code": reason.code(), "reason": reason.to_string() })
        }
        UpdateEvent::Switched { name, version, sequence, slot } => {
            json!({ "event": "switched", "name": name, "version": version, "sequence": sequence, "slot": format!("{slot:?}") })
        }
        UpdateEvent::Confirmed { name, sequence } => {
            json!({ "event": "confirmed", "name": name, "sequence": sequence })
        }
        UpdateEvent::Reverted { name, from, to, reason } => {
            json!({ "event": "reverted", "name": name, "from": from, "to": to, "reason": reason })
        }
        UpdateEvent::Removed { name } => json!({ "event": "removed", "name": name }),
    }
}

fn agent_text(e: &AgentEvent) -> String {
    match e {
        AgentEvent::LoggedIn { enrolled: true } => "enrolled and logged in".into(),
        AgentEvent::LoggedIn { enrolled: false } => "logged in".into(),
        AgentEvent::Unchanged => "nothing new".into(),
        AgentEvent::Ticket { assignments } => format!("ticket verified: {assignments} assignment(s)"),
        AgentEvent::Skipped { stream, reason } => format!("{stream}: not installed: {reason}"),
        AgentEvent::Update(u) => describe(u),
        AgentEvent::TrustRoot { accepted: Some(v), .. } => format!("trust root version {v} accepted"),
        AgentEvent::TrustRoot { refused, .. } => {
            format!("trust roots from the server refused: {}", refused.as_deref().unwrap_or("nothing newer"))
        }
        AgentEvent::ReportFailed { stream, state, reason } => {
            format!("{stream}: the {state} report did not reach the server: {reason}")
        }
        AgentEvent::FirmwareRequested { sequence } => {
            format!("firmware sequence {sequence} written and requested: restarting into it")
        }
    }
}

/// One JSON object per agent event, `{"agent": <kind>, ...}`: the kinds
/// are stable names a script can match.
fn agent_json(e: &AgentEvent) -> serde_json::Value {
    match e {
        AgentEvent::LoggedIn { enrolled } => json!({ "agent": "logged-in", "enrolled": enrolled }),
        AgentEvent::Unchanged => json!({ "agent": "unchanged" }),
        AgentEvent::Ticket { assignments } => json!({ "agent": "ticket", "assignments": assignments }),
        AgentEvent::Skipped { stream, reason } => json!({ "agent": "skipped", "stream": stream, "reason": reason }),
        AgentEvent::Update(u) => json!({ "agent": "update", "update": event_json(u) }),
        AgentEvent::TrustRoot { accepted, refused } => {
            json!({ "agent": "trust-root", "accepted": accepted, "refused": refused })
        }
        AgentEvent::ReportFailed { stream, state, reason } => {
            json!({ "agent": "report-failed", "stream": stream, "state": state.as_str(), "reason": reason })
        }
        AgentEvent::FirmwareRequested { sequence } => json!({ "agent": "firmware-requested", "sequence": sequence }),
    }
}

fn report_text(r: &Report) -> String {
    match r {
        Report::Started { name, sequence } => format!("{name}: started (sequence {sequence})"),
        Report::Ended { name, outcome } => format!("{name}: ended: {outcome:?}"),
        Report::Unhealthy { name } => format!("{name}: health check failed"),
        Report::GaveUp { name, reason } => format!("{name}: not restarted: {reason}"),
        Report::StoreFailed { name, error } => {
            format!("{name}: the update decision was not written ({error}); retrying")
        }
        Report::LogDropped { name, bytes } => format!("{name}: {bytes} bytes of log lost (could not be written)"),
        Report::NotCached { name, error } => {
            format!("{name}: compiled module not cached ({error}); running it from memory")
        }
        Report::Update(e) => describe(e),
    }
}

fn report_json(r: &Report) -> serde_json::Value {
    match r {
        Report::Started { name, sequence } => json!({ "report": "started", "name": name, "sequence": sequence }),
        Report::Ended { name, outcome } => json!({
            "report": "ended",
            "name": name,
            "outcome": outcome.kind(),
            "exit_code": outcome.exit_code(),
            "detail": outcome.detail(),
        }),
        Report::Unhealthy { name } => json!({ "report": "unhealthy", "name": name }),
        Report::GaveUp { name, reason } => json!({ "report": "gave-up", "name": name, "reason": reason }),
        Report::StoreFailed { name, error } => json!({ "report": "store-failed", "name": name, "error": error }),
        Report::LogDropped { name, bytes } => json!({ "report": "log-dropped", "name": name, "bytes": bytes }),
        Report::NotCached { name, error } => json!({ "report": "not-cached", "name": name, "error": error }),
        Report::Update(e) => json!({ "report": "update", "update": event_json(e) }),
    }
}
