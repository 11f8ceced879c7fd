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
    LoginResponse, MAX_POLL_AFTER, POLL_AFTER_HEADER, Report, parse_poll_after,
};
use serde::{Deserialize, Serialize};
use ureq::Agent as Http;
use ureq::http::header::RETRY_AFTER;
use ureq::http::{HeaderMap, StatusCode};

use super::AgentError;
use super::machine::Checkin;
use crate::store::Identity;

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
        let wait = retry_after(r.headers());
        let body = r.body_mut().with_config().limit(MAX_JSON).read_to_vec().map_err(transport(what))?;
        if !status.is_success() {
            return Err(problem(what, status, wait, &body));
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

    /// A check-in of the device `identity` (its vendor and class ids go
    /// with it: the server deploys a release only to devices of its class).
    pub(crate) fn checkin(
        &self,
        token: &str,
        identity: &Identity,
        nonce: &[u8],
        inventory: &[InventoryItem],
        trust_root_version: u64,
        etag: Option<&str>,
    ) -> Result<Checkin, AgentError> {
        let body = CheckinRequest {
            nonce: B64.encode(nonce),
            inventory: inventory.to_vec(),
            trust_root_version: Some(trust_root_version),
            vendor_id: Some(hex::encode(identity.vendor_id)),
            class_id: Some(hex::encode(identity.class_id)),
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
        let wait = retry_after(r.headers());
        let mut r = r;
        let body = r.body_mut().with_config().limit(MAX_JSON).read_to_vec().unwrap_or_default();
        Err(problem("report", status, wait, &body))
    }
}

/// A `Retry-After` of delta-seconds, at most [`MAX_POLL_AFTER`]. An
/// HTTP-date, or anything else that is not digits, is ignored: the
/// back-off alone decides then.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits that do not fit a u64 are a wait beyond any cap.
    let secs = value.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs.min(MAX_POLL_AFTER)))
}

fn problem(what: &str, status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> AgentError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .map(|p| format!("{} ({})", p.message, p.error))
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    match status {
        StatusCode::UNAUTHORIZED => AgentError::Unauthorized(format!("{what}: {detail}")),
        StatusCode::FORBIDDEN => AgentError::Forbidden(format!("{what}: {detail}")),
        // Rate-limited, or overloaded: the server says when to come back.
        s @ (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => {
            AgentError::Busy { what: what.to_owned(), status: s.as_u16(), retry_after, detail }
        }
        s => AgentError::Status { what: what.to_owned(), status: s.as_u16(), detail },
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use gantry_protocol::{MAX_STREAM, ReportState, ValidationError};

    use super::*;
    use crate::agent::fetch::{self, Caps, FetchError};

    /// A server on loopback that answers one connection per raw answer, in
    /// order, and hands back each request it read (head and body).
    fn serve(answers: Vec<String>) -> (String, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let answer = |answer: String| {
                let (mut conn, _) = listener.accept().unwrap();
                // The whole request is read before answering: closing on
                // unread bytes would reset the connection under the answer.
                let mut reader = BufReader::new(&conn);
                let (mut request, mut len) = (String::new(), 0);
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    request.push_str(&line);
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                request.push_str(std::str::from_utf8(&body).unwrap());
                conn.write_all(answer.as_bytes()).unwrap();
                request
            };
            answers.into_iter().map(answer).collect()
        });
        (base, server)
    }

    fn identity() -> Identity {
        Identity { device_id: [7; 16], vendor_id: [0xab; 16], class_id: [0x0c; 16] }
    }

    #[test]
    fn retry_after_is_delta_seconds_within_the_cap() {
        let parse = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, v.parse().unwrap());
            retry_after(&headers)
        };
        assert_eq!(parse("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse(&(MAX_POLL_AFTER + 1).to_string()), Some(Duration::from_secs(MAX_POLL_AFTER)));
        assert_eq!(parse(&"9".repeat(40)), Some(Duration::from_secs(MAX_POLL_AFTER)), "past u64: the cap");
        // An HTTP-date and what is not a number are ignored.
        for ignored in ["Wed, 21 Oct 2015 07:28:00 GMT", "-1", "+7", "7.5", "soon", ""] {
            assert_eq!(parse(ignored), None, "{ignored:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn a_429_is_busy_with_the_servers_retry_after_on_every_call() {
        let body = r#"{"error": "rate-limited", "message": "too many requests"}"#;
        let answer = format!(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (base, server) = serve(vec![answer; 6]);
        let c = Client::new(&base, Duration::from_secs(10)).unwrap();
        let report = Report::new("app", "ab".repeat(32), ReportState::Installed);
        let calls = [
            ("challenge", c.challenge("0707").err()),
            ("login", c.login("0707", b"challenge", b"proof").err()),
            ("enroll", c.enroll("0707", "PEM", "once", b"challenge", b"proof").err()),
            ("check-in", c.checkin("tok", &identity(), &[9; 16], &[], 1, None).err()),
            ("report", c.report("tok", &report).err()),
        ];
        for (call, error) in calls {
            match error {
                Some(AgentError::Busy { what, status: 429, retry_after, detail }) => {
                    assert_eq!((what.as_str(), retry_after), (call, Some(Duration::from_secs(7))));
                    assert_eq!(detail, "too many requests (rate-limited)");
                }
                e => panic!("{call}: {e:?}"),
            }
        }
        // A blob download too, through its own path.
        match fetch::stream(&c, &[1; 32], 0, 10, &Caps::default(), &mut |_| Ok(())) {
            Err(FetchError::Busy { status: 429, retry_after }) => assert_eq!(retry_after, Some(Duration::from_secs(7))),
            r => panic!("{r:?}"),
        }
        assert_eq!(server.join().unwrap().len(), 6);
        let e = AgentError::Busy {
            what: "check-in".into(),
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            detail: "too many requests (rate-limited)".into(),
        };
        assert_eq!(e.to_string(), "check-in: HTTP 429 (busy, retry after 7 s): too many requests (rate-limited)");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn a_503_without_retry_after_is_busy_with_no_wait_of_its_own() {
        let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy";
        let (base, server) = serve(vec![answer.to_owned()]);
        let c = Client::new(&base, Duration::from_secs(10)).unwrap();
        match c.challenge("0707") {
            Err(AgentError::Busy { status: 503, retry_after: None, detail, .. }) => assert_eq!(detail, "busy"),
            r => panic!("{r:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn a_check_in_carries_the_devices_vendor_and_class_ids() {
        let answer = format!("HTTP/1.1 304 Not Modified\r\n{POLL_AFTER_HEADER}: 30\r\nconnection: close\r\n\r\n");
        let (base, server) = serve(vec![answer]);
        let c = Client::new(&base, Duration::from_secs(10)).unwrap();
        let answer = c.checkin("tok", &identity(), &[9; 16], &[], 1, Some("\"e1\"")).unwrap();
        assert!(matches!(answer, Checkin::Unchanged { poll_after: Some(30) }), "{answer:?}");
        let request = server.join().unwrap().remove(0);
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /api/v1/device/checkin "), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["vendor_id"], "ab".repeat(16));
        assert_eq!(body["class_id"], "0c".repeat(16));
    }

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
        match problem("report", StatusCode::BAD_REQUEST, None, body) {
            AgentError::Status { status: 400, detail, .. } => {
                assert_eq!(detail, "report: detail: 2000 bytes, at most 1024 (bad-request)")
            }
            e => panic!("{e}"),
        }
        match problem("check-in", StatusCode::FORBIDDEN, None, b"not json") {
            AgentError::Forbidden(why) => assert_eq!(why, "check-in: not json"),
            e => panic!("{e}"),
        }
    }
}
