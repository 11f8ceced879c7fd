//! The `Range` header of a blob request: one byte range (RFC 9110 §14).
//!
//! Several ranges in one request are answered with the whole blob (a
//! server may ignore `Range`), as is anything that does not parse; a range
//! starting at or past the end is unsatisfiable (416).

use std::ops::Range;

/// What to send for a `Range` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole blob (200).
    Full,
    /// These bytes, end exclusive (206).
    Partial(Range<u64>),
    /// Nothing (416, `Content-Range: bytes */size`).
    Unsatisfiable,
}

/// Interprets `header` for a blob of `size` bytes.
pub fn answer(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) { None } else { s.parse().ok() }
    };
    match (first.trim().is_empty(), num(first), num(last)) {
        // "-n": the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial(size.saturating_sub(n)..size)
            }
        }
        // "a-": from a to the end.
        (false, Some(a), None) if last.trim().is_empty() => {
            if a >= size {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial(a..size)
            }
        }
        // "a-b", inclusive.
        (false, Some(a), Some(b)) if a <= b => {
            if a >= size {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial(a..b.min(size - 1) + 1)
            }
        }
        _ => RangeAnswer::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::RangeAnswer::*;
    use super::answer;

    #[test]
    fn single_ranges() {
        assert_eq!(answer(None, 10), Full);
        assert_eq!(answer(Some("bytes=0-0"), 10), Partial(0..1));
        assert_eq!(answer(Some("bytes=2-5"), 10), Partial(2..6));
        assert_eq!(answer(Some("bytes=2-"), 10), Partial(2..10));
        assert_eq!(answer(Some("bytes=9-"), 10), Partial(9..10));
        assert_eq!(answer(Some("bytes=5-100"), 10), Partial(5..10));
        assert_eq!(answer(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(answer(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(answer(Some(" bytes= 1 - 2 "), 10), Partial(1..3));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(answer(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(answer(Some("bytes=10-20"), 10), Unsatisfiable);
        assert_eq!(answer(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(answer(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(answer(Some("bytes=-5"), 0), Unsatisfiable);
        // Not understood: the whole blob.
        for h in ["bytes=5-2", "bytes=0-1,3-4", "items=0-1", "bytes=a-b", "bytes=", "bytes=-", "bytes=1", "bytes=+1-2"]
        {
            assert_eq!(answer(Some(h), 10), Full, "{h}");
        }
        assert_eq!(answer(Some("bytes=99999999999999999999-"), 10), Full);
    }
}
