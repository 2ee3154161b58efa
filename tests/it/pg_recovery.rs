//! The vault's PostgreSQL store over TLS, through a restart: a PostgreSQL
//! of the test's own (initdb into a scratch directory, TLS only, its
//! certificate from a CA made here), `run all` (tokenize issues vaulted
//! tokens) and `vault serve` against it, and the database stopped for a
//! few seconds mid-stream. Both processes report the outage on
//! `/healthz` while it lasts and recover by themselves; every destination
//! ends with exactly the records the feed owes it, none quarantined as
//! `unavailable`; the vault answers again (the recovery time is printed).

use consentry_synth::{generate, SynthConfig};
use consentry_testkit::pki::{Ca, Usage};
use consentry_testkit::{free_port, Children, Env};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A PostgreSQL cluster in a scratch directory, stopped when dropped.
struct ScratchPg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl ScratchPg {
    fn pg_ctl(&self, args: &[&str]) -> bool {
        let ctl = self.bin.join("pg_ctl");
        let data = self.data.to_str().expect("utf-8 path");
        let log = self.data.join("server.log");
        let log = log.to_str().expect("utf-8 path");
        let mut all = vec!["-D", data, "-l", log, "-w", "-t", "60"];
        all.extend_from_slice(args);
        run_pg(&ctl, &all, self.as_postgres)
    }

    fn start(&self) {
        assert!(self.pg_ctl(&["start"]), "{}", self.log());
    }

    fn stop(&self) {
        assert!(self.pg_ctl(&["stop", "-m", "fast"]), "{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(self.data.parent().unwrap_or(&self.data));
    }
}

fn run_pg(program: &Path, args: &[&str], as_postgres: bool) -> bool {
    let mut cmd = if as_postgres {
        // PostgreSQL refuses to run as root.
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries under /usr/lib/postgresql (.ci/run installs them)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("initdb")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A CA and a server certificate for 127.0.0.1: (ca.crt path, cert PEM, key PEM).
fn certificates(dir: &Path) -> (PathBuf, String, String) {
    let ca = Ca::new("Consentry test PostgreSQL CA");
    let server = ca.leaf("127.0.0.1", &["127.0.0.1", "localhost"], Usage::Server);
    (
        ca.write(dir.join("pg-ca.crt")),
        server.cert_pem,
        server.key_pem,
    )
}

/// initdb, TLS only (`hostssl` in pg_hba.conf, nothing else), started.
fn scratch_postgres(ca_dir: &Path) -> (ScratchPg, PathBuf) {
    let as_postgres = is_root();
    let root = std::env::temp_dir().join(format!("consentry-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("scratch dir");
    let data = root.join("data");
    if as_postgres {
        assert!(Command::new("chown")
            .args(["-R", "postgres", root.to_str().expect("utf-8")])
            .status()
            .expect("chown")
            .success());
    }
    let bin = pg_bin();
    assert!(
        run_pg(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync"
            ],
            as_postgres
        ),
        "initdb failed"
    );
    let (ca, cert, key) = certificates(ca_dir);
    std::fs::write(data.join("server.crt"), cert).expect("write");
    std::fs::write(data.join("server.key"), key).expect("write");
    let port = free_port();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .expect("conf");
    write!(
        conf,
        "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
         ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n",
        root.display()
    )
    .expect("conf");
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all all 127.0.0.1/32 trust\n",
    )
    .expect("hba");
    if as_postgres {
        for f in ["server.crt", "server.key", "pg_hba.conf"] {
            let p = data.join(f);
            let _ = Command::new("chown")
                .args(["postgres", p.to_str().expect("utf-8")])
                .status();
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let pg = ScratchPg {
        bin,
        data,
        port,
        as_postgres,
    };
    pg.start();
    (pg, ca)
}

fn health(port: u16) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn resolve(port: u16, credential: &str, token: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    agent
        .post(&format!("http://127.0.0.1:{port}/v1/resolve"))
        .header("Authorization", &format!("Bearer {credential}"))
        .send_json(serde_json::json!({
            "token": token, "purpose": "patient-support",
            "justification": "patient called about programme enrolment",
        }))
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn tokenize_and_the_vault_ride_out_a_postgres_restart_over_tls() {
    let env = Env::new("pg-restart");
    let (pg, ca) = scratch_postgres(&env.dir);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.port
    );
    let schema = "consentry_vault";
    // Plain connections are refused: the store speaks TLS or nothing.
    assert!(consentry_vault::PgStore::connect(&conninfo, schema).is_err());
    let ca_str = ca.to_str().expect("utf-8 path").to_string();
    // A token in the store before anything serves, and a caller for it.
    let token = {
        let (ring, _) = env.open_vault();
        let store = consentry_vault::PgStore::connect_with(
            &conninfo,
            schema,
            consentry_vault::PgOptions {
                ca: Some(ca.clone()),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("TLS connection: {e}\n{}", pg.log()));
        let vault = consentry_vault::Vault::new(
            &ring,
            consentry_crypto::Environment::NonProduction,
            Box::new(store),
        )
        .expect("vault");
        vault
            .issue("crm", "subject-a", b"urn:mrn|CS0000042", 1)
            .expect("issues")
    };
    let credential = env.add_caller(
        "desk",
        &["--domains", "crm", "--purposes", "patient-support"],
    );

    let feed = generate(&SynthConfig::new(11, 24));
    let expected = env.expected_outputs(&feed);
    // The consents first, through a consent ledger of their own (a
    // second ledger beside `run all`'s would fence it), then the EHR
    // records in two halves around the outage.
    let (consents, ehr): (Vec<_>, Vec<_>) = feed
        .iter()
        .cloned()
        .partition(|r| r.feed == consentry_synth::Feed::Consent);
    env.publish_synth(&consents);
    let (first, second) = ehr.split_at(ehr.len() / 2);
    let run_port = free_port();
    let pg_vars = [
        ("CONSENTRY_VAULT", conninfo.as_str()),
        ("CONSENTRY_VAULT_CA", ca_str.as_str()),
        ("CONSENTRY_VAULT_SCHEMA", schema),
    ];
    let mut run_all = env.cmd();
    run_all.envs(pg_vars).args([
        "run",
        "all",
        "--metrics-addr",
        &format!("127.0.0.1:{run_port}"),
    ]);
    let mut children = Children(vec![env.spawn_command(run_all)]);
    let vault = env.serve_vault_with(&["--vault-reconnect-s", "2"], &pg_vars);
    let (vault_port, vault_mport) = (vault.port, vault.metrics_port);
    children.0.push(vault.child);
    env.wait_for("both to be healthy", Duration::from_secs(60), || {
        health(run_port) == 200 && health(vault_mport) == 200
    });
    assert_eq!(resolve(vault_port, &credential, &token), 200);

    env.publish_synth(first);
    let trial = env
        .topology
        .purposes
        .values()
        .find(|p| p.name == "trial-recruitment")
        .expect("purpose")
        .topic
        .clone();
    env.wait_for("tokenize under way", Duration::from_secs(120), || {
        !env.read(&trial).is_empty()
    });

    // The outage: the database goes away while the second half arrives.
    pg.stop();
    let down = Instant::now();
    env.publish_synth(second);
    env.wait_for("both to report the outage", Duration::from_secs(15), || {
        health(run_port) == 503 && health(vault_mport) == 503
    });
    let refused = resolve(vault_port, &credential, &token);
    assert_eq!(refused, 503, "the vault says it cannot answer");
    // Down for at least 3 s.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(down.elapsed()));
    pg.start();
    let up = Instant::now();
    env.wait_for("the vault to answer again", Duration::from_secs(30), || {
        resolve(vault_port, &credential, &token) == 200
    });
    let vault_back = up.elapsed();
    env.wait_for("both to be healthy again", Duration::from_secs(30), || {
        health(run_port) == 200 && health(vault_mport) == 200
    });
    let healthy_back = up.elapsed();
    eprintln!(
        "postgres restart: down {:.1} s; vault answering {:.2} s and both healthy {:.2} s after it came back",
        (up - down).as_secs_f64(),
        vault_back.as_secs_f64(),
        healthy_back.as_secs_f64()
    );
    assert!(vault_back < Duration::from_secs(10), "{vault_back:?}");

    // Every destination ends with exactly what the feed owes it.
    let destinations: Vec<String> = env
        .topology
        .purposes
        .values()
        .map(|p| p.topic.clone())
        .collect();
    let keys = |topic: &str| -> std::collections::BTreeMap<String, Vec<u8>> {
        env.read(topic)
            .iter()
            .filter_map(|m| {
                let key = consentry_runtime::inspect::header(m, "idempotency-key")?;
                Some((
                    key.to_string(),
                    consentry_runtime::rdkafka::Message::payload(m)?.to_vec(),
                ))
            })
            .collect()
    };
    env.wait_for(
        "every destination to be complete",
        Duration::from_secs(180),
        || {
            destinations
                .iter()
                .all(|t| keys(t).len() >= expected.get(t).map_or(0, |e| e.len()))
        },
    );
    for t in &destinations {
        let got = keys(t);
        let want = expected.get(t).map_or(0, |e| e.len());
        assert_eq!(got.len(), want, "{t}: distinct records");
        // A record seen twice (tansu shows aborted attempts) is the same
        // record: nothing was issued twice.
        for m in env.read(t) {
            if let Some(k) = consentry_runtime::inspect::header(&m, "idempotency-key") {
                assert_eq!(
                    consentry_runtime::rdkafka::Message::payload(&m)
                        .map(<[u8]>::to_vec)
                        .as_ref(),
                    got.get(k),
                    "{t}: one record per key"
                );
            }
        }
    }
    let unavailable = env
        .read("quarantine")
        .iter()
        .filter(|m| consentry_runtime::inspect::header(m, "reason-code") == Some("unavailable"))
        .count();
    assert_eq!(unavailable, 0, "an outage is no verdict on a record");
    assert!(
        children
            .0
            .iter_mut()
            .all(|c| c.try_wait().expect("status").is_none()),
        "both still running"
    );
}
