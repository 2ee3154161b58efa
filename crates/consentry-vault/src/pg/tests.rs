//! The PostgreSQL store against a live server (CONSENTRY_TEST_POSTGRES,
//! else 127.0.0.1:5432): the vault suite, a dump that maps no token to an
//! MRN, and a pool that survives the server killing its connections.

use super::*;
use crate::VaultStore;
use postgres::NoTls;

/// The server the tests use: CONSENTRY_TEST_POSTGRES, else the local
/// one `.ci/run` starts. A missing server fails the test: the suite
/// must run against both backends.
fn params() -> String {
    std::env::var("CONSENTRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into())
}

#[test]
fn postgres_backend_passes_the_vault_suite() {
    let schema = format!(
        "vault_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default()
    );
    let store = PgStore::connect(&params(), &schema).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {:?} is required for this suite: {e}",
            params()
        )
    });
    crate::suite::exercise(&store, &|| {
        Box::new(PgStore::connect(&params(), &schema).expect("reconnects"))
    });
    // A dump of the database, without the key ring, maps no token to an
    // MRN: every table as text holds no MRN and no subject key.
    let ring =
        consentry_crypto::KeyRing::generate(consentry_crypto::Environment::NonProduction).unwrap();
    let vault = crate::Vault::new(
        &ring,
        consentry_crypto::Environment::NonProduction,
        Box::new(PgStore::connect(&params(), &schema).expect("connects")),
    )
    .unwrap();
    let mrns: Vec<String> = (0..100)
        .map(|i| format!("MRN{:07}", 5_000_000 + i))
        .collect();
    let subjects = crate::suite::fill_with_subjects(&vault, &mrns);
    let mut dump = Vec::new();
    for table in ["subject_keys", "tokens", "subject_tokens", "tombstones"] {
        for row in store
            .pool
            .get()
            .unwrap()
            .query(&format!("SELECT t::text FROM {schema}.{table} t"), &[])
            .unwrap()
        {
            dump.extend_from_slice(row.get::<_, String>(0).as_bytes());
        }
    }
    assert!(dump.windows(11).any(|w| w == b"tok:trial:r"));
    assert_eq!(crate::suite::findable(&dump, &mrns, &subjects), 0);
    store
        .pool
        .get()
        .unwrap()
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
    assert!(PgStore::connect(&params(), "Bad-Name").is_err());
}

#[test]
fn a_connection_the_server_kills_is_replaced_and_the_operation_retried() {
    let app = format!("consentry_pool_test_{}", std::process::id());
    let schema = format!("{app}_s");
    let conninfo = format!("{} application_name={app}", params());
    let store = PgStore::connect(&conninfo, &schema).expect("connects");
    assert_eq!(store.subject_key("s", "d").unwrap(), None);
    assert!(store.ping().is_ok());
    // The server ends every connection of the pool (a restart, a
    // failover, an idle timeout on a proxy).
    let mut admin = postgres::Client::connect(&params(), NoTls).unwrap();
    let killed = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap();
    assert!(killed >= 1, "the pool held a connection");
    let wrapped = b"wrapped-key".to_vec();
    assert_eq!(
        store.subject_key_or_insert("s", "d", &wrapped).unwrap(),
        wrapped,
        "answered on a new connection"
    );
    assert_eq!(store.subject_key("s", "d").unwrap(), Some(wrapped));
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
    // A plain connection string asking for TLS without a CA is refused,
    // naming the flag and never the string.
    let e = PgStore::connect(
        &format!("{} sslmode=require password=s3cret", params()),
        "x",
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(e.contains("--vault-ca") && !e.contains("s3cret"), "{e}");
    let e = PgStore::connect("host=127.0.0.1 password=s3cret bogus_option=1", "x")
        .err()
        .expect("refused")
        .to_string();
    assert!(!e.contains("s3cret"), "{e}");
}
