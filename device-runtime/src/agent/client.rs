//! The update server's device API (docs/api.md), over a blocking HTTP
//! client: every call has a deadline, every body a size cap, and every
//! answer is parsed into a typed value or a typed error.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use ureq::Agent as Http;
use ureq::http::StatusCode;

use super::AgentError;

/// Largest JSON answer accepted from the server.
const MAX_JSON: u64 = 256 * 1024;

/// A session with one server.
pub(crate) struct Client {
    http: Http,
    base: String,
}

/// What a check-in answered.
pub(crate) enum Checkin {
    /// Nothing changed since the ETag sent.
    Unchanged { poll_after: Option<u64> },
    /// A new desired state, with its ticket.
    Changed(CheckinResponse),
}

/// The desired state (the unsigned part only says where to fetch; the
/// ticket decides what may be installed).
#[derive(Debug, Deserialize)]
pub(crate) struct CheckinResponse {
    pub ticket: String,
    pub etag: String,
    pub poll_after: u64,
    #[serde(default)]
    pub assignments: Vec<AssignmentView>,
}

/// One assignment as the server lists it.
#[derive(Debug, Deserialize)]
pub(crate) struct AssignmentView {
    pub stream: String,
    pub envelope: BlobRef,
}

/// Where a blob is.
#[derive(Debug, Deserialize)]
pub(crate) struct BlobRef {
    pub sha256: String,
    pub size: u64,
}

/// One entry of the inventory a check-in carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InventoryItem {
    /// Container name.
    pub stream: String,
    /// SUIT digest of the manifest it runs, hex.
    pub manifest_digest: String,
    /// Its sequence number.
    pub sequence: u64,
    /// `probation`, `confirmed`, `reverted`, `disabled`.
    pub state: String,
}

/// A progress or result report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Container name.
    pub stream: String,
    /// The release it concerns, hex.
    pub manifest_digest: String,
    /// `downloading`, `installing`, `installed`, `failed`, `reverted`...
    pub state: String,
    /// 0-100 while downloading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<i64>,
    /// Why, for failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Deserialize)]
struct Challenge {
    challenge: String,
}

#[derive(Deserialize)]
pub(crate) struct Login {
    pub token: String,
    pub expires_in: u64,
}

/// The server's error body: `{"error": code, "message": text}`.
#[derive(Deserialize)]
struct Problem {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
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
        let c: Challenge = self.post_json(
            "challenge",
            "/api/v1/device/challenge",
            None,
            &serde_json::json!({ "device_id": device_id }),
        )?;
        B64.decode(c.challenge).map_err(|_| AgentError::Protocol("challenge: not base64".into()))
    }

    pub(crate) fn login(&self, device_id: &str, challenge: &[u8], proof: &[u8]) -> Result<Login, AgentError> {
        let body = serde_json::json!({
            "device_id": device_id, "challenge": B64.encode(challenge), "proof": B64.encode(proof),
        });
        self.post_json("login", "/api/v1/device/login", None, &body)
    }

    pub(crate) fn enroll(
        &self,
        device_id: &str,
        public_key: &str,
        enrollment_token: &str,
        challenge: &[u8],
        proof: &[u8],
    ) -> Result<Login, AgentError> {
        let body = serde_json::json!({
            "device_id": device_id, "public_key": public_key, "enrollment_token": enrollment_token,
            "challenge": B64.encode(challenge), "proof": B64.encode(proof),
        });
        self.post_json("enroll", "/api/v1/device/enroll", None, &body)
    }

    pub(crate) fn checkin(
        &self,
        token: &str,
        nonce: &[u8],
        inventory: &[InventoryItem],
        etag: Option<&str>,
    ) -> Result<Checkin, AgentError> {
        let mut req =
            self.http.post(self.url("/api/v1/device/checkin")).header("authorization", format!("Bearer {token}"));
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        let body = serde_json::json!({ "nonce": B64.encode(nonce), "inventory": inventory });
        let r = req.send_json(&body).map_err(transport("check-in"))?;
        if r.status() == StatusCode::NOT_MODIFIED {
            let poll_after =
                r.headers().get("gantry-poll-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            return Ok(Checkin::Unchanged { poll_after });
        }
        Ok(Checkin::Changed(Self::answer("check-in", r)?))
    }

    pub(crate) fn report(&self, token: &str, report: &Report) -> Result<(), AgentError> {
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
    let detail = serde_json::from_slice::<Problem>(body)
        .ok()
        .and_then(|p| {
            let text = p.message?;
            Some(match p.error {
                Some(c) => format!("{text} ({c})"),
                None => text,
            })
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    match status {
        StatusCode::UNAUTHORIZED => AgentError::Unauthorized(format!("{what}: {detail}")),
        StatusCode::FORBIDDEN => AgentError::Forbidden(format!("{what}: {detail}")),
        s => AgentError::Status { what: what.to_owned(), status: s.as_u16(), detail },
    }
}
