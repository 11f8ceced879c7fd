//! The full power-cut sweep of the boot path (docs/bootloader.md).
//!
//! ```text
//! cargo run --release -p gantry-boot --example power-cut-sweep -- [--seeds N] [--stride N] [--pages N]
//! ```
//!
//! Prints one line per phase and cut model: operations in the phase, cuts
//! tried, violations; then the first violations, if any. Exits 1 on any
//! violation.

use std::process::ExitCode;
use std::time::Instant;

use gantry_boot::sim::{PhaseReport, SweepOptions, sweep};

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a number")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: power-cut-sweep [--seeds N (default 4)] [--min-cuts N (default 0)] [--stride N (default 1)] [--pages N (default 8)]\n\n\
             --seeds     seeds per torn cut model\n\
             --min-cuts  raise the seeds of short phases until each gets this many cuts per torn model\n\
             --stride    cut at every Nth flash operation\n\
             --pages     pages in the ACTIVE slot"
        );
        return ExitCode::SUCCESS;
    }
    let parsed = (|| {
        Ok::<_, String>((
            arg(&args, "--seeds", 4)?,
            arg(&args, "--stride", 1)?,
            arg(&args, "--pages", 8)?,
            arg(&args, "--min-cuts", 0)?,
        ))
    })();
    let (seeds, stride, pages, min_cuts) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("power-cut-sweep: {e}");
            return ExitCode::from(2);
        }
    };
    let mut total = (0, 0);
    type Sweep = fn(SweepOptions) -> Vec<PhaseReport>;
    let geometries: [(&str, bool, Sweep); 2] = [
        ("4-byte words, 1 KiB pages (nRF52-like)", false, sweep::<4, 1024>),
        ("8-byte write-once words, 2 KiB pages (STM32L4-like)", true, sweep::<8, 2048>),
    ];
    for (name, write_once, run) in geometries {
        let started = Instant::now();
        let opts = SweepOptions { active_pages: pages as u32, seeds, stride, write_once, min_cuts };
        println!(
            "== {name}: ACTIVE {pages} pages, every {stride} op(s), {seeds} seeds per torn model (more until {min_cuts} cuts)"
        );
        println!("{:<30} {:<12} {:>7} {:>8} {:>10}", "phase", "model", "ops", "cuts", "violations");
        let reports = run(opts);
        for r in &reports {
            println!("{:<30} {:<12} {:>7} {:>8} {:>10}", r.phase.name(), r.model.name(), r.ops, r.cuts, r.violations);
            total.0 += r.cuts;
            total.1 += r.violations;
        }
        for r in reports.iter().filter(|r| r.violations > 0) {
            for e in &r.examples {
                println!("  {} / {}: {e}", r.phase.name(), r.model.name());
            }
        }
        println!("({:.1} s)", started.elapsed().as_secs_f64());
    }
    println!("total: {} cuts, {} violations", total.0, total.1);
    if total.1 == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
