//! A hostile HTTP/1.1 proxy for loopback tests: it sits between devices
//! and the server and, per request, passes the answer through or attacks
//! it — drops the connection, stalls, trickles, flips bytes, or follows the
//! answer with endless junk. The chooser sees each request line, so an
//! attack can aim at downloads or at the API. Every loop is bounded and the
//! proxy stops when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::time::{Duration, Instant};

/// What the proxy does to one connection's answers (server → device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// Close both ends after this many answer bytes.
    Drop(usize),
    /// Stop forwarding after this many bytes, keep the connection open
    /// (until the device gives up, at most `MAX_CONNECTION_TIME`).
    Stall(usize),
    /// Forward one byte at a time with this pause between them.
    Trickle(Duration),
    /// Flip one bit of every n-th answer byte.
    Corrupt(usize),
    /// Forward the answer, then keep sending junk (bounded).
    Endless,
}

/// Longest a proxied connection lives.
const MAX_CONNECTION_TIME: Duration = Duration::from_secs(60);
/// Most junk bytes an `Endless` connection sends.
const MAX_JUNK: u64 = 64 << 20;

/// Picks the fault for a request: its number (from 0) and request line
/// (`GET /blobs/sha256/… HTTP/1.1`).
pub type Chooser = Box<dyn FnMut(u64, &str) -> Fault + Send>;

/// The fault of the answer in flight on one connection.
#[derive(Clone, Copy)]
struct Current {
    fault: Fault,
    /// Bumped for every request, so the answer side restarts its count.
    request: u64,
}

/// A running proxy.
pub struct HostileProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    chooser: Arc<Mutex<Chooser>>,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    ranged: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl HostileProxy {
    /// A proxy on a loopback port in front of `upstream`; `chooser` names
    /// the fault of each request's answer.
    pub fn start(upstream: SocketAddr, chooser: Chooser) -> std::io::Result<HostileProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let chooser = Arc::new(Mutex::new(chooser));
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let ranged = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, chooser, connections, requests, ranged) =
                (stop.clone(), chooser.clone(), connections.clone(), requests.clone(), ranged.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            connections.fetch_add(1, Ordering::Relaxed);
                            let counters = Counters { requests: requests.clone(), ranged: ranged.clone() };
                            let (stop, chooser) = (stop.clone(), chooser.clone());
                            std::thread::spawn(move || {
                                let _ = relay(client, upstream, &chooser, &counters, &stop);
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
        Ok(HostileProxy { addr, stop, chooser, connections, requests, ranged, thread: Some(thread) })
    }

    /// Where devices connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the fault chooser (e.g. to let the devices recover).
    pub fn set_chooser(&self, chooser: Chooser) {
        if let Ok(mut c) = self.chooser.lock() {
            *c = chooser;
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests with a `Range` header (resumed downloads) so far.
    pub fn ranged_requests(&self) -> u64 {
        self.ranged.load(Ordering::Relaxed)
    }
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the proxy counts across connections.
struct Counters {
    requests: Arc<AtomicU64>,
    ranged: Arc<AtomicU64>,
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    chooser: &Mutex<Chooser>,
    counters: &Counters,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    let started = Instant::now();
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        s.set_nodelay(true)?;
    }
    let current = Mutex::new(Current { fault: Fault::None, request: 0 });
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Device → server: passed through; each request picks the fault
        // of its answer.
        scope.spawn(|| {
            let (mut from, mut to) = (&client, &server);
            let mut buf = [0u8; 16 * 1024];
            while !done.load(Ordering::Relaxed) && started.elapsed() < MAX_CONNECTION_TIME {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Some(line) = request_line(&buf[..n]) {
                            let number = counters.requests.fetch_add(1, Ordering::Relaxed);
                            if String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase().contains("\r\nrange: bytes=") {
                                counters.ranged.fetch_add(1, Ordering::Relaxed);
                            }
                            let fault = chooser.lock().map(|mut c| c(number, &line)).unwrap_or(Fault::None);
                            if let Ok(mut c) = current.lock() {
                                *c = Current { fault, request: c.request + 1 };
                            }
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if is_timeout(&e) => continue,
                    Err(_) => break,
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
        let result = answers(&server, &client, &current, stop, started);
        done.store(true, Ordering::Relaxed);
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
        result
    })
}

/// The request line if `chunk` starts a request.
fn request_line(chunk: &[u8]) -> Option<String> {
    const METHODS: [&[u8]; 5] = [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE "];
    if !METHODS.iter().any(|m| chunk.starts_with(m)) {
        return None;
    }
    let end = chunk.iter().position(|&b| b == b'\r').unwrap_or(chunk.len()).min(200);
    Some(String::from_utf8_lossy(&chunk[..end]).into_owned())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Server → device, with the fault of the current request applied.
fn answers(
    mut server: &TcpStream,
    mut client: &TcpStream,
    current: &Mutex<Current>,
    stop: &AtomicBool,
    started: Instant,
) -> std::io::Result<()> {
    let alive = || !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_CONNECTION_TIME;
    let now = || current.lock().map(|c| *c).unwrap_or(Current { fault: Fault::None, request: 0 });
    let (mut request, mut sent) = (0u64, 0usize);
    let mut buf = [0u8; 16 * 1024];
    while alive() {
        let n = match server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                // The answer is out (the server went quiet): now the junk.
                if now().fault == Fault::Endless && sent > 0 {
                    endless(client, &alive);
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let c = now();
        if c.request != request {
            (request, sent) = (c.request, 0);
        }
        let chunk = &mut buf[..n];
        match c.fault {
            Fault::None => client.write_all(chunk)?,
            // Announce a body far longer than the real one, so the junk
            // that follows reads as more of it.
            Fault::Endless if sent == 0 => client.write_all(&inflate_length(chunk))?,
            Fault::Endless => client.write_all(chunk)?,
            Fault::Drop(limit) | Fault::Stall(limit) => {
                let take = n.min(limit.saturating_sub(sent));
                client.write_all(&chunk[..take])?;
                if sent + n >= limit {
                    if let Fault::Stall(_) = c.fault {
                        // Hold the connection open, sending nothing.
                        while alive() {
                            std::thread::sleep(Duration::from_millis(20));
                            let mut probe = [0u8; 1];
                            if matches!(client.peek(&mut probe), Ok(0)) {
                                break;
                            }
                        }
                    }
                    return Ok(());
                }
            }
            Fault::Trickle(pause) => {
                for b in chunk.iter() {
                    if !alive() {
                        return Ok(());
                    }
                    client.write_all(&[*b])?;
                    std::thread::sleep(pause);
                }
            }
            Fault::Corrupt(every) => {
                let every = every.max(1);
                for (i, b) in chunk.iter_mut().enumerate() {
                    if (sent + i) % every == every - 1 {
                        *b ^= 0x20;
                    }
                }
                client.write_all(chunk)?;
            }
        }
        sent += n;
    }
    Ok(())
}

/// The answer head with its Content-Length replaced by 1 TiB.
fn inflate_length(chunk: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(chunk);
    let Some(head_end) = text.find("\r\n\r\n") else { return chunk.to_vec() };
    let head: Vec<String> = text[..head_end]
        .split("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("content-length:") {
                "content-length: 1099511627776".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect();
    let mut out = head.join("\r\n").into_bytes();
    out.extend_from_slice(&chunk[head_end..]);
    out
}

/// Junk after the answer, until the device hangs up (bounded).
fn endless(mut client: &TcpStream, alive: &dyn Fn() -> bool) {
    let junk = [0x5au8; 16 * 1024];
    let mut out = 0u64;
    while alive() && out < MAX_JUNK {
        if client.write_all(&junk).is_err() {
            break;
        }
        out += junk.len() as u64;
    }
}
