//! A hostile TCP proxy for loopback tests: it sits between devices and the
//! server and, per connection, passes bytes through or attacks them —
//! drops the connection, stalls, truncates, flips bytes, or follows the
//! answer with endless junk. Every loop is bounded and the proxy stops
//! when dropped.

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

/// Picks a fault for each new connection.
pub type Chooser = Box<dyn FnMut(u64) -> Fault + Send>;

/// A running proxy.
pub struct HostileProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    chooser: Arc<Mutex<Chooser>>,
    connections: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl HostileProxy {
    /// A proxy on a loopback port in front of `upstream`; `chooser` gets the
    /// connection number and names its fault.
    pub fn start(upstream: SocketAddr, chooser: Chooser) -> std::io::Result<HostileProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let chooser = Arc::new(Mutex::new(chooser));
        let connections = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, chooser, connections) = (stop.clone(), chooser.clone(), connections.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let n = connections.fetch_add(1, Ordering::Relaxed);
                            let fault = chooser.lock().map(|mut c| c(n)).unwrap_or(Fault::None);
                            let stop = stop.clone();
                            std::thread::spawn(move || {
                                let _ = relay(client, upstream, fault, &stop);
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
        Ok(HostileProxy { addr, stop, chooser, connections, thread: Some(thread) })
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
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay(client: TcpStream, upstream: SocketAddr, fault: Fault, stop: &AtomicBool) -> std::io::Result<()> {
    let server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    let started = Instant::now();
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        s.set_nodelay(true)?;
    }
    // Device → server: passed through untouched on its own thread.
    let up = {
        let (mut from, mut to) = (client.try_clone()?, server.try_clone()?);
        let stop_up = Arc::new(AtomicBool::new(false));
        let flag = stop_up.clone();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while !flag.load(Ordering::Relaxed) && started.elapsed() < MAX_CONNECTION_TIME {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
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
        (h, stop_up)
    };
    let result = answers(&server, &client, fault, stop, started);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    up.1.store(true, Ordering::Relaxed);
    let _ = up.0.join();
    result
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Server → device, with the fault applied.
fn answers(
    mut server: &TcpStream,
    mut client: &TcpStream,
    fault: Fault,
    stop: &AtomicBool,
    started: Instant,
) -> std::io::Result<()> {
    let alive = || !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_CONNECTION_TIME;
    let mut sent = 0usize;
    let mut buf = [0u8; 16 * 1024];
    while alive() {
        let n = match server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // The answer is out (the server went quiet): now the junk.
            Err(e) if is_timeout(&e) && fault == Fault::Endless && sent > 0 => break,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e),
        };
        let chunk = &mut buf[..n];
        match fault {
            Fault::None | Fault::Endless => client.write_all(chunk)?,
            Fault::Drop(limit) | Fault::Stall(limit) => {
                let take = n.min(limit.saturating_sub(sent));
                client.write_all(&chunk[..take])?;
                if sent + n >= limit {
                    if let Fault::Stall(_) = fault {
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
    if fault == Fault::Endless {
        let junk = [0x5au8; 16 * 1024];
        let mut out = 0u64;
        while alive() && out < MAX_JUNK {
            if client.write_all(&junk).is_err() {
                break;
            }
            out += junk.len() as u64;
        }
    }
    Ok(())
}
