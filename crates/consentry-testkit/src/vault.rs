//! The test environment's vault side: the key ring and vault its children
//! use, opened in process; vault callers; `consentry vault serve` started
//! and waited for; and what the stages should write for a synthetic feed.

use crate::env::Env;
use crate::inputs;
use crate::process::free_port;
use consentry_core::topology::Topology;
use consentry_core::CanonicalEvent;
use consentry_crypto::{Environment, KeyFile, KeyProvider, KeyRing};
use consentry_stages::Services;
use consentry_synth::{Feed, SynthRecord};
use consentry_vault::{FileStore, Vault};
use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

/// A running `consentry vault serve`: the child, the port it serves on and
/// its metrics port.
pub struct VaultServer {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
}

impl Env {
    /// The key ring and vault this test's children use. The vault file is
    /// locked while open: drop the services before a child runs.
    pub fn services(&self) -> Services {
        let (ring, vault) = self.open_vault();
        Services {
            keys: Some(Arc::new(ring)),
            vault: Some(Arc::new(vault)),
        }
    }

    /// Adds a vault caller to this test's callers file; returns its
    /// credential (printed once).
    pub fn add_caller(&self, id: &str, extra: &[&str]) -> String {
        let file = self.dir.join("callers.json");
        let mut args = vec![
            "vault",
            "caller",
            "add",
            "--callers",
            file.to_str().expect("utf-8 path"),
            "--id",
            id,
        ];
        args.extend_from_slice(extra);
        let out = self.run_ok(&args);
        out.lines()
            .find_map(|l| l.split("store it now): ").nth(1))
            .expect("credential printed")
            .trim()
            .to_string()
    }

    /// `consentry vault serve` on a free port with this test's callers
    /// file, once it accepts connections. Returns the child and its port.
    pub fn serve_vault(&self) -> (Child, u16) {
        // Unauthenticated calls audited in aggregate within a second.
        let served = self.serve_vault_with(&["--refusal-audit-interval-s", "0.5"], &[]);
        (served.child, served.port)
    }

    /// `consentry vault serve` on free ports (service and metrics) with
    /// this test's callers file, `extra` arguments after those, and `vars`
    /// set in its environment; returned once it accepts connections.
    pub fn serve_vault_with(&self, extra: &[&str], vars: &[(&str, &str)]) -> VaultServer {
        let (port, metrics_port) = (free_port(), free_port());
        let listen = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{metrics_port}");
        let callers = self.dir.join("callers.json");
        let mut cmd = self.cmd();
        cmd.args([
            "vault",
            "serve",
            "--listen",
            &listen,
            "--callers",
            callers.to_str().expect("utf-8 path"),
            "--metrics-addr",
            &metrics,
        ])
        .args(extra)
        .envs(vars.iter().copied());
        let child = self.spawn_command(cmd);
        self.wait_for("the vault to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        VaultServer {
            child,
            port,
            metrics_port,
        }
    }

    /// This test's key ring and vault, opened in process (not while a
    /// child holds the vault file).
    pub fn open_vault(&self) -> (KeyRing, Vault) {
        let ring = KeyFile::new(self.dir.join("keys.json"))
            .key_ring()
            .expect("key file");
        let store = FileStore::open(&self.dir.join("vault.redb")).expect("vault file");
        let vault = Vault::new(&ring, Environment::NonProduction, Box::new(store)).expect("vault");
        (ring, vault)
    }

    /// The linkage token of `subject` in `domain` for `identity`, issued
    /// by this test's vault opened in process (then closed again, for the
    /// children).
    pub fn subject_token(&self, domain: &str, subject: &str, identity: &[u8]) -> String {
        let (_, vault) = self.open_vault();
        vault
            .subject_token(domain, subject, identity, 1)
            .expect("issues")
    }

    /// A random token for `identity`, issued like [`Env::subject_token`].
    pub fn issue_token(&self, domain: &str, subject: &str, identity: &[u8]) -> String {
        let (_, vault) = self.open_vault();
        vault.issue(domain, subject, identity, 1).expect("issues")
    }

    /// What each stage should write for a synthetic feed (see
    /// `expected_outputs`), with this test's keys and vault: random linkage
    /// tokens issued here are the ones the children find.
    pub fn expected_outputs(
        &self,
        records: &[SynthRecord],
    ) -> BTreeMap<String, BTreeMap<String, CanonicalEvent>> {
        expected_outputs(&self.topology, &self.services(), records)
    }
}

/// What each stage should write for a synthetic feed, computed with the pure
/// stages in-process: (stage output topic) -> idempotency key -> event.
pub fn expected_outputs(
    topology: &Topology,
    services: &Services,
    records: &[SynthRecord],
) -> BTreeMap<String, BTreeMap<String, CanonicalEvent>> {
    let (consents, sources): (Vec<&SynthRecord>, Vec<&SynthRecord>) =
        records.iter().partition(|r| r.feed == Feed::Consent);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let stages = consentry_stages::run_in_process(
        topology,
        services,
        consents.into_iter().map(inputs::synth).collect(),
        sources.into_iter().map(inputs::synth).collect(),
        now_ms,
    )
    .expect("stages build");
    let mut out: BTreeMap<String, BTreeMap<String, CanonicalEvent>> = BTreeMap::new();
    for (_, outcomes) in stages {
        for o in outcomes.into_iter().flat_map(|u| u.outputs) {
            out.entry(o.topic.to_string())
                .or_default()
                .insert(o.idempotency_key.to_string(), *o.event);
        }
    }
    out
}
