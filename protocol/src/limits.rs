//! The bounds of the device API: the device writes within them, the server
//! refuses what is outside them, and `openapi.json` states them (tested).

/// Header of a check-in answer (`200` and `304`) carrying the seconds until
/// the next check-in. HTTP header names are case-insensitive; this is the
/// lowercase form both sides use.
pub const POLL_AFTER_HEADER: &str = "gantry-poll-after";

/// Most inventory entries in one check-in.
pub const MAX_INVENTORY: usize = 64;

/// Longest stream (container) name, in bytes; at least 1. The same as the
/// deployment ticket's `MAX_STREAM_NAME` (the server asserts it at compile
/// time), so every stream a ticket can name can be reported.
pub const MAX_STREAM: usize = 64;

/// The stream firmware releases travel in (the name of their one SUIT
/// component): its inventory entry may carry the measured boot record.
pub const FIRMWARE_STREAM: &str = "firmware";

/// Longest reason code of a boot measurement's `last_failure`, in bytes
/// (gantry-boot's longest is 24).
pub const MAX_BOOT_REASON: usize = 32;

/// Longest `detail` of a report, in bytes of UTF-8 (not characters).
pub const MAX_DETAIL: usize = 1024;

/// Highest `progress` of a report (a percentage; the lowest is 0).
pub const MAX_PROGRESS: i64 = 100;

/// A manifest or blob digest is this many hex digits (SHA-256).
pub const DIGEST_HEX_LEN: usize = 64;

/// A SUIT vendor or class id (a UUID) is this many hex digits.
pub const UUID_HEX_LEN: usize = 32;

/// Longest token lifetime a device believes, in seconds (one day). The
/// server's default is 15 minutes; an `expires_in` above this only makes
/// the device log in again sooner than it had to. What matters is that a
/// number from the network never overflows `Instant::now() + expires_in`.
pub const MAX_TOKEN_TTL: u64 = 24 * 60 * 60;

/// Longest wait before the next check-in a device accepts from the server,
/// in seconds (one day); the device's own schedule may cap it lower.
pub const MAX_POLL_AFTER: u64 = 24 * 60 * 60;

/// Most trust roots one check-in answer carries (a device more rotations
/// behind catches up over several check-ins).
pub const MAX_TRUST_ROOTS: usize = 16;

/// Whether no name may hold `c`: the control characters (C0, DEL, C1: a
/// newline forges a log line, an escape drives a terminal, a NUL cuts a C
/// string) and Unicode's bidirectional formatting characters (they make a
/// name read differently from what it is; "Trojan Source", CVE-2021-42574).
pub fn is_control_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `s` holds no [`is_control_char`] character.
pub fn printable(s: &str) -> bool {
    !s.chars().any(is_control_char)
}

/// Whether `s` is a stream name the API takes: 1 to [`MAX_STREAM`] bytes,
/// none of them a control character ([`printable`]).
pub fn valid_stream(s: &str) -> bool {
    (1..=MAX_STREAM).contains(&s.len()) && printable(s)
}

/// Whether `s` is a digest as the API takes it: [`DIGEST_HEX_LEN`]
/// lowercase hex digits, as devices and the server write them (one digest,
/// one spelling: the server compares and stores them as text).
pub fn valid_digest(s: &str) -> bool {
    s.len() == DIGEST_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_digests() {
        assert!(valid_stream("a") && valid_stream(&"s".repeat(MAX_STREAM)));
        assert!(!valid_stream("") && !valid_stream(&"s".repeat(MAX_STREAM + 1)));
        assert!(valid_digest(&"ab".repeat(32)) && !valid_digest(&"AB".repeat(32)));
        assert!(!valid_digest(&"ab".repeat(31)) && !valid_digest(&"zz".repeat(32)) && !valid_digest(""));
        // Lengths are in bytes: 33 two-byte characters are 66 bytes.
        assert!(!valid_digest(&"é".repeat(32)));
        assert!(!valid_stream(&"é".repeat(33)));
        // Control and bidirectional formatting characters are refused.
        for bad in ["a\nb", "a\0", "\u{1b}[31m", "a\u{7f}", "\u{85}", "abc\u{202E}fed", "x\u{2066}y"] {
            assert!(!valid_stream(bad), "{bad:?}");
        }
        assert!(valid_stream("sensor-filter") && valid_stream("é"));
    }
}
