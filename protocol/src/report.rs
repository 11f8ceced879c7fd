//! Reports: the progress and the result of an update, from the device.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::limits::{MAX_DETAIL, MAX_PROGRESS, valid_digest, valid_stream};

/// Where an update of one stream is. The wire strings never change: the
/// server stores them (`device_reports.state`, `device_streams.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum ReportState {
    /// Fetching the release.
    Downloading,
    /// Fetched and verified.
    Downloaded,
    /// Writing it to the standby slot.
    Installing,
    /// Installed and confirmed healthy (a result).
    Installed,
    /// Not installed: refused or broken (a result).
    Failed,
    /// Installed, then reverted (a result).
    Reverted,
}

impl ReportState {
    /// Every state, in wire order.
    pub const ALL: [ReportState; 6] = [
        ReportState::Downloading,
        ReportState::Downloaded,
        ReportState::Installing,
        ReportState::Installed,
        ReportState::Failed,
        ReportState::Reverted,
    ];

    /// Its wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Downloading => "downloading",
            ReportState::Downloaded => "downloaded",
            ReportState::Installing => "installing",
            ReportState::Installed => "installed",
            ReportState::Failed => "failed",
            ReportState::Reverted => "reverted",
        }
    }

    /// Whether it ends an update (`installed`, `failed`, `reverted`): the
    /// server records it as the stream's state and moves rollouts with it.
    pub fn is_result(self) -> bool {
        matches!(self, ReportState::Installed | ReportState::Failed | ReportState::Reverted)
    }
}

crate::error::wire_text!(ReportState);

/// `POST /api/v1/device/reports`: progress or the result of an update.
///
/// Built with [`Report::new`]: its `detail` can only be set through
/// [`Report::with_detail`], which keeps it within [`MAX_DETAIL`] bytes, so a
/// device cannot build a report the server refuses for its length. A
/// report read from the network is checked with [`Report::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Report {
    /// Stream, 1 to [`crate::MAX_STREAM`] bytes.
    pub stream: String,
    /// The release it concerns: manifest digest, 64 hex digits.
    pub manifest_digest: String,
    /// Where the update is.
    pub state: ReportState,
    /// 0 to [`MAX_PROGRESS`] percent, while downloading or installing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<i64>,
    /// Why, for failures: at most [`MAX_DETAIL`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// Marks a detail that was cut to fit.
const ELLIPSIS: char = '…';

impl Report {
    /// A report without progress or detail.
    pub fn new(stream: impl Into<String>, manifest_digest: impl Into<String>, state: ReportState) -> Report {
        Report { stream: stream.into(), manifest_digest: manifest_digest.into(), state, progress: None, detail: None }
    }

    /// With `text` as its detail, cut on a character boundary (and ended
    /// with `…`) if it is longer than [`MAX_DETAIL`] bytes.
    pub fn with_detail(mut self, text: &str) -> Report {
        self.detail = Some(if text.len() <= MAX_DETAIL {
            text.to_owned()
        } else {
            let mut end = MAX_DETAIL - ELLIPSIS.len_utf8();
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mut cut = String::with_capacity(MAX_DETAIL);
            cut.push_str(&text[..end]);
            cut.push(ELLIPSIS);
            cut
        });
        self
    }

    /// With a progress percentage, at most [`MAX_PROGRESS`].
    pub fn with_progress(mut self, percent: u8) -> Report {
        self.progress = Some(i64::from(percent).min(MAX_PROGRESS));
        self
    }

    /// Its detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Checks the report against the limits the server enforces.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !valid_stream(&self.stream) {
            return Err(ValidationError::Stream { len: self.stream.len() });
        }
        if !valid_digest(&self.manifest_digest) {
            return Err(ValidationError::Digest);
        }
        if let Some(value) = self.progress
            && !(0..=MAX_PROGRESS).contains(&value)
        {
            return Err(ValidationError::Progress { value });
        }
        if let Some(d) = &self.detail
            && d.len() > MAX_DETAIL
        {
            return Err(ValidationError::DetailTooLong { len: d.len() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_STREAM;

    fn digest() -> String {
        "0f".repeat(32)
    }

    #[test]
    fn a_long_multibyte_detail_is_cut_to_fit_and_validates() {
        // 5,000 characters of 1 to 4 bytes each: 12,500 bytes.
        let text: String = "aé€😀".repeat(1250);
        assert_eq!(text.chars().count(), 5000);
        let r = Report::new("app", digest(), ReportState::Failed).with_detail(&text);
        let d = r.detail().unwrap();
        assert!(d.len() <= MAX_DETAIL, "{} bytes", d.len());
        assert!(d.len() > MAX_DETAIL - 8, "cut no shorter than needed: {} bytes", d.len());
        assert!(d.ends_with(ELLIPSIS) && text.starts_with(d.trim_end_matches(ELLIPSIS)));
        assert_eq!(r.validate(), Ok(()));
        // And the server reads exactly what was sent.
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.validate(), Ok(()));
    }

    #[test]
    fn a_detail_that_fits_is_kept() {
        let exact = "é".repeat(MAX_DETAIL / 2);
        assert_eq!(Report::new("app", digest(), ReportState::Failed).with_detail(&exact).detail(), Some(&*exact));
        assert_eq!(Report::new("app", digest(), ReportState::Installed).detail(), None);
    }

    #[test]
    fn every_report_state_round_trips() {
        let wire = ["downloading", "downloaded", "installing", "installed", "failed", "reverted"];
        for (state, text) in ReportState::ALL.into_iter().zip(wire) {
            assert_eq!(state.as_str(), text);
            assert_eq!(state.to_string(), text);
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(text));
            assert_eq!(serde_json::from_value::<ReportState>(text.into()).unwrap(), state);
            assert_eq!(text.parse::<ReportState>(), Ok(state));
            assert_eq!(state.is_result(), matches!(text, "installed" | "failed" | "reverted"));
        }
        assert!("Installed".parse::<ReportState>().is_err());
        assert!(serde_json::from_str::<ReportState>("\"unknown\"").is_err());
    }

    #[test]
    fn validation_refuses_each_bad_field() {
        let ok = Report::new("app", digest(), ReportState::Downloading).with_progress(40);
        assert_eq!(ok.validate(), Ok(()));
        let with = |f: &dyn Fn(&mut Report)| {
            let mut r = ok.clone();
            f(&mut r);
            r.validate()
        };
        assert_eq!(with(&|r| r.stream.clear()), Err(ValidationError::Stream { len: 0 }));
        let long = "s".repeat(MAX_STREAM + 1);
        assert_eq!(with(&|r| r.stream = long.clone()), Err(ValidationError::Stream { len: MAX_STREAM + 1 }));
        assert_eq!(with(&|r| r.manifest_digest.truncate(63)), Err(ValidationError::Digest));
        assert_eq!(with(&|r| r.manifest_digest = "x".repeat(64)), Err(ValidationError::Digest));
        assert_eq!(with(&|r| r.progress = Some(101)), Err(ValidationError::Progress { value: 101 }));
        assert_eq!(with(&|r| r.progress = Some(-1)), Err(ValidationError::Progress { value: -1 }));
        // Only the network can carry a detail that is too long.
        let wire = serde_json::json!({"stream": "app", "manifest_digest": digest(), "state": "failed",
                                      "detail": "x".repeat(MAX_DETAIL + 1)});
        let r: Report = serde_json::from_value(wire).unwrap();
        assert_eq!(r.validate(), Err(ValidationError::DetailTooLong { len: MAX_DETAIL + 1 }));
        assert_eq!(Report::new("app", digest(), ReportState::Downloading).with_progress(250).progress, Some(100));
        // Unknown fields (the server's own `at`, say) are refused.
        let at = serde_json::json!({"stream": "app", "manifest_digest": digest(), "state": "failed", "at": 5});
        assert!(serde_json::from_value::<Report>(at).is_err());
    }
}
