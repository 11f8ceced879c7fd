//! `gantry-sign`: the release tool. Thin: argument parsing, files and
//! output; the formats and checks live in `gantry-signing` and `gantry-keys`.

mod cli;
mod commands;
mod files;
mod trust;

use std::process::ExitCode;

use clap::Parser as _;

/// A verification that ran and said no: exit code 1, not 2.
#[derive(Debug)]
pub(crate) struct Invalid(pub(crate) String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(invalid) = e.downcast_ref::<Invalid>() {
                eprintln!("invalid: {invalid}");
                ExitCode::from(1)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    }
}
