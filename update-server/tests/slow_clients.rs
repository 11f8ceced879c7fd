//! Slow and greedy clients: a client that never finishes its headers
//! (slowloris) is cut off at the header deadline, and past
//! `max_connections` new clients wait until a slot frees, while the
//! server keeps answering everyone else.

mod common;

use std::time::{Duration, Instant};

use gantry_server::config::Span;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gantry\r\n\r\n";

/// Reads until the server closes the connection or 10 s pass; the bytes
/// read and whether it closed.
async fn read_until_closed(tcp: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

/// One complete request on a new connection: the status line.
async fn health(addr: std::net::SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: gantry\r\nConnection: close\r\n\r\n").await.unwrap();
    let (got, _) = read_until_closed(&mut tcp).await;
    String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut_and_excess_clients_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path(), None);
    config.limits.header_timeout = Span(Duration::from_secs(1));
    config.limits.max_connections = 2;
    let running = gantry_server::start(config, std::future::pending()).await.unwrap();
    let addr = running.addr;

    // Slowloris: half a request line, then nothing. Cut at the deadline
    // (with a 408), not held open.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gan").await.unwrap();
    let (answer, closed) = read_until_closed(&mut slow).await;
    assert!(closed, "a client that never finished its headers is still connected");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "cut after {waited:?}");
    assert!(answer.is_empty() || String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"));

    // A keep-alive connection answered once, then left idle: closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(HEALTH).await.unwrap();
    let (answer, closed) = read_until_closed(&mut idle).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed, "an idle keep-alive connection is never closed");

    // Two connections hold both slots: a third client is not served until
    // one of them goes away, and then it is.
    let mut hold_a = TcpStream::connect(addr).await.unwrap();
    let mut hold_b = TcpStream::connect(addr).await.unwrap();
    hold_a.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    hold_b.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting = tokio::spawn(health(addr));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "a client past max_connections was served at once");
    drop(hold_a);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("never served").unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    drop(hold_b);
    assert_eq!(health(addr).await, "HTTP/1.1 200 OK");
    running.stop().await.unwrap();
}
