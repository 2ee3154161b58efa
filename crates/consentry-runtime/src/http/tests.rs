//! The HTTP server against real sockets: each limit (head, body and its
//! budget, idle, per-peer connections and requests, in-flight handlers)
//! refused as it should be, a panicking handler answering 500, and IPv6
//! peers counted by their /64.

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
