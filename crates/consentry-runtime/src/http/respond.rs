//! Answers: the refusals' plain responses, and a request taken through
//! admission, body reading under the budget, and the handler.

use super::*;

pub(super) type Body = Full<Bytes>;

pub(super) fn plain(status: u16, text: &'static str, close: bool) -> hyper::Response<Body> {
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

pub(super) fn refuse(shared: &Shared, peer: IpAddr, why: Refusal) -> hyper::Response<Body> {
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

pub(super) fn answer(
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
pub(super) async fn drain(mut body: Incoming, limits: &Limits) -> bool {
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

pub(super) fn to_hyper(r: Response) -> hyper::Response<Body> {
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
