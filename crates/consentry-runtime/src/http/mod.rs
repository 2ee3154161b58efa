//! The one HTTP server of the project, for the vault API and every
//! stage's `/metrics`: HTTP/1.1 by hyper on a small tokio runtime of its
//! own, rustls TLS (mutual when a client CA is given), and a limit on
//! everything a peer controls.
//!
//! - **Head:** at most `max_header_bytes` and `max_headers` lines (431);
//!   the head, and a TLS handshake, must arrive within `header_timeout`.
//! - **Body:** a declared `Content-Length` above `max_body_bytes` is
//!   refused (413) before a byte of it is read or allocated; a chunked body
//!   is counted as it arrives; the whole body must arrive within
//!   `body_timeout` (408).
//! - **Idle:** a connection that moves no byte either way for
//!   `idle_timeout` while no request is being handled is closed (a
//!   keep-alive left open, a reader that never reads its answer).
//! - **Connections:** at most `max_connections` in all and
//!   `max_connections_per_peer` from one peer (an IPv6 peer is its /64).
//! - **Requests:** a token bucket per peer on the monotonic clock, taken
//!   before the handler sees the request, so before authentication (429);
//!   the table of peers is bounded.
//! - **Handlers** may block (a store, the broker): at most `max_in_flight`
//!   run at once on blocking threads; a request that cannot get one within
//!   `queue_timeout` gets 503. A handler that panics answers 500.
//!
//! Everything refused is reported to [`Handler::refused`] with a closed
//! [`Refusal`], never with request content, so the caller can count it and
//! audit it in aggregate.

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};

mod connection;
mod peers;
mod respond;
#[cfg(test)]
mod tests;
mod tls;

use connection::*;
pub use peers::peer_key;
use peers::*;
use respond::*;
pub use tls::{server_tls, TlsConfig, TlsFiles};

/// What a server accepts; see the module docs for what each bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// Requests per second a peer may sustain, and its burst.
    pub peer_rate_per_second: f64,
    pub peer_burst: f64,
    pub max_in_flight: usize,
    pub queue_timeout: Duration,
    /// Bytes of request bodies held at once by the whole server: a body
    /// waits (up to `queue_timeout`) for its share, declared or limit,
    /// before it is read.
    pub max_body_budget: usize,
}

impl Limits {
    /// For `/metrics` and `/healthz`: tiny requests, a scraper or two.
    pub fn metrics() -> Limits {
        Limits {
            max_header_bytes: 8 * 1024,
            max_headers: 32,
            max_body_bytes: 1024,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 64,
            max_connections_per_peer: 16,
            peer_rate_per_second: 20.0,
            peer_burst: 40.0,
            max_in_flight: 2,
            queue_timeout: Duration::from_secs(2),
            max_body_budget: 64 * 1024,
        }
    }

    /// For an API whose bodies may be as large as `max_body_bytes`.
    pub fn api(max_body_bytes: usize) -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_peer: 64,
            peer_rate_per_second: 200.0,
            peer_burst: 400.0,
            max_in_flight: 16,
            queue_timeout: Duration::from_secs(5),
            max_body_budget: (4 * max_body_bytes).max(1 << 20),
        }
    }
}

/// Why the server refused a connection or a request before (or instead
/// of) the handler answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    ConnectionLimit,
    PeerConnectionLimit,
    PeerRateLimited,
    TlsHandshake,
    HeaderTimeout,
    HeaderTooLarge,
    Malformed,
    BodyTooLarge,
    BodyTimeout,
    IdleTimeout,
    Busy,
    HandlerPanicked,
    /// A peer opening connections faster than its request rate.
    ConnectionRateLimited,
}

impl Refusal {
    pub const ALL: [Refusal; 13] = [
        Refusal::ConnectionLimit,
        Refusal::PeerConnectionLimit,
        Refusal::PeerRateLimited,
        Refusal::TlsHandshake,
        Refusal::HeaderTimeout,
        Refusal::HeaderTooLarge,
        Refusal::Malformed,
        Refusal::BodyTooLarge,
        Refusal::BodyTimeout,
        Refusal::IdleTimeout,
        Refusal::Busy,
        Refusal::HandlerPanicked,
        Refusal::ConnectionRateLimited,
    ];

    /// The code in metric labels and audit records.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::PeerConnectionLimit => "peer_connection_limit",
            Refusal::PeerRateLimited => "peer_rate_limited",
            Refusal::TlsHandshake => "tls_handshake_failed",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::Malformed => "malformed_request",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::Busy => "busy",
            Refusal::HandlerPanicked => "handler_panicked",
            Refusal::ConnectionRateLimited => "connection_rate_limited",
        }
    }
}

/// A request as a handler sees it: the whole body already read (within
/// the limits), the peer's address, nothing else of the head but the
/// `Authorization` header.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
    pub peer: IpAddr,
}

/// A handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers (`Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            headers: Vec::new(),
        }
    }

    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response {
            content_type: "application/json",
            ..Response::text(status, body)
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request before its body is read: what decides whether to read it.
#[derive(Debug)]
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub peer: IpAddr,
}

/// What a handler says of a request's head: read a body of at most this
/// many bytes (capped by `Limits::max_body_bytes`), or answer now without
/// reading it.
pub enum Admission {
    Read(usize),
    Answer(Response),
}

/// What a server calls.
pub trait Handler: Send + Sync + 'static {
    /// Decides on a request from its head alone (no blocking: a lookup at
    /// most), before a byte of its body is read or buffered: a caller that
    /// does not authenticate, or a path whose bodies are small, never gets
    /// the largest body's worth of memory.
    fn admit(&self, _head: &Head<'_>) -> Admission {
        Admission::Read(usize::MAX)
    }
    /// Answers one request; may block (it runs on a blocking thread).
    fn handle(&self, request: Request) -> Response;
    /// Told of everything refused before reaching `handle`; must not block.
    fn refused(&self, _peer: IpAddr, _why: Refusal) {}
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP runtime: {0}")]
    Runtime(std::io::Error),
    /// Never the file's content: only its path and what is wrong with it.
    #[error("TLS {what} {path}: {detail}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
}

/// A running server: stops when [`Server::shutdown`] is called or it is
/// dropped (unless detached).
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` and serves `handler` from a thread of its own.
    pub fn start(
        name: &str,
        listen: &str,
        tls: Option<TlsConfig>,
        limits: Limits,
        handler: Arc<dyn Handler>,
    ) -> Result<Server, HttpError> {
        let bind_error = |source| HttpError::Bind {
            addr: listen.to_string(),
            source,
        };
        let mut limits = limits;
        if let Some(files) = open_file_limit() {
            // Leave room for the process's other sockets (Kafka, the
            // store): a full descriptor table fails those, not just accept.
            limits.max_connections = limits.max_connections.min((files / 2).max(16));
        }
        let std_listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
        std_listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = std_listener.local_addr().map_err(bind_error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(limits.max_in_flight.max(1) + 2)
            .thread_name(format!("http-{name}"))
            .enable_all()
            .build()
            .map_err(HttpError::Runtime)?;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(format!("http-{name}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(listener) => accept_loop(listener, tls, limits, handler, stopped).await,
                        Err(e) => tracing::error!(error = %e, "http: listener not usable"),
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(HttpError::Runtime)?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves for the rest of the process.
    pub fn detach(mut self) -> SocketAddr {
        self.thread.take();
        let addr = self.addr;
        std::mem::forget(self);
        addr
    }

    /// Stops accepting, drops open connections, and waits for the thread.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The process's soft limit on open files, from /proc (Linux).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
