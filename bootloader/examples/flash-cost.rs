//! Flash operations per update: Gantry against a plain embassy-boot update
//! on the same simulated flash (figures in docs/benchmarks.md, section
//! "Bootloader").
//!
//! ```text
//! cargo run --release -p gantry-boot --example flash-cost
//! ```
//!
//! For each firmware size, one device per bootloader, both with 4-byte
//! words, 4 KiB pages and the same partitions (`Layout::packed`, ACTIVE just
//! large enough for Gantry's slot image: firmware plus signed envelope). Each
//! starts with an old firmware in ACTIVE and no update pending; the counts
//! start after that. One complete update is:
//!
//! - **Gantry**: stage (`begin_update`, `write_update` per 4 KiB chunk,
//!   `request_update`, through [`Rig::stage`]), one boot (verify DFU, swap,
//!   verify ACTIVE, record the trial boot), then `confirm` from the runtime.
//! - **embassy-boot**: `BlockingFirmwareUpdater::write_firmware` per 4 KiB
//!   chunk and `mark_updated`, one `BootLoader::prepare_boot` (swap), then
//!   `BlockingFirmwareState::mark_booted` from the runtime.
//!
//! Also counted: a boot with nothing to do (after the update); a revert: a
//! second update whose image is never confirmed, from the reboot after the
//! swap to the old image running again; and 1000 boots with nothing to do,
//! for the wear of Gantry's boot map (one record per boot, a page erase when
//! a page fills). Gantry is configured with one trial
//! boot (`max_trial_boots = 1`), which is embassy-boot's rule: the first
//! reboot without a confirmation reverts.
//!
//! Counted by the simulator: page erases, word writes, bytes read.
//! Embassy-boot gets the bare firmware; Gantry the slot image
//! (`gantry_boot::image`), which is a few hundred bytes longer.

use std::process::ExitCode;

use embassy_boot::{
    BlockingFirmwareState, BlockingFirmwareUpdater, BootLoader, BootLoaderConfig, FirmwareUpdaterConfig, State,
};
use gantry_boot::layout::Region;
use gantry_boot::sim::{FlashStats, Part, Rig, Signer, firmware};
use gantry_boot::{BootOutcome, BootRecord};
use gantry_keys::KeyType;

const WORD: usize = 4;
const PAGE: usize = 4096;
type Device = Rig<WORD, PAGE>;

/// Boots counted for the amortized cost of Gantry's boot map (one record per boot).
const IDLE_BOOTS: u64 = 1000;

const SIZES: [(&str, usize); 3] = [("64 KiB", 64 << 10), ("256 KiB", 256 << 10), ("1 MiB", 1 << 20)];

/// Counts of one phase on both bootloaders.
#[derive(Clone, Copy, Default)]
struct Phase {
    gantry: FlashStats,
    embassy: FlashStats,
}

/// Everything measured for one firmware size.
struct Costs {
    size: &'static str,
    active_pages: u32,
    image_len: usize,
    stage: Phase,
    boot: Phase,
    confirm: Phase,
    idle_boot: Phase,
    revert: Phase,
    /// `IDLE_BOOTS` boots with nothing to do, after the revert.
    many_boots: Phase,
}

impl Costs {
    fn update(&self) -> Phase {
        let sum = |f: fn(&Phase) -> FlashStats| {
            [f(&self.stage), f(&self.boot), f(&self.confirm)].iter().fold(FlashStats::default(), |a, s| FlashStats {
                page_erases: a.page_erases + s.page_erases,
                word_writes: a.word_writes + s.word_writes,
                bytes_read: a.bytes_read + s.bytes_read,
            })
        };
        Phase { gantry: sum(|p| p.gantry), embassy: sum(|p| p.embassy) }
    }
}

/// Gantry's device: signed images, the bootloader and the runtime's control handle.
struct Gantry {
    rig: Device,
    signer: Signer,
}

impl Gantry {
    /// A device with `old` (sequence 1) in ACTIVE, booted and confirmed.
    fn new(size: usize) -> (Gantry, usize) {
        let signer = Signer::new(KeyType::Ed25519);
        // The slot image's length sets ACTIVE's size; the envelope does not
        // depend on the partitions, so a one-page device can sign it.
        let probe = Device::new(1, false, vec![signer.public_key()]);
        let image_len = signer.image(&probe, &firmware(size, 2), 2).len();
        let pages = image_len.div_ceil(PAGE) as u32;
        let mut rig = Device::new(pages, false, vec![signer.public_key()]);
        rig.max_trial_boots = 1;
        let old = signer.image(&rig, &firmware(size, 1), 1);
        rig.program_active(&old);
        let record = expect_boot(rig.boot(), "factory image boots");
        rig.control().and_then(|mut c| c.confirm(&record)).expect("factory image confirmed");
        (Gantry { rig, signer }, image_len)
    }

    fn stats(&self) -> FlashStats {
        self.rig.flash(|f| {
            let s = f.stats();
            f.reset_stats();
            s
        })
    }

    fn image(&self, size: usize, sequence: u64) -> Vec<u8> {
        self.signer.image(&self.rig, &firmware(size, sequence), sequence)
    }

    fn stage(&self, image: &[u8]) -> FlashStats {
        self.stats();
        self.rig.stage(image).expect("staging the update");
        self.stats()
    }

    fn boot(&self, want_sequence: u64, want_trial: bool) -> (BootRecord, FlashStats) {
        self.stats();
        let record = expect_boot(self.rig.boot(), "the device boots");
        assert_eq!((record.sequence, record.trial), (want_sequence, want_trial), "booted the expected image");
        (record, self.stats())
    }

    fn confirm(&self, record: &BootRecord) -> FlashStats {
        self.stats();
        self.rig.control().and_then(|mut c| c.confirm(record)).expect("confirming the update");
        self.stats()
    }
}

fn expect_boot(outcome: Result<BootOutcome, gantry_boot::BootError>, what: &str) -> BootRecord {
    match outcome {
        Ok(BootOutcome::Boot(record)) => record,
        Ok(BootOutcome::Recovery(e)) => panic!("{what}: recovery instead ({e})"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// A plain embassy-boot device on the same flash geometry and partitions:
/// a [`Rig`] used only for its flash and [`Rig::partition`], with
/// embassy-boot's own updater and bootloader over the partitions.
struct Embassy {
    rig: Device,
}

impl Embassy {
    /// A device with firmware `old` in ACTIVE and STATE marked booted.
    fn new(active_pages: u32, old: &[u8]) -> Embassy {
        let rig = Device::new(active_pages, false, vec![]);
        rig.program_active(old);
        let device = Embassy { rig };
        device.confirm();
        device
    }

    fn part(&self, r: Region) -> Part<'_, WORD, PAGE> {
        self.rig.partition(r)
    }

    fn stats(&self) -> FlashStats {
        self.rig.flash(|f| {
            let s = f.stats();
            f.reset_stats();
            s
        })
    }

    fn stage(&self, firmware: &[u8]) -> FlashStats {
        self.stats();
        let mut word = [0u8; WORD];
        let config =
            FirmwareUpdaterConfig { dfu: self.part(self.rig.layout.dfu), state: self.part(self.rig.layout.state) };
        let mut updater = BlockingFirmwareUpdater::new(config, &mut word);
        for (i, chunk) in firmware.chunks(PAGE).enumerate() {
            updater.write_firmware(i * PAGE, chunk).expect("writing the update");
        }
        updater.mark_updated().expect("marking the update");
        self.stats()
    }

    fn boot(&self, want: State) -> FlashStats {
        self.stats();
        self.prepare_boot(want);
        self.stats()
    }

    /// One power-on: embassy-boot's `prepare_boot`, which must find `want`.
    fn prepare_boot(&self, want: State) {
        let l = &self.rig.layout;
        let mut bl = BootLoader::new(BootLoaderConfig {
            active: self.part(l.active),
            dfu: self.part(l.dfu),
            state: self.part(l.state),
        });
        // The same page-copy buffer as Gantry's simulated boot.
        let mut page = [0u8; 256];
        let state = bl.prepare_boot(&mut page).expect("prepare_boot");
        assert!(core::mem::discriminant(&state) == core::mem::discriminant(&want), "unexpected embassy-boot state");
    }

    fn confirm(&self) -> FlashStats {
        self.stats();
        let mut word = [0u8; WORD];
        BlockingFirmwareState::new(self.part(self.rig.layout.state), &mut word).mark_booted().expect("mark_booted");
        self.stats()
    }
}

fn measure(size: &'static str, len: usize) -> Costs {
    let (g, image_len) = Gantry::new(len);
    let e = Embassy::new(g.rig.layout.active.size / PAGE as u32, &firmware(len, 1));
    assert_eq!(e.rig.layout, g.rig.layout, "both devices have the same partitions");
    let mut costs = Costs {
        size,
        active_pages: g.rig.layout.active.size / PAGE as u32,
        image_len,
        stage: Phase::default(),
        boot: Phase::default(),
        confirm: Phase::default(),
        idle_boot: Phase::default(),
        revert: Phase::default(),
        many_boots: Phase::default(),
    };

    // One complete update to sequence 2.
    let update = g.image(len, 2);
    costs.stage.gantry = g.stage(&update);
    let (record, stats) = g.boot(2, true);
    costs.boot.gantry = stats;
    costs.confirm.gantry = g.confirm(&record);
    assert_eq!(g.rig.active(update.len()), update, "Gantry: the update is in ACTIVE");
    costs.idle_boot.gantry = g.boot(2, false).1;

    let new = firmware(len, 2);
    costs.stage.embassy = e.stage(&new);
    costs.boot.embassy = e.boot(State::Swap);
    costs.confirm.embassy = e.confirm();
    assert_eq!(e.rig.active(len), new, "embassy-boot: the update is in ACTIVE");
    costs.idle_boot.embassy = e.boot(State::Boot);

    // An update that is never confirmed: count from the reboot after its swap.
    let bad = g.image(len, 3);
    g.stage(&bad);
    g.boot(3, true);
    costs.revert.gantry = g.boot(2, false).1;
    assert_eq!(g.rig.active(update.len()), update, "Gantry: reverted to sequence 2");

    e.stage(&firmware(len, 3));
    e.boot(State::Swap);
    costs.revert.embassy = e.boot(State::Swap);
    assert_eq!(e.rig.active(len), new, "embassy-boot: reverted");

    // Wear of plain boots: Gantry's boot map fills and erases its pages.
    g.stats();
    e.stats();
    for _ in 0..IDLE_BOOTS {
        expect_boot(g.rig.boot(), "an idle boot");
        e.prepare_boot(State::Revert);
    }
    costs.many_boots = Phase { gantry: g.stats(), embassy: e.stats() };
    costs
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..0x10_0000 => format!("{:.1} KiB", n as f64 / 1024.0),
        0x10_0000..0x4000_0000 => format!("{:.2} MiB", n as f64 / (1 << 20) as f64),
        _ => format!("{:.2} GiB", n as f64 / (1 << 30) as f64),
    }
}

/// Gantry / embassy-boot; "n/a" when embassy-boot does none of it.
fn ratio(g: u64, e: u64) -> String {
    match (g, e) {
        (_, 0) => "n/a".into(),
        _ if g >= 100 * e => format!("{:.0}", g as f64 / e as f64),
        _ => format!("{:.2}", g as f64 / e as f64),
    }
}

fn row(label: &str, p: &Phase) {
    let (g, e) = (p.gantry, p.embassy);
    println!(
        "{label:<24} | {:>6} {:>7} {:>11} | {:>6} {:>7} {:>11} | {:>6} {:>6} {:>6}",
        g.page_erases,
        g.word_writes,
        bytes(g.bytes_read),
        e.page_erases,
        e.word_writes,
        bytes(e.bytes_read),
        ratio(g.page_erases, e.page_erases),
        ratio(g.word_writes, e.word_writes),
        ratio(g.bytes_read, e.bytes_read),
    );
}

fn header(first: &str) {
    println!(
        "{first:<24} | {:>27} | {:>27} | {:>20}",
        "Gantry: erase write read", "embassy: erase write read", "ratio: erase write read"
    );
}

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("usage: flash-cost\n\nPrints flash operations per update, Gantry against plain embassy-boot.");
        return ExitCode::SUCCESS;
    }
    if let Some(a) = std::env::args().nth(1) {
        eprintln!("flash-cost: unexpected argument {a:?} (it takes none; see --help)");
        return ExitCode::from(2);
    }
    println!(
        "flash geometry: {WORD}-byte words, {} KiB pages; erases and writes are page erases and word writes",
        PAGE >> 10
    );
    let all: Vec<Costs> = SIZES.iter().map(|&(name, len)| measure(name, len)).collect();

    println!();
    println!("one complete update (stage + boot with swap + confirm):");
    header("firmware (ACTIVE)");
    for c in &all {
        row(&format!("{} ({} pages)", c.size, c.active_pages), &c.update());
    }

    println!();
    println!("by phase:");
    header("firmware / phase");
    for c in &all {
        println!("{} firmware, slot image {} B, ACTIVE {} pages", c.size, c.image_len, c.active_pages);
        row("  stage", &c.stage);
        row("  boot (swap)", &c.boot);
        row("  confirm", &c.confirm);
        row("  next boot, no update", &c.idle_boot);
        row("  revert (1 boot)", &c.revert);
        row(&format!("  {IDLE_BOOTS} boots, no update"), &c.many_boots);
    }
    ExitCode::SUCCESS
}
