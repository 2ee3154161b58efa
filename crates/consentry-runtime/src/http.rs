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

/// A server's TLS configuration, as [`server_tls`] builds it.
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// Where a server's certificate chain, private key and (for mutual TLS)
/// the CA that signs its callers' certificates are, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

fn tls_error(what: &'static str, path: &Path, detail: impl ToString) -> HttpError {
    HttpError::Tls {
        what,
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(what, path, pem_detail(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(what, path, pem_detail(&e)))?;
    if certs.is_empty() {
        return Err(tls_error(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// A PEM error without anything read from the file (an I/O error names
/// its kind only).
fn pem_detail(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {}", io.kind()),
        E::NoItemsFound => "holds no PEM item of the expected kind".into(),
        _ => "is not valid PEM".into(),
    }
}

/// The server's TLS configuration: TLS 1.2 and 1.3 by ring, ALPN
/// `http/1.1`, client certificates required and checked against
/// `client_ca` when given.
pub fn server_tls(files: &TlsFiles) -> Result<TlsConfig, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error("private key", &files.key, pem_detail(&e)))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("certificate", &files.cert, e))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("client CA", ca)? {
                roots.add(cert).map_err(|e| tls_error("client CA", ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| tls_error("client CA", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error("certificate and key", &files.cert, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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

/// Peers as the limits count them: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// At most this many peers are remembered; past it, idle ones are
/// forgotten, and a new peer is refused while every slot is busy.
const MAX_PEERS: usize = 16_384;

struct Peer {
    connections: usize,
    tokens: f64,
    last: Instant,
}

struct Peers {
    table: Mutex<HashMap<IpAddr, Peer>>,
    per_peer: usize,
    rate: f64,
    burst: f64,
}

impl Peers {
    fn refill(&self, p: &mut Peer, now: Instant) {
        let elapsed = now.saturating_duration_since(p.last).as_secs_f64();
        p.tokens = (p.tokens + elapsed * self.rate).min(self.burst);
        p.last = now;
    }

    /// A new connection from `key`, refused over its limits (or while the
    /// table is full of live peers).
    fn connect(&self, key: IpAddr, now: Instant) -> Result<(), Refusal> {
        let Ok(mut table) = self.table.lock() else {
            return Err(Refusal::PeerConnectionLimit);
        };
        if table.len() >= MAX_PEERS && !table.contains_key(&key) {
            let full = self.burst;
            let rate = self.rate;
            table.retain(|_, p| {
                let idle = now.saturating_duration_since(p.last).as_secs_f64();
                p.connections > 0 || p.tokens + idle * rate < full
            });
            if table.len() >= MAX_PEERS {
                return Err(Refusal::PeerConnectionLimit);
            }
        }
        let peer = table.entry(key).or_insert(Peer {
            connections: 0,
            tokens: self.burst,
            last: now,
        });
        if peer.connections >= self.per_peer {
            return Err(Refusal::PeerConnectionLimit);
        }
        // A connection costs a request's token: reconnecting (and TLS
        // handshakes) cannot outrun the request rate.
        self.refill(peer, now);
        if peer.tokens < 1.0 {
            return Err(Refusal::ConnectionRateLimited);
        }
        peer.tokens -= 1.0;
        peer.connections += 1;
        Ok(())
    }

    fn disconnect(&self, key: IpAddr) {
        if let Ok(mut table) = self.table.lock() {
            if let Some(p) = table.get_mut(&key) {
                p.connections = p.connections.saturating_sub(1);
            }
        }
    }

    /// Takes one request token for `key` at `now`.
    fn admit(&self, key: IpAddr, now: Instant) -> bool {
        let Ok(mut table) = self.table.lock() else {
            return false;
        };
        let Some(peer) = table.get_mut(&key) else {
            return false;
        };
        self.refill(peer, now);
        if peer.tokens >= 1.0 {
            peer.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Releases a peer's connection slot when its task ends, however it ends.
struct PeerSlot {
    peers: Arc<Peers>,
    key: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.peers.disconnect(self.key);
    }
}

struct Shared {
    limits: Limits,
    handler: Arc<dyn Handler>,
    peers: Arc<Peers>,
    in_flight: Arc<Semaphore>,
    /// The body budget, one permit per KiB.
    body_budget: Arc<Semaphore>,
    epoch: Instant,
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<TlsConfig>,
    limits: Limits,
    handler: Arc<dyn Handler>,
    mut stopped: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shared = Arc::new(Shared {
        peers: Arc::new(Peers {
            table: Mutex::new(HashMap::new()),
            per_peer: limits.max_connections_per_peer.max(1),
            rate: limits.peer_rate_per_second,
            burst: limits.peer_burst.max(1.0),
        }),
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        body_budget: Arc::new(Semaphore::new(
            limits
                .max_body_budget
                .div_ceil(1024)
                .clamp(1, Semaphore::MAX_PERMITS),
        )),
        limits,
        handler,
        epoch: Instant::now(),
    });
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let ip = peer.ip();
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            shared.handler.refused(ip, Refusal::ConnectionLimit);
            continue;
        };
        let key = peer_key(ip);
        if let Err(why) = shared.peers.connect(key, Instant::now()) {
            shared.handler.refused(ip, why);
            continue;
        }
        let peer_slot = PeerSlot {
            peers: Arc::clone(&shared.peers),
            key,
        };
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        let stop = stopped.clone();
        tokio::spawn(async move {
            let _slots = (slot, peer_slot);
            let _ = stream.set_nodelay(true);
            match acceptor {
                None => serve_connection(stream, ip, shared, stop).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(shared.limits.header_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(tls)) => serve_connection(tls, ip, shared, stop).await,
                        // A peer that hung up before finishing a hello (a
                        // TCP health check) was refused nothing.
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                        _ => shared.handler.refused(ip, Refusal::TlsHandshake),
                    }
                }
            }
        });
    }
}

/// Milliseconds since the server started when a byte last moved on a
/// connection, and whether a request is being handled.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    handling: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that notes every byte moved, for the idle timeout.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: IpAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        epoch: shared.epoch,
        last_ms: AtomicU64::new(0),
        handling: AtomicUsize::new(0),
    });
    activity.touch();
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let (shared, activity) = (Arc::clone(&shared), Arc::clone(&activity));
        hyper::service::service_fn(move |req| {
            let (shared, activity) = (Arc::clone(&shared), Arc::clone(&activity));
            async move {
                activity.handling.fetch_add(1, Ordering::SeqCst);
                let response = answer(req, peer, &shared).await;
                activity.handling.fetch_sub(1, Ordering::SeqCst);
                activity.touch();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let limits = &shared.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let tick = (limits.idle_timeout / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    let why = if e.is_timeout() {
                        Some(Refusal::HeaderTimeout)
                    } else if e.is_parse_too_large() {
                        Some(Refusal::HeaderTooLarge)
                    } else if e.is_parse() {
                        Some(Refusal::Malformed)
                    } else {
                        None // the peer went away
                    };
                    if let Some(why) = why {
                        shared.handler.refused(peer, why);
                    }
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {
                if activity.handling.load(Ordering::SeqCst) == 0
                    && activity.idle_for() >= limits.idle_timeout
                {
                    shared.handler.refused(peer, Refusal::IdleTimeout);
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

type Body = Full<Bytes>;

fn plain(status: u16, text: &'static str, close: bool) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

fn refuse(shared: &Shared, peer: IpAddr, why: Refusal) -> hyper::Response<Body> {
    shared.handler.refused(peer, why);
    match why {
        Refusal::PeerRateLimited => {
            let mut r = plain(429, "too many requests\n", false);
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            r
        }
        Refusal::BodyTooLarge => plain(413, "request body too large\n", true),
        Refusal::BodyTimeout => plain(408, "request body too slow\n", true),
        Refusal::Busy => {
            let mut r = plain(503, "busy\n", false);
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            r
        }
        Refusal::HandlerPanicked => plain(500, "internal error\n", true),
        _ => plain(400, "bad request\n", true),
    }
}

fn answer(
    req: hyper::Request<Incoming>,
    peer: IpAddr,
    shared: &Arc<Shared>,
) -> impl Future<Output = hyper::Response<Body>> + Send + 'static {
    let shared = Arc::clone(shared);
    async move {
        if !shared.peers.admit(peer_key(peer), Instant::now()) {
            return refuse(&shared, peer, Refusal::PeerRateLimited);
        }
        let authorization = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let head = Head {
            method: req.method().as_str(),
            path: req.uri().path(),
            authorization: authorization.as_deref(),
            peer,
        };
        let limit = match shared.handler.admit(&head) {
            Admission::Read(n) => n.min(shared.limits.max_body_bytes),
            Admission::Answer(r) => {
                // The body is drained, never held, so a client still
                // sending it reads the answer instead of a broken pipe;
                // one too large or too slow is cut off.
                let drained = drain(req.into_body(), &shared.limits).await;
                let mut r = to_hyper(r);
                if !drained {
                    r.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                return r;
            }
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
        let share = match declared {
            Some(None) => return refuse(&shared, peer, Refusal::Malformed),
            Some(Some(n)) if n > limit as u64 => {
                return refuse(&shared, peer, Refusal::BodyTooLarge)
            }
            Some(Some(n)) => n as usize,
            // Chunked: as much as it may grow to.
            None => limit,
        };
        // The body's share of the server-wide budget, before it is read.
        let kib = u32::try_from(share.div_ceil(1024)).unwrap_or(u32::MAX);
        let budget = match tokio::time::timeout(
            shared.limits.queue_timeout,
            Arc::clone(&shared.body_budget).acquire_many_owned(kib),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => return refuse(&shared, peer, Refusal::Busy),
        };
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let body = req.into_body();
        let collected = tokio::time::timeout(
            shared.limits.body_timeout,
            Limited::new(body, limit).collect(),
        )
        .await;
        let body: Vec<u8> = match collected {
            Err(_) => return refuse(&shared, peer, Refusal::BodyTimeout),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return refuse(&shared, peer, Refusal::BodyTooLarge)
            }
            Ok(Err(_)) => return refuse(&shared, peer, Refusal::Malformed),
            Ok(Ok(c)) => c.to_bytes().into(),
        };
        let permit = match tokio::time::timeout(
            shared.limits.queue_timeout,
            Arc::clone(&shared.in_flight).acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => return refuse(&shared, peer, Refusal::Busy),
        };
        let request = Request {
            method,
            path,
            authorization,
            body,
            peer,
        };
        let handler = Arc::clone(&shared.handler);
        let handled = tokio::task::spawn_blocking(move || {
            let _permits = (permit, budget);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(request)))
        })
        .await;
        match handled {
            Ok(Ok(r)) => to_hyper(r),
            _ => refuse(&shared, peer, Refusal::HandlerPanicked),
        }
    }
}

/// Reads and discards a body of at most `max_body_bytes` within
/// `body_timeout`; `false` if it was longer, slower or broken.
async fn drain(mut body: Incoming, limits: &Limits) -> bool {
    let mut seen = 0usize;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen > limits.max_body_bytes {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(limits.body_timeout, reading)
        .await
        .unwrap_or(false)
}

fn to_hyper(r: Response) -> hyper::Response<Body> {
    let mut out = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *out.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.headers_mut().insert(name, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::AtomicBool;

    struct Echo {
        refusals: Mutex<Vec<Refusal>>,
        block: AtomicBool,
    }

    impl Handler for Echo {
        fn handle(&self, r: Request) -> Response {
            if r.path == "/panic" {
                panic!("boom");
            }
            while self.block.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            Response::text(200, format!("{} {} {}", r.method, r.path, r.body.len()))
        }
        fn refused(&self, _peer: IpAddr, why: Refusal) {
            self.refusals.lock().unwrap().push(why);
        }
    }

    fn start(limits: Limits) -> (Server, Arc<Echo>) {
        let echo = Arc::new(Echo {
            refusals: Mutex::new(Vec::new()),
            block: AtomicBool::new(false),
        });
        let server = Server::start("test", "127.0.0.1:0", None, limits, echo.clone()).unwrap();
        (server, echo)
    }

    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn small() -> Limits {
        Limits {
            max_body_bytes: 100,
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(400),
            ..Limits::api(100)
        }
    }

    #[test]
    fn answers_and_refuses_a_huge_declared_body_without_reading_it() {
        let (server, echo) = start(small());
        let ok = exchange(
            server.local_addr(),
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        );
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("POST /x 3"), "{ok}");
        let huge = exchange(
            server.local_addr(),
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1125899906842624\r\n\r\na",
        );
        assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
        let chunked = exchange(
            server.local_addr(),
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n{}\r\n0\r\n\r\n",
                "a".repeat(0x200)
            )
            .as_bytes(),
        );
        assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
        let bad = exchange(
            server.local_addr(),
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: lots\r\n\r\n",
        );
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        let refusals = echo.refusals.lock().unwrap().clone();
        assert_eq!(
            refusals
                .iter()
                .filter(|r| **r == Refusal::BodyTooLarge)
                .count(),
            2,
            "{refusals:?}"
        );
        server.shutdown();
    }

    #[test]
    fn slow_heads_bodies_and_idle_connections_are_closed() {
        let (server, echo) = start(small());
        let started = Instant::now();
        // Nothing sent at all; half a head; a body that never comes.
        let silent = exchange(server.local_addr(), b"");
        let half = exchange(server.local_addr(), b"POST /x HTTP/1.1\r\nHost: a\r\n");
        let slow_body = exchange(
            server.local_addr(),
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\nab",
        );
        assert!(!silent.contains("200") && !half.contains("200"));
        assert!(slow_body.starts_with("HTTP/1.1 408"), "{slow_body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "closed by the server, not by the client's read timeout"
        );
        let refusals = echo.refusals.lock().unwrap().clone();
        for want in [Refusal::HeaderTimeout, Refusal::BodyTimeout] {
            assert!(refusals.contains(&want), "{want:?} in {refusals:?}");
        }
        server.shutdown();
        // A keep-alive connection left idle after an answer is closed, even
        // where the head may take longer than the idle timeout.
        let (server, echo) = start(Limits {
            header_timeout: Duration::from_secs(20),
            ..small()
        });
        let started = Instant::now();
        let kept = exchange(server.local_addr(), b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(kept.starts_with("HTTP/1.1 200"), "{kept}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let refusals = echo.refusals.lock().unwrap().clone();
        assert_eq!(refusals, vec![Refusal::IdleTimeout]);
        server.shutdown();
    }

    #[test]
    fn oversized_heads_get_431() {
        let (server, _) = start(small());
        let head = format!(
            "GET /a HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(20_000)
        );
        let r = exchange(server.local_addr(), head.as_bytes());
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        let r = exchange(
            server.local_addr(),
            format!("GET /a HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
        );
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        server.shutdown();
    }

    #[test]
    fn per_peer_limits_and_a_panicking_handler() {
        // Seven tokens: each connection takes one, each request one.
        let (server, echo) = start(Limits {
            peer_rate_per_second: 0.001,
            peer_burst: 7.0,
            ..small()
        });
        let addr = server.local_addr();
        let r = exchange(addr, b"GET /panic HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 500"), "{r}");
        let get = b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        for _ in 0..2 {
            let r = exchange(addr, get);
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        }
        let r = exchange(addr, get);
        assert!(r.starts_with("HTTP/1.1 429"), "the burst is spent: {r}");
        let r = exchange(addr, get);
        assert!(r.is_empty(), "no token left even to connect: {r}");
        let refusals = echo.refusals.lock().unwrap().clone();
        assert!(refusals.contains(&Refusal::HandlerPanicked));
        assert!(refusals.contains(&Refusal::PeerRateLimited));
        assert!(refusals.contains(&Refusal::ConnectionRateLimited));
        server.shutdown();

        // Two connections held open: the third from the same peer is shut.
        let (server, echo) = start(Limits {
            max_connections_per_peer: 2,
            ..small()
        });
        let addr = server.local_addr();
        let held: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let third = exchange(addr, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(third.is_empty(), "{third}");
        drop(held);
        let refusals = echo.refusals.lock().unwrap().clone();
        assert!(refusals.contains(&Refusal::PeerConnectionLimit));
        server.shutdown();
    }

    #[test]
    fn a_handler_can_refuse_a_body_unread_and_bodies_share_a_budget() {
        struct Gate;
        impl Handler for Gate {
            fn admit(&self, head: &Head<'_>) -> Admission {
                match head.authorization {
                    Some("Bearer ok") => Admission::Read(8),
                    _ => Admission::Answer(Response::text(401, "who are you")),
                }
            }
            fn handle(&self, r: Request) -> Response {
                Response::text(200, format!("{}", r.body.len()))
            }
        }
        let server = Server::start("t", "127.0.0.1:0", None, small(), Arc::new(Gate)).unwrap();
        let addr = server.local_addr();
        let r = exchange(
            addr,
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\nab",
        );
        assert!(
            r.starts_with("HTTP/1.1 401"),
            "answered, the body cut off: {r}"
        );
        let r = exchange(
            addr,
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 60\r\nConnection: close\r\n\r\n{}",
                "b".repeat(60)
            )
            .as_bytes(),
        );
        assert!(
            r.starts_with("HTTP/1.1 401"),
            "a whole body drained, then answered: {r}"
        );
        let r = exchange(
            addr,
            b"POST /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ok\r\nContent-Length: 50\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 413"), "the handler's limit: {r}");
        let r = exchange(
            addr,
            b"POST /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ok\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        );
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with('3'), "{r}");
        server.shutdown();
        // A budget of 2 KiB: one slow 2 KiB body holds it, a second waits
        // out the queue timeout and gets 503.
        let (server, _) = start(Limits {
            max_body_budget: 2048,
            max_body_bytes: 4096,
            body_timeout: Duration::from_secs(2),
            queue_timeout: Duration::from_millis(200),
            ..small()
        });
        let addr = server.local_addr();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\nab")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let r = exchange(
            addr,
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789",
        );
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        drop(slow);
        server.shutdown();
    }

    #[test]
    fn busy_handlers_answer_503_after_the_queue_timeout() {
        let (server, echo) = start(Limits {
            max_in_flight: 1,
            queue_timeout: Duration::from_millis(200),
            ..small()
        });
        echo.block.store(true, Ordering::SeqCst);
        let addr = server.local_addr();
        let first = std::thread::spawn(move || {
            exchange(
                addr,
                b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
        });
        std::thread::sleep(Duration::from_millis(100));
        let second = exchange(
            addr,
            b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert!(second.starts_with("HTTP/1.1 503"), "{second}");
        echo.block.store(false, Ordering::SeqCst);
        assert!(first.join().unwrap().starts_with("HTTP/1.1 200"));
        server.shutdown();
    }

    #[test]
    fn ipv6_peers_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(peer_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
