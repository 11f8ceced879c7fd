//! The update server's device API (docs/api.md), over a blocking HTTP
//! client: every call has a deadline, every body a size cap, and every
//! answer is parsed into a typed value or a typed error. The bodies are
//! `gantry-protocol`'s, the server's own types; a request is checked with
//! their `validate()` before it is sent, so what the server would refuse
//! fails here, with the rule named.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use gantry_protocol::{
    ChallengeRequest, ChallengeResponse, CheckinRequest, EnrollRequest, ErrorBody, InventoryItem, LoginRequest,
    LoginResponse, POLL_AFTER_HEADER, Report, parse_poll_after,
};
use serde::{Deserialize, Serialize};
use ureq::Agent as Http;
use ureq::http::StatusCode;

use super::AgentError;
use super::machine::Checkin;

/// Largest JSON answer accepted from the server.
const MAX_JSON: u64 = 256 * 1024;

/// A session with one server.
pub(crate) struct Client {
    http: Http,
    base: String,
}

fn transport(what: &str) -> impl FnOnce(ureq::Error) -> AgentError + '_ {
    move |e| AgentError::Transport(format!("{what}: {e}"))
}

impl Client {
    /// A client of the server at `base`; each API call must finish within
    /// `call_timeout` (downloads have their own deadlines).
    pub(crate) fn new(base: &str, call_timeout: Duration) -> Result<Client, AgentError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(AgentError::Config(format!("server URL {base:?}: use http:// or https://")));
        }
        let http: Http = Http::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(call_timeout))
            .timeout_connect(Some(call_timeout.min(Duration::from_secs(10))))
            .max_redirects(0)
            .user_agent(concat!("gantry-device/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client { http, base })
    }

    pub(crate) fn http(&self) -> &Http {
        &self.http
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Reads a JSON answer, or turns an error status into a typed error.
    fn answer<T: for<'de> Deserialize<'de>>(
        what: &str,
        mut r: ureq::http::Response<ureq::Body>,
    ) -> Result<T, AgentError> {
        let status = r.status();
        let body = r.body_mut().with_config().limit(MAX_JSON).read_to_vec().map_err(transport(what))?;
        if !status.is_success() {
            return Err(problem(what, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| AgentError::Protocol(format!("{what}: malformed answer: {e}")))
    }

    fn post_json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        path: &str,
        token: Option<&str>,
        body: &impl Serialize,
    ) -> Result<T, AgentError> {
        let mut req = self.http.post(self.url(path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        Self::answer(what, req.send_json(body).map_err(transport(what))?)
    }

    pub(crate) fn challenge(&self, device_id: &str) -> Result<Vec<u8>, AgentError> {
        let body = ChallengeRequest { device_id: device_id.to_owned() };
        let c: ChallengeResponse = self.post_json("challenge", "/api/v1/device/challenge", None, &body)?;
        B64.decode(c.challenge).map_err(|_| AgentError::Protocol("challenge: not base64".into()))
    }

    pub(crate) fn login(&self, device_id: &str, challenge: &[u8], proof: &[u8]) -> Result<LoginResponse, AgentError> {
        let body = LoginRequest {
            device_id: device_id.to_owned(),
            challenge: B64.encode(challenge),
            proof: B64.encode(proof),
        };
        self.post_json("login", "/api/v1/device/login", None, &body)
    }

    pub(crate) fn enroll(
        &self,
        device_id: &str,
        public_key: &str,
        enrollment_token: &str,
        challenge: &[u8],
        proof: &[u8],
    ) -> Result<LoginResponse, AgentError> {
        let body = EnrollRequest {
            device_id: device_id.to_owned(),
            public_key: public_key.to_owned(),
            enrollment_token: enrollment_token.to_owned(),
            challenge: B64.encode(challenge),
            proof: B64.encode(proof),
        };
        self.post_json("enroll", "/api/v1/device/enroll", None, &body)
    }

    pub(crate) fn checkin(
        &self,
        token: &str,
        nonce: &[u8],
        inventory: &[InventoryItem],
        trust_root_version: u64,
        etag: Option<&str>,
    ) -> Result<Checkin, AgentError> {
        let body = CheckinRequest {
            nonce: B64.encode(nonce),
            inventory: inventory.to_vec(),
            trust_root_version: Some(trust_root_version),
        };
        body.validate()?;
        let mut req =
            self.http.post(self.url("/api/v1/device/checkin")).header("authorization", format!("Bearer {token}"));
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        let r = req.send_json(&body).map_err(transport("check-in"))?;
        if r.status() == StatusCode::NOT_MODIFIED {
            let poll_after =
                r.headers().get(POLL_AFTER_HEADER).and_then(|v| v.to_str().ok()).and_then(parse_poll_after);
            return Ok(Checkin::Unchanged { poll_after });
        }
        Ok(Checkin::Changed(Self::answer("check-in", r)?))
    }

    /// Sends a report; one the server would refuse is not sent
    /// ([`AgentError::Invalid`]), and a refusal comes back as an error.
    pub(crate) fn report(&self, token: &str, report: &Report) -> Result<(), AgentError> {
        report.validate()?;
        let r = self
            .http
            .post(self.url("/api/v1/device/reports"))
            .header("authorization", format!("Bearer {token}"))
            .send_json(report)
            .map_err(transport("report"))?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let mut r = r;
        let body = r.body_mut().with_config().limit(MAX_JSON).read_to_vec().unwrap_or_default();
        Err(problem("report", status, &body))
    }
}

fn problem(what: &str, status: StatusCode, body: &[u8]) -> AgentError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .map(|p| format!("{} ({})", p.message, p.error))
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    match status {
        StatusCode::UNAUTHORIZED => AgentError::Unauthorized(format!("{what}: {detail}")),
        StatusCode::FORBIDDEN => AgentError::Forbidden(format!("{what}: {detail}")),
        s => AgentError::Status { what: what.to_owned(), status: s.as_u16(), detail },
    }
}

#[cfg(test)]
mod tests {
    use gantry_protocol::{MAX_STREAM, ReportState, ValidationError};

    use super::*;

    #[test]
    fn a_report_the_server_would_refuse_is_not_sent() {
        // Validation comes before any connection (nothing listens there).
        let c = Client::new("http://127.0.0.1:9", Duration::from_millis(200)).unwrap();
        let r = Report::new("s".repeat(MAX_STREAM + 1), "ab".repeat(32), ReportState::Failed);
        let e = c.report("token", &r).unwrap_err();
        assert!(matches!(e, AgentError::Invalid(ValidationError::Stream { len }) if len == MAX_STREAM + 1), "{e}");
    }

    #[test]
    fn a_refusal_keeps_the_servers_words_and_code() {
        let body = br#"{"error": "bad-request", "message": "report: detail: 2000 bytes, at most 1024"}"#;
        match problem("report", StatusCode::BAD_REQUEST, body) {
            AgentError::Status { status: 400, detail, .. } => {
                assert_eq!(detail, "report: detail: 2000 bytes, at most 1024 (bad-request)")
            }
            e => panic!("{e}"),
        }
        match problem("check-in", StatusCode::FORBIDDEN, b"not json") {
            AgentError::Forbidden(why) => assert_eq!(why, "check-in: not json"),
            e => panic!("{e}"),
        }
    }
}
