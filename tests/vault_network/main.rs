//! `consentry vault serve` as a network surface, on the real stack:
//! TLS and mutual TLS (certificates made here by rcgen), the refusal to
//! serve without TLS or a justification pattern in production, and
//! legitimate calls answered while slow-loris connections, oversized
//! heads, huge declared bodies, slow bodies, unauthenticated floods and
//! connection bursts hit the server (p99 with and without the abuse is
//! printed), with the process alive and its memory bounded, and the
//! refusals audited in aggregate rather than one record each.

use consentry_testkit::pki::{Ca, Usage};
use consentry_testkit::{signal, wait_exit, Children, Env};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WHY: &str = "patient called about programme enrolment";

/// One test of this binary at a time: the abuse test measures latency on
/// a two-core machine, and the others' processes would be its noise.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A CA, a server certificate for localhost/127.0.0.1, a client
/// certificate it signs, and a client certificate of another CA.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client: (PathBuf, PathBuf),
    rogue_client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    let root = Ca::new("Consentry test CA");
    let other = Ca::new("Someone else's CA");
    let (server_cert, server_key) = root
        .leaf("vault", &["localhost", "127.0.0.1"], Usage::Server)
        .write(dir, "vault");
    Pki {
        ca: root.write(dir.join("ca.crt")),
        server_cert,
        server_key,
        client: root
            .leaf("crm-client", &["crm-client"], Usage::Client)
            .write(dir, "crm-client"),
        rogue_client: other
            .leaf("rogue-client", &["rogue-client"], Usage::Client)
            .write(dir, "rogue-client"),
    }
}

/// One HTTP/1.1 exchange over TLS; `Err` when the handshake or the
/// exchange fails.
fn https(
    port: u16,
    ca: &Path,
    client: Option<&(PathBuf, PathBuf)>,
    request: &[u8],
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("ca pem"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).expect("cert")],
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(request).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // The server may close without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    if text.is_empty() {
        Err("no answer".into())
    } else {
        Ok(text)
    }
}

fn resolve_request(credential: &str, token: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "token": token, "purpose": "patient-support", "justification": WHY,
    })
    .to_string();
    format!(
        "POST /v1/resolve HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {credential}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_of(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// A token in the test's vault file, and a caller that may resolve it.
fn token_and_caller(env: &Env, rate_per_minute: &str) -> (String, String) {
    let token = env.subject_token(
        "crm",
        "subject-a",
        b"urn:oid:2.16.840.1.113883.3.7777.1|CS0000042",
    );
    let credential = env.add_caller(
        "support-desk",
        &[
            "--domains",
            "crm",
            "--purposes",
            "patient-support",
            "--rate-per-minute",
            rate_per_minute,
        ],
    );
    (token, credential)
}

#[test]
fn tls_and_mutual_tls_admit_only_callers_with_a_certificate_of_the_ca() {
    let _serial = serial();
    let env = Env::new("vault-tls");
    let pki = pki(&env.dir);
    let (token, credential) = token_and_caller(&env, "600");
    // A quarantined record, to open through the vault with the CLI.
    let drift = b"MSH|^~\\&|CSEHR|CSHOSP|X|Y|20260101120000||ADT^A01^ADT_A01|ZTLS1|P|2.5\rEVN|A01|20260101120000\rPID|1||CS9999^^^CSHOSP^MR||Doe^Jo||19800101|F\rZPD|1|x\r";
    env.publish("ehr.hl7v2", &[(None, drift.as_slice())]);
    env.run_ok(&["run", "normalize", "--exit-when-idle", "3"]);
    let quarantined = env.read("quarantine");
    assert_eq!(quarantined.len(), 1);
    let id = consentry_runtime::inspect::header(&quarantined[0], "quarantine-id")
        .expect("id")
        .to_string();
    let ops = env.add_caller(
        "ops",
        &["--domains", "quarantine", "--purposes", "quarantine-review"],
    );
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let served = env.serve_vault_with(
        &[
            "--tls-cert",
            &path(&pki.server_cert),
            "--tls-key",
            &path(&pki.server_key),
            "--client-ca",
            &path(&pki.ca),
        ],
        &[],
    );
    let (port, mport) = (served.port, served.metrics_port);
    let mut vault = Children(vec![served.child]);
    let request = resolve_request(&credential, &token);

    let ok = https(port, &pki.ca, Some(&pki.client), &request).expect("mutual TLS call");
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert_eq!(body_of(&ok)["value"], "CS0000042");

    // Plain HTTP to a TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    plain.write_all(&request).expect("write");
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out);
    assert!(
        !String::from_utf8_lossy(&out).contains("CS0000042") && !out.starts_with(b"HTTP/1.1 200"),
        "plain HTTP answered"
    );
    // No client certificate, or one of another CA: no exchange.
    for client in [None, Some(&pki.rogue_client)] {
        let r = https(port, &pki.ca, client, &request);
        assert!(
            r.is_err(),
            "answered without a trusted client certificate: {r:?}"
        );
    }
    // The CLI opens a quarantined record over mutual TLS, trusting the
    // vault's CA and presenting the caller's certificate.
    let show = |client: Option<&(PathBuf, PathBuf)>| {
        let mut c = env.cmd();
        c.env("CONSENTRY_VAULT_CREDENTIAL", &ops)
            .env("CONSENTRY_VAULT_URL", format!("https://localhost:{port}"))
            .env("CONSENTRY_VAULT_API_CA", &pki.ca);
        if let Some((cert, key)) = client {
            c.env("CONSENTRY_VAULT_CLIENT_CERT", cert)
                .env("CONSENTRY_VAULT_CLIENT_KEY", key);
        }
        c.args(["quarantine", "show", &id, "--justification", WHY])
            .output()
            .expect("runs")
    };
    let shown = show(Some(&pki.client));
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(String::from_utf8_lossy(&shown.stdout).contains("ZPD|1|x"));
    assert!(
        !show(None).status.success(),
        "no client certificate, no answer"
    );
    env.wait_for("the refusals counted", Duration::from_secs(10), || {
        consentry_testkit::metric_value(
            &consentry_testkit::scrape(mport),
            "consentry_http_refused_total{reason=\"tls_handshake_failed\",server=\"vault\"}",
        )
        .is_some_and(|n| n >= 4.0)
    });
    signal(&vault.0[0], "TERM");
    assert!(wait_exit(&mut vault.0[0], Duration::from_secs(20)).success());
    let refused: Vec<_> = env
        .audits()
        .into_iter()
        .filter(|a| a.stage == "vault" && a.reason_code == "tls_handshake_failed")
        .collect();
    assert_eq!(refused.len(), 1, "one aggregate record: {refused:?}");
    let calls: u64 = refused[0].transformations[0]
        .params
        .strip_prefix("calls=")
        .and_then(|p| p.split(',').next()?.parse().ok())
        .unwrap_or(0);
    assert!(calls >= 4, "{:?}", refused[0].transformations);
}

#[test]
fn production_refuses_to_serve_without_tls_or_a_justification_pattern() {
    let _serial = serial();
    let env = Env::new("vault-prod");
    let pki = pki(&env.dir);
    let callers = env.dir.join("callers.json");
    std::fs::write(&callers, r#"{"callers": []}"#).expect("write");
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let base = [
        "vault".to_string(),
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--callers".into(),
        path(&callers),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
    ];
    let run = |extra: &[String]| {
        let out = env
            .cmd()
            .env("CONSENTRY_ENVIRONMENT", "production")
            .args(base.iter().chain(extra))
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&[]);
    assert!(!ok && err.contains("without TLS in production"), "{err}");
    let tls = [
        "--tls-cert".to_string(),
        path(&pki.server_cert),
        "--tls-key".into(),
        path(&pki.server_key),
    ];
    let (ok, err) = run(&tls);
    assert!(!ok && err.contains("--justification-pattern"), "{err}");
    let mut complete = tls.to_vec();
    complete.extend([
        "--justification-pattern".to_string(),
        r"\b[A-Z]+-[0-9]+\b".into(),
    ]);
    let (ok, err) = run(&complete);
    assert!(!ok && err.contains("Kafka only over TLS"), "{err}");
    // A key file that is not PEM is named, its content never shown.
    std::fs::write(env.dir.join("bad.key"), "s3cret-not-a-key").expect("write");
    let (ok, err) = run(&[
        "--tls-cert".to_string(),
        path(&pki.server_cert),
        "--tls-key".into(),
        path(&env.dir.join("bad.key")),
        "--justification-pattern".into(),
        r"\b[A-Z]+-[0-9]+\b".into(),
    ]);
    assert!(!ok && err.contains("bad.key"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// A TCP connection from `source` (any 127.x address is this host).
fn connect_from(source: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn exchange_from(source: IpAddr, port: u16, request: &[u8]) -> std::io::Result<String> {
    let mut s = connect_from(source, port)?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// `n` legitimate resolves from 127.0.0.2, one connection each: their
/// latencies, sorted, and how many were answered 200 with the identity.
fn legitimate_calls(port: u16, request: &[u8], n: usize) -> (Vec<Duration>, usize) {
    let source: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut latencies = Vec::with_capacity(n);
    let mut answered = 0;
    for _ in 0..n {
        let t = Instant::now();
        if let Ok(r) = exchange_from(source, port, request) {
            if status_of(&r) == 200 && r.contains("CS0000042") {
                answered += 1;
            }
        }
        latencies.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    latencies.sort();
    (latencies, answered)
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[test]
fn legitimate_calls_are_answered_while_the_server_is_abused() {
    let _serial = serial();
    let env = Env::new("vault-abuse");
    let (token, credential) = token_and_caller(&env, "1000000");
    let served = env.serve_vault_with(&[], &[]);
    let (port, mport) = (served.port, served.metrics_port);
    let mut vault = Children(vec![served.child]);
    let pid = vault.0[0].id();
    let request = resolve_request(&credential, &token);
    const CALLS: usize = 150;
    // Warm up (first audit write, registry lookups), then the baseline.
    let _ = legitimate_calls(port, &request, 10);
    let (quiet, answered) = legitimate_calls(port, &request, CALLS);
    assert_eq!(answered, CALLS, "every call answered without abuse");
    let rss_before = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
    // Slow-loris: 8 peers each try to hold 80 connections open with a head
    // that never ends (64 per peer are allowed).
    for peer in 10..18u8 {
        let stop = Arc::clone(&stop);
        attackers.push(std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = (0..80)
                .filter_map(|_| {
                    let mut s = connect_from(ip(peer), port).ok()?;
                    s.write_all(b"POST /v1/resolve HTTP/1.1\r\nHost: x\r\n")
                        .ok()?;
                    Some(s)
                })
                .collect();
            while !stop.load(Ordering::SeqCst) {
                held.retain_mut(|s| s.write_all(b"X-a: b\r\n").is_ok());
                std::thread::sleep(Duration::from_millis(500));
            }
        }));
    }
    // Slow bodies from a known caller: a declared body sent a byte a second.
    {
        let stop = Arc::clone(&stop);
        let slow_body = format!(
            "POST /v1/resolve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {credential}\r\n\
             Content-Length: 60000\r\n\r\n{{"
        );
        attackers.push(std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = (0..40)
                .filter_map(|_| {
                    let mut s = connect_from(ip(20), port).ok()?;
                    s.write_all(slow_body.as_bytes()).ok()?;
                    Some(s)
                })
                .collect();
            while !stop.load(Ordering::SeqCst) {
                held.retain_mut(|s| s.write_all(b" ").is_ok());
                std::thread::sleep(Duration::from_secs(1));
            }
        }));
    }
    // Oversized heads, huge declared bodies, unauthenticated calls, and a
    // burst of connections opened and dropped, each from its own peer.
    let floods: Vec<(u8, Vec<u8>)> = vec![
        (
            21,
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(256 * 1024)
            )
            .into_bytes(),
        ),
        // With a valid credential, or it is answered 401 before its
        // declared length is even looked at.
        (
            22,
            format!(
                "POST /v1/resolve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {credential}\r\n\
                 Content-Length: 1125899906842624\r\n\r\n{{"
            )
            .into_bytes(),
        ),
        (23, resolve_request("cvk_not-a-credential", &token)),
        (24, Vec::new()),
    ];
    for (peer, raw) in floods {
        for _ in 0..2 {
            let (stop, attempts, raw) = (Arc::clone(&stop), Arc::clone(&attempts), raw.clone());
            attackers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // The attackers share this machine's two cores with the
                    // vault: paced so that what is measured is the server's
                    // defence, not their CPU (still thousands a second).
                    std::thread::sleep(Duration::from_millis(2));
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut s) = connect_from(ip(peer), port) {
                        if !raw.is_empty() {
                            let _ = s.write_all(&raw);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                            let mut sink = [0u8; 4096];
                            let _ = s.read(&mut sink);
                        }
                    }
                }
            }));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let (abused, answered) = legitimate_calls(port, &request, CALLS);
    let rss_during = rss_kib(pid);
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        let _ = a.join();
    }
    assert!(
        vault.0[0].try_wait().expect("status").is_none(),
        "the vault survived"
    );
    let (q, a) = (p99(&quiet), p99(&abused));
    eprintln!(
        "vault abuse: legitimate p99 {:.1} ms quiet, {:.1} ms under abuse ({:.2}x); p50 {:.1} / {:.1} ms; \
         {} abusive connections attempted; RSS {} KiB before, {} KiB during",
        q.as_secs_f64() * 1e3,
        a.as_secs_f64() * 1e3,
        a.as_secs_f64() / q.as_secs_f64().max(1e-6),
        quiet[CALLS / 2].as_secs_f64() * 1e3,
        abused[CALLS / 2].as_secs_f64() * 1e3,
        attempts.load(Ordering::Relaxed),
        rss_before,
        rss_during,
    );
    assert_eq!(
        answered, CALLS,
        "every legitimate call answered under abuse"
    );
    assert!(a < Duration::from_secs(2), "p99 under abuse {a:?}");
    assert!(
        rss_during < rss_before + 256 * 1024,
        "memory grew from {rss_before} to {rss_during} KiB"
    );
    let metrics = consentry_testkit::scrape(mport);
    for reason in [
        "peer_connection_limit",
        "header_too_large",
        "body_too_large",
    ] {
        let line = format!("consentry_http_refused_total{{reason=\"{reason}\",server=\"vault\"}}");
        assert!(
            consentry_testkit::metric_value(&metrics, &line).is_some_and(|n| n > 0.0),
            "{reason} not counted"
        );
    }
    let unauthenticated =
        consentry_testkit::metric_value(&metrics, "consentry_vault_unauthenticated_total")
            .unwrap_or(0.0);
    assert!(unauthenticated > 10.0, "{unauthenticated}");
    signal(&vault.0[0], "TERM");
    assert!(wait_exit(&mut vault.0[0], Duration::from_secs(30)).success());
    // Thousands of refusals, a handful of audit records: one per peer and
    // reason per interval.
    let audits: Vec<_> = env
        .audits()
        .into_iter()
        .filter(|a| a.stage == "vault")
        .collect();
    let aggregated: Vec<_> = audits
        .iter()
        .filter(|a| a.actor.as_deref().is_some_and(|x| x.starts_with("peer:")))
        .collect();
    let allowed = audits.iter().filter(|a| a.decision == "allow").count();
    assert_eq!(allowed, 2 * CALLS + 10);
    assert!(
        !aggregated.is_empty() && aggregated.len() < 200,
        "{} aggregate records",
        aggregated.len()
    );
    let counted: u64 = aggregated
        .iter()
        .filter(|a| a.reason_code == "unauthenticated")
        .filter_map(|a| {
            a.transformations[0]
                .params
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(
        counted as f64, unauthenticated,
        "every failed authentication audited"
    );
}
