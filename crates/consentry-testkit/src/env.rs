//! The test environment: a topic prefix of its own (and so its own topics,
//! groups, transactional ids and subjects) on the stack `make stack-up`
//! started, a directory with a fresh key ring, and the `consentry` binary
//! pointed at both, its children logging to files shown if the test fails.

use crate::topology::{root, shipped_topology};
use consentry_core::topology::Topology;
use consentry_crypto::{Environment, KeyFile, KeyRing};
use consentry_runtime::Connection;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const SESSION_TIMEOUT_MS: u32 = 6000;

pub struct Env {
    pub prefix: String,
    pub conn: Connection,
    pub topology: Topology,
    /// This test's files: the key ring (`keys.json`) and the vault
    /// (`vault.redb`) its children use, and spawned children's logs.
    pub dir: PathBuf,
    /// Logs of the children `spawn` started, shown if the test fails.
    child_logs: std::cell::RefCell<Vec<PathBuf>>,
    /// Variables every later command gets, over the defaults (`set_env`).
    overrides: std::cell::RefCell<Vec<(String, String)>>,
}

impl Drop for Env {
    /// A failing test shows the end of every spawned child's log: a stage
    /// that stopped or stalled says why there.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for path in self.child_logs.borrow().iter() {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(
                std::env::var("CONSENTRY_TEST_LOG_LINES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60),
            )..];
            eprintln!("--- {} (last {} lines)", path.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

impl Env {
    /// A fresh prefix with the topology's topics created and schemas
    /// registered, and a fresh key ring and vault.
    pub fn new(name: &str) -> Env {
        Env::create(name, None)
    }

    /// A fresh prefix (new, empty topics) with `other`'s key ring and
    /// vault: the same deployment restarted on a replay of its input.
    pub fn sharing_keys(name: &str, other: &Env) -> Env {
        Env::create(name, Some(other.dir.clone()))
    }

    fn create(name: &str, dir: Option<PathBuf>) -> Env {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let prefix = format!(
            "it-{name}-{}-{}.",
            std::process::id(),
            nanos % 1_000_000_000
        );
        let conn = Connection {
            bootstrap: std::env::var("CONSENTRY_BOOTSTRAP")
                .unwrap_or_else(|_| "127.0.0.1:9092".into()),
            registry_url: std::env::var("CONSENTRY_SCHEMA_REGISTRY")
                .unwrap_or_else(|_| "http://127.0.0.1:8081".into()),
            topic_prefix: prefix.clone(),
            session_timeout_ms: SESSION_TIMEOUT_MS,
            ..Default::default()
        };
        let topology = shipped_topology();
        let dir = dir.unwrap_or_else(|| {
            let dir = std::env::temp_dir().join(prefix.trim_end_matches('.'));
            std::fs::create_dir_all(&dir).expect("test dir");
            let ring = KeyRing::generate(Environment::NonProduction).expect("key ring");
            KeyFile::new(dir.join("keys.json"))
                .save(&ring)
                .expect("key file");
            dir
        });
        let env = Env {
            prefix,
            conn,
            topology,
            dir,
            child_logs: Default::default(),
            overrides: Default::default(),
        };
        let out = env.run(&["topics", "apply"]);
        assert!(
            out.status.success(),
            "topics apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// The consentry binary, pointed at this test's prefix.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(consentry_bin());
        c.current_dir(root())
            .env("CONSENTRY_TOPIC_PREFIX", &self.prefix)
            .env("CONSENTRY_BOOTSTRAP", &self.conn.bootstrap)
            .env("CONSENTRY_SCHEMA_REGISTRY", &self.conn.registry_url)
            .env(
                "CONSENTRY_SESSION_TIMEOUT_MS",
                SESSION_TIMEOUT_MS.to_string(),
            )
            .env("CONSENTRY_METRICS_ADDR", "127.0.0.1:0")
            .env("CONSENTRY_KEY_FILE", self.dir.join("keys.json"))
            .env("CONSENTRY_VAULT", self.dir.join("vault.redb"))
            .env_remove("CONSENTRY_MASTER_KEY")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        for (k, v) in self.overrides.borrow().iter() {
            c.env(k, v);
        }
        c
    }

    /// Every command from now on gets `key=value` (over the defaults: a
    /// PostgreSQL vault, which several processes share, instead of the
    /// file, which admits one).
    pub fn set_env(&self, key: &str, value: &str) {
        self.overrides
            .borrow_mut()
            .push((key.to_string(), value.to_string()));
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("consentry runs")
    }

    /// Runs to completion and asserts success; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "consentry {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a child with its stdout piped (the run summary) and its log
    /// in a file: nobody reads a long-running child's stderr, and a pipe
    /// that fills up would block the child's next log line, and with it a
    /// stage. The log is shown if the test fails.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = self.cmd();
        cmd.args(args);
        self.spawn_command(cmd)
    }

    /// `spawn` for a command of `cmd()` the test has adjusted.
    pub fn spawn_command(&self, mut cmd: Command) -> Child {
        let mut logs = self.child_logs.borrow_mut();
        // Named by prefix too: `sharing_keys` gives two envs one dir.
        let path = self
            .dir
            .join(format!("{}child-{}.log", self.prefix, logs.len()));
        let log = std::fs::File::create(&path).expect("child log file");
        logs.push(path);
        cmd.env(
            "RUST_LOG",
            std::env::var("CONSENTRY_TEST_CHILD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("consentry starts")
    }

    pub fn physical(&self, logical: &str) -> String {
        self.conn.physical(logical)
    }

    /// Waits until `check` is true, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The `consentry` binary of this build: `CONSENTRY_BIN` if set, else the
/// one cargo built beside the running test binary (`target/<profile>/`,
/// the test binary being in its `deps/`). Cargo builds a package's
/// binaries before its integration tests, and only those tests see
/// `CARGO_BIN_EXE_consentry`, which a library cannot read.
pub fn consentry_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CONSENTRY_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join(format!("consentry{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no consentry binary at {} (set CONSENTRY_BIN)",
        bin.display()
    );
    bin
}
