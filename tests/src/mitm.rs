//! A man in the middle for loopback tests: an HTTP/1.1 proxy that reads
//! every request and every answer whole, so a test can play a hostile
//! server side — record an answer and replay it later, swap one device's
//! credentials for another's, substitute a blob, or answer a check-in with
//! a ticket of its own. Where [`crate::proxy::HostileProxy`] damages bytes
//! in flight, this one rewrites messages that are well formed.
//!
//! A [`Script`] sees each request and an [`Upstream`] it may forward it to
//! (as it is, rewritten, or not at all) and returns the answer the device
//! gets. Upstream requests carry `connection: close` and are read to the
//! end; the device side keeps its connection alive. Every read has a
//! timeout, every connection a lifetime, and the proxy stops when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a device connection lives.
const MAX_CONNECTION_TIME: Duration = Duration::from_secs(60);
/// Largest request or answer head.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request or answer body (blobs in these tests are well below).
const MAX_BODY: usize = 16 << 20;
/// Deadline of one upstream exchange.
const UPSTREAM_TIME: Duration = Duration::from_secs(20);

/// One request as the device sent it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`...
    pub method: String,
    /// The request target (`/api/v1/device/checkin`).
    pub target: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

/// One answer.
#[derive(Clone, Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Header fields in order (without framing fields: the proxy sets them).
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value.to_owned()));
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Replaces (or adds) a header.
    pub fn set_header(&mut self, name: &str, value: &str) {
        set_header(&mut self.headers, name, value)
    }

    /// The bearer token it carries.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether this is `method` on `path`.
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.target == path
    }
}

impl Response {
    /// A JSON answer.
    pub fn json_answer(status: u16, body: &Value) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// An `application/octet-stream` answer.
    pub fn bytes_answer(body: Vec<u8>) -> Response {
        Response { status: 200, headers: vec![("content-type".into(), "application/octet-stream".into())], body }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The real server behind the proxy.
pub struct Upstream {
    addr: SocketAddr,
}

impl Upstream {
    /// Sends `request` to the server on a fresh connection and reads its
    /// whole answer.
    pub fn send(&self, request: &Request) -> std::io::Result<Response> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(UPSTREAM_TIME))?;
        s.set_write_timeout(Some(UPSTREAM_TIME))?;
        let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
        for (n, v) in &request.headers {
            if !is_framing(n) {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        head.push_str(&format!("connection: close\r\ncontent-length: {}\r\n\r\n", request.body.len()));
        s.write_all(head.as_bytes())?;
        s.write_all(&request.body)?;
        let started = Instant::now();
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > MAX_HEAD + MAX_BODY || started.elapsed() > UPSTREAM_TIME {
                return Err(invalid("upstream answer too long or too slow"));
            }
        }
        let end = find(&raw, b"\r\n\r\n").ok_or_else(|| invalid("upstream answer without a head"))?;
        let (first, headers) = parse_head(&raw[..end])?;
        let status =
            first.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| invalid("upstream status line"))?;
        let rest = &raw[end + 4..];
        let body = if header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            rest.get(..len).ok_or_else(|| invalid("upstream body shorter than announced"))?.to_vec()
        } else {
            rest.to_vec()
        };
        let headers = headers.into_iter().filter(|(n, _)| !is_framing(n)).collect();
        Ok(Response { status, headers, body })
    }
}

/// Decides the answer to each request; may forward it upstream.
pub type Script = Box<dyn FnMut(&Request, &Upstream) -> std::io::Result<Response> + Send>;

/// Forwards every request unchanged.
pub fn pass_through() -> Script {
    Box::new(|r, up| up.send(r))
}

/// A running man in the middle.
pub struct Mitm {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    script: Arc<Mutex<Script>>,
    thread: Option<JoinHandle<()>>,
}

impl Mitm {
    /// A proxy on a loopback port in front of `upstream`, answering as
    /// `script` decides. Requests are handled one at a time.
    pub fn start(upstream: SocketAddr, script: Script) -> std::io::Result<Mitm> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Mutex::new(script));
        let thread = {
            let (stop, script) = (stop.clone(), script.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (stop, script) = (stop.clone(), script.clone());
                            std::thread::spawn(move || {
                                let _ = serve(client, &Upstream { addr: upstream }, &script, &stop);
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(Mitm { addr, stop, script, thread: Some(thread) })
    }

    /// `http://addr`, where devices connect.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the script (e.g. to end an attack).
    pub fn set_script(&self, script: Script) {
        if let Ok(mut s) = self.script.lock() {
            *s = script;
        }
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

fn is_framing(name: &str) -> bool {
    ["content-length", "transfer-encoding", "connection", "keep-alive"].iter().any(|f| name.eq_ignore_ascii_case(f))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first line and the header fields of a head (without its blank line).
fn parse_head(head: &[u8]) -> std::io::Result<(String, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line.split_once(':').ok_or_else(|| invalid("header line without a colon"))?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    Ok((first, headers))
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").ok_or_else(|| invalid("chunk size line"))?;
        let size = std::str::from_utf8(&rest[..eol]).ok().and_then(|l| l.split(';').next());
        let size = size.and_then(|s| usize::from_str_radix(s.trim(), 16).ok()).ok_or_else(|| invalid("chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 || body.len() + size > MAX_BODY {
            return Err(invalid("chunk"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Device side of one connection: request after request (keep-alive).
fn serve(client: TcpStream, upstream: &Upstream, script: &Mutex<Script>, stop: &AtomicBool) -> std::io::Result<()> {
    let started = Instant::now();
    client.set_read_timeout(Some(Duration::from_millis(50)))?;
    client.set_nodelay(true)?;
    let alive = || !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_CONNECTION_TIME;
    let mut pending: Vec<u8> = Vec::new();
    let result = (|| -> std::io::Result<()> {
        while let Some(request) = read_request(&client, &mut pending, &alive)? {
            let answer = {
                let mut s = script.lock().map_err(|_| invalid("script panicked"))?;
                s(&request, upstream)
            };
            let answer = match answer {
                Ok(a) => a,
                // An upstream failure reaches the device as a bad gateway.
                Err(e) => Response::json_answer(502, &serde_json::json!({ "message": e.to_string() })),
            };
            write_response(&client, &request, &answer)?;
        }
        Ok(())
    })();
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// The next whole request, or `None` when the device hung up (or the
/// proxy stops).
fn read_request(
    mut client: &TcpStream,
    pending: &mut Vec<u8>,
    alive: &dyn Fn() -> bool,
) -> std::io::Result<Option<Request>> {
    let mut buf = [0u8; 16 * 1024];
    let mut fill = |pending: &mut Vec<u8>| -> std::io::Result<bool> {
        while alive() {
            match client.read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    };
    let end = loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            break end;
        }
        if pending.len() > MAX_HEAD || !fill(pending)? {
            return Ok(None);
        }
    };
    let (first, headers) = parse_head(&pending[..end])?;
    let mut parts = first.split(' ');
    let (method, target) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut rest: Vec<u8> = pending.split_off(end + 4);
    pending.clear();
    let body = if header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            if find(&rest, b"0\r\n\r\n").is_some()
                && let Ok(body) = dechunk(&rest)
            {
                // Requests in these tests are not pipelined: what follows
                // the last chunk is dropped.
                break body;
            }
            if rest.len() > MAX_BODY || !fill(&mut rest)? {
                return Ok(None);
            }
        }
    } else {
        let len = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        if len > MAX_BODY {
            return Err(invalid("request body too large"));
        }
        while rest.len() < len {
            if !fill(&mut rest)? {
                return Ok(None);
            }
        }
        *pending = rest.split_off(len);
        rest
    };
    Ok(Some(Request { method, target, headers, body }))
}

fn write_response(mut client: &TcpStream, request: &Request, answer: &Response) -> std::io::Result<()> {
    let reason = match answer.status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
    for (n, v) in &answer.headers {
        if !is_framing(n) {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    let bodiless = matches!(answer.status, 204 | 304) || request.method == "HEAD";
    if !bodiless {
        head.push_str(&format!("content-length: {}\r\n", answer.body.len()));
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes())?;
    if !bodiless {
        client.write_all(&answer.body)?;
    }
    client.flush()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (the device API's encoding).
pub fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for ch in text.bytes() {
        let v = B64.iter().position(|&b| b == ch)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 200) as u8).collect();
            assert_eq!(b64_decode(&b64_encode(&bytes)), Some(bytes));
        }
        assert_eq!(b64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(b64_decode("aGVsbG8="), Some(b"hello".to_vec()));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
        assert!(dechunk(b"3\r\nab").is_err());
    }
}
