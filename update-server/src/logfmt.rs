//! Text log lines that cannot be forged: every field value is written with
//! its control and bidirectional formatting characters escaped
//! (`gantry_protocol::is_control_char`: `\n` as `\n`, ESC as `\u{1b}`), so
//! a device-controlled string (a report's stream, a detail, a token name)
//! can neither start a line of its own nor drive the terminal that shows
//! it. The JSON format escapes them as JSON does.

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// `text`, with every control character written as a Rust escape.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if gantry_protocol::is_control_char(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The field formatter of the text log format: `name=value` pairs after
/// the message, values escaped.
pub fn fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(|w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
        let text = format!("{value:?}");
        match field.name() {
            "message" => write!(w, "{}", Escaped(&text)),
            name => write!(w, "{name}={}", Escaped(&text)),
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let forged = "app\n2026-12-04T00:00:00Z  INFO release accepted \u{1b}[2K\u{202E}";
        let out = Escaped(forged).to_string();
        assert!(!out.chars().any(gantry_protocol::is_control_char), "{out}");
        assert_eq!(out, "app\\n2026-12-04T00:00:00Z  INFO release accepted \\u{1b}[2K\\u{202e}");
        assert_eq!(Escaped("plain é text").to_string(), "plain é text");
    }

    #[test]
    fn a_logged_field_cannot_start_a_line() {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Buffer::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(fields())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let name = "ci\n2026-12-04T00:00:00Z  INFO gantry_server: API token revoked by=token:admin";
            tracing::info!(name = %name, detail = ?"a\u{1b}]0;x\u{7}", "API token created\nforged");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("name=ci\\n2026") && text.contains("created\\nforged"), "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text}");
    }
}
