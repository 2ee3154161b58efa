//! One connection: the state every connection shares (limits, handler,
//! peers, budgets), the idle watchdog's activity clock, and serving
//! HTTP/1.1 on the stream under the head, body and idle limits.

use super::*;

pub(super) struct Shared {
    pub(super) limits: Limits,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) peers: Arc<Peers>,
    pub(super) in_flight: Arc<Semaphore>,
    /// The body budget, one permit per KiB.
    pub(super) body_budget: Arc<Semaphore>,
    pub(super) epoch: Instant,
}

pub(super) async fn accept_loop(
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
pub(super) struct Activity {
    pub(super) epoch: Instant,
    pub(super) last_ms: AtomicU64,
    pub(super) handling: AtomicUsize,
}

impl Activity {
    pub(super) fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that notes every byte moved, for the idle timeout.
pub(super) struct Tracked<S> {
    pub(super) inner: S,
    pub(super) activity: Arc<Activity>,
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

pub(super) async fn serve_connection<S>(
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
