//! Printing that survives a reader that went away.
//!
//! `println!` panics when stdout is a pipe whose reader has exited
//! (`gantry-sign inspect --json app.suit | head -c1`). Here a closed pipe
//! only ends the output: the command still finishes and exits with the code
//! its result deserves (a refused envelope is still exit 1). Any other write
//! error on stdout is an I/O error (exit 2). Nothing is reported about
//! stderr failing: there is nowhere left to report it.

use std::fmt::Arguments;
use std::io::{self, Write as _};

use anyhow::{Context as _, Result};

/// Writes one line to stdout, like `println!`; use through [`outln!`].
pub(crate) fn stdout_line(args: Arguments<'_>) -> Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{args}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

/// Writes one line to stderr, like `eprintln!`; use through [`errln!`].
pub(crate) fn stderr_line(args: Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// `println!` that returns `Result` instead of panicking; a closed pipe is `Ok`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::stderr_line(format_args!($($arg)*))
    };
}

pub(crate) use {errln, outln};
