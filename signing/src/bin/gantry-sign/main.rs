//! `gantry-sign`: the release tool. Thin: argument parsing, files and
//! output; the formats and checks live in `gantry-signing` and `gantry-keys`.

mod cli;
mod commands;
mod files;
mod output;
mod trust;

use std::process::ExitCode;

use clap::Parser as _;
use serde_json::{Value, json};

use crate::output::{errln, outln};

/// A verification that ran and said no: exit code 1, not 2.
#[derive(Debug)]
pub(crate) struct Invalid {
    /// Stable, machine-readable cause (`gantry_signing::Error::code`, or a
    /// `trust-root-…` code for trust roots).
    pub(crate) code: &'static str,
    /// The reason, for people.
    pub(crate) message: String,
    /// Extra facts for `--json` (e.g. an expiry in Unix seconds).
    pub(crate) facts: serde_json::Map<String, Value>,
}

impl Invalid {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Invalid { code, message: message.into(), facts: serde_json::Map::new() }
    }

    /// Adds a fact to the `--json` form.
    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.facts.insert(key.to_owned(), value.into());
        self
    }

    /// The `--json` form of a refusal: `{"valid": false, "code": …, "error": …}`.
    pub(crate) fn to_json(&self) -> Value {
        let mut value = json!({"valid": false, "code": self.code, "error": self.message});
        if let Value::Object(map) = &mut value {
            map.extend(self.facts.clone());
        }
        value
    }
}

/// With `--json`, prints a refusal (an [`Invalid`] error) on stdout as
/// `{"valid": false, "code": …, "error": …}` before passing it on, so a
/// script always gets an answer; usage and I/O errors print nothing there.
pub(crate) fn print_refusal<T>(json: bool, result: anyhow::Result<T>) -> anyhow::Result<T> {
    if let (true, Err(e)) = (json, &result)
        && let Some(invalid) = e.downcast_ref::<Invalid>()
    {
        outln!("{}", invalid.to_json())?;
    }
    result
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Invalid {}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(invalid) = e.downcast_ref::<Invalid>() {
                errln!("invalid: {invalid}");
                ExitCode::from(1)
            } else {
                errln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    }
}
