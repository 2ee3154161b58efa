//! Consentry as a client of secured services, as far as the local stack
//! allows (tansu speaks plaintext only): every kind of Kafka client the
//! runtime makes opens its broker connections with a TLS ClientHello when
//! the connection says `ssl` or `sasl_ssl` (seen by a listener here, with
//! the real librdkafka), and the schema-registry client speaks https to a
//! registry with a private CA and basic or bearer credentials (a TLS
//! listener here answering like the registry), refusing one it cannot
//! verify and never echoing a refusal.

// The Kafka half needs `--features kafka-tls`; without it its helpers rest.
#![cfg_attr(not(feature = "kafka-tls"), allow(dead_code, unused_imports))]

use consentry_runtime::http::{self, Handler, Limits, Server, TlsFiles};
use consentry_runtime::rdkafka::admin::AdminClient;
use consentry_runtime::rdkafka::client::DefaultClientContext;
use consentry_runtime::rdkafka::consumer::{BaseConsumer, Consumer};
use consentry_runtime::rdkafka::producer::{BaseProducer, Producer};
use consentry_runtime::registry::RegistryClient;
use consentry_runtime::security::{
    KafkaSecurity, RegistryAccess, RegistryAuth, Secret, SecurityProtocol,
};
use consentry_runtime::Connection;
use consentry_testkit::pki::{Ca, Usage};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The first bytes a client sends to a listener that never answers.
fn first_bytes(listener: &TcpListener) -> Vec<u8> {
    listener.set_nonblocking(false).expect("blocking listener");
    let (mut s, _) = listener.accept().expect("the client connects");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).expect("the client speaks first");
    buf.to_vec()
}

fn connection(port: u16, security: KafkaSecurity) -> Connection {
    Connection {
        bootstrap: format!("127.0.0.1:{port}"),
        kafka_security: security,
        ..Default::default()
    }
}

/// Makes a client connect (a metadata request that never completes here).
fn poke<C: consentry_runtime::rdkafka::ClientContext>(
    client: &consentry_runtime::rdkafka::client::Client<C>,
) {
    let _ = client.fetch_metadata(None, Duration::from_millis(200));
}

/// Starts each client kind against `conn` and returns what each sent first.
fn clients_first_bytes(listener: &TcpListener, conn: &Connection) -> Vec<(&'static str, Vec<u8>)> {
    let mut seen = Vec::new();
    let consumer: BaseConsumer = conn.consumer("g").create().expect("consumer");
    poke(consumer.client());
    seen.push(("consumer", first_bytes(listener)));
    drop(consumer);
    let reader: BaseConsumer = conn.reader().create().expect("reader");
    poke(reader.client());
    seen.push(("reader", first_bytes(listener)));
    drop(reader);
    let producer: BaseProducer = conn.producer().create().expect("producer");
    poke(producer.client());
    seen.push(("producer", first_bytes(listener)));
    drop(producer);
    let txn: BaseProducer = conn
        .transactional_producer("stage-0")
        .create()
        .expect("transactional producer");
    poke(txn.client());
    seen.push(("transactional producer", first_bytes(listener)));
    drop(txn);
    let admin: AdminClient<DefaultClientContext> = conn.admin().create().expect("admin");
    poke(admin.inner());
    seen.push(("admin", first_bytes(listener)));
    seen
}

fn is_tls_client_hello(b: &[u8]) -> bool {
    // A TLS handshake record (22), version 3.x.
    b.len() >= 3 && b[0] == 0x16 && b[1] == 0x03
}

/// Needs librdkafka with OpenSSL: `make test` runs it with `--features
/// kafka-tls`.
#[test]
#[cfg(feature = "kafka-tls")]
fn every_kafka_client_speaks_tls_when_the_connection_says_so() {
    let dir = scratch("kafka-tls");
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, make_pki(&dir).ca_pem).expect("write");
    for protocol in [SecurityProtocol::Ssl, SecurityProtocol::SaslSsl] {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sasl = protocol == SecurityProtocol::SaslSsl;
        let security = KafkaSecurity {
            protocol: Some(protocol),
            ca: Some(ca.clone()),
            sasl_username: sasl.then(|| "consentry".to_string()),
            sasl_password: sasl.then(|| Secret::new("s3cret".into())),
            ..KafkaSecurity::default()
        };
        security.check().expect("consistent");
        for (kind, bytes) in clients_first_bytes(&listener, &connection(port, security)) {
            assert!(
                is_tls_client_hello(&bytes),
                "{kind} over {protocol:?} sent {bytes:02x?}"
            );
        }
    }
    // And plaintext is what it says: a Kafka request, not TLS.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    for (kind, bytes) in clients_first_bytes(&listener, &connection(port, KafkaSecurity::default()))
    {
        assert!(!is_tls_client_hello(&bytes), "{kind}: {bytes:02x?}");
    }
}

struct Pki {
    ca_pem: String,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("consentry-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn make_pki(dir: &Path) -> Pki {
    let ca = Ca::new("Consentry test registry CA");
    let (server_cert, server_key) = ca
        .leaf("registry", &["localhost"], Usage::Server)
        .write(dir, "registry");
    Pki {
        ca_pem: ca.pem(),
        server_cert,
        server_key,
    }
}

/// Answers `GET /schemas/ids/7` like a registry, to one credential only.
struct FakeRegistry {
    authorization: String,
}

impl Handler for FakeRegistry {
    fn handle(&self, r: http::Request) -> http::Response {
        if r.authorization.as_deref() != Some(self.authorization.as_str()) {
            // A registry that quotes what it was sent.
            return http::Response::json(
                401,
                format!(r#"{{"message":"bad credentials {:?}"}}"#, r.authorization),
            );
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/schemas/ids/7") => http::Response::json(200, r#"{"schema":"\"string\""}"#),
            _ => http::Response::json(404, r#"{"error_code":40403}"#),
        }
    }
}

#[test]
fn the_registry_client_speaks_https_with_a_private_ca_and_credentials() {
    let dir = scratch("registry-tls");
    let pki = make_pki(&dir);
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, &pki.ca_pem).expect("write");
    let tls = http::server_tls(&TlsFiles {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: None,
    })
    .expect("tls");
    let basic = RegistryAuth::Basic {
        username: "consentry".into(),
        password: Secret::new("s3cret-pw".into()),
    };
    let bearer = RegistryAuth::Bearer(Secret::new("t0ken-abc".into()));
    for auth in [basic, bearer] {
        let server = Server::start(
            "registry",
            "127.0.0.1:0",
            Some(Arc::clone(&tls)),
            Limits::api(1 << 20),
            Arc::new(FakeRegistry {
                authorization: auth.header().to_string(),
            }),
        )
        .expect("server");
        let url = format!("https://localhost:{}", server.local_addr().port());
        let client = RegistryClient::with_access(
            &url,
            &RegistryAccess {
                ca: Some(ca.clone()),
                auth: Some(auth.clone()),
            },
        )
        .expect("client");
        assert_eq!(client.schema_by_id(7).expect("answered"), "\"string\"");

        // Wrong credentials: refused, and the refusal is not echoed.
        let wrong = match &auth {
            RegistryAuth::Basic { username, .. } => RegistryAuth::Basic {
                username: username.clone(),
                password: Secret::new("wrong-pw".into()),
            },
            RegistryAuth::Bearer(_) => RegistryAuth::Bearer(Secret::new("wrong-t0ken".into())),
        };
        let refused = RegistryClient::with_access(
            &url,
            &RegistryAccess {
                ca: Some(ca.clone()),
                auth: Some(wrong),
            },
        )
        .expect("client")
        .schema_by_id(7)
        .expect_err("refused")
        .to_string();
        assert!(refused.contains("401"), "{refused}");
        assert!(!refused.contains("wrong"), "{refused}");
        server.shutdown();
    }
    // A registry whose certificate the client cannot verify is refused.
    let server = Server::start(
        "registry",
        "127.0.0.1:0",
        Some(tls),
        Limits::api(1 << 20),
        Arc::new(FakeRegistry {
            authorization: String::new(),
        }),
    )
    .expect("server");
    let url = format!("https://localhost:{}", server.local_addr().port());
    let unverified = RegistryClient::new(&url).schema_by_id(7);
    assert!(
        matches!(
            unverified,
            Err(consentry_runtime::registry::RegistryError::Unreachable { .. })
        ),
        "{unverified:?}"
    );
    server.shutdown();
}
