//! The accept loop, plain or TLS: HTTP/1.1 per connection, at most
//! `max_connections` at once, a deadline for each request's headers and
//! graceful shutdown with a deadline (`limits.shutdown_grace`): after it,
//! connections still open (a client that stopped reading a download) are
//! cut, so a stop never waits on a client. Each request carries its peer's
//! address (`ConnectInfo`) for the rate limits.
//!
//! The header deadline is what stops a slow client (slowloris) from holding
//! a connection: hyper starts it whenever the connection waits for a request
//! head, so it also closes keep-alive connections left idle that long.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown`
/// resolves, then waits for the requests in flight, at most
/// `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout.0);
    let handshake = limits.header_timeout.0;
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        // At the limit, stop accepting: new clients wait in the kernel's
        // backlog rather than each costing a task and a buffer here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (http, app, tls, watcher) = (http.clone(), app.clone(), tls.clone(), graceful.watcher());
        connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(&http, tcp, app, watcher, peer).await,
                Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => connection(&http, stream, app, watcher, peer).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace.0, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            grace = ?limits.shutdown_grace.0,
            "connections still open after the shutdown grace period: cut"
        );
    }
    connections.shutdown().await;
    Ok(())
}

async fn connection<I>(http: &http1::Builder, io: I, app: Router, watcher: Watcher, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = tower::ServiceExt::map_request(app, move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
