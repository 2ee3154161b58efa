//! Every metric Consentry exports, registered in one place, and the
//! `/metrics` endpoint. Labels come from small fixed sets (stage, logical
//! topic, partition, reason, outcome): never an id, never a value.

use crate::http::{Handler, Limits, Refusal, Request, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

pub struct Metrics {
    registry: Registry,
    pub records_in: IntCounterVec,
    pub records_out: IntCounterVec,
    pub quarantined: IntCounterVec,
    pub duplicates: IntCounterVec,
    pub audit_records: IntCounterVec,
    pub transactions: IntCounterVec,
    pub batch_seconds: HistogramVec,
    pub commit_seconds: HistogramVec,
    pub consumer_lag: IntGaugeVec,
    pub dedup_keys: IntGaugeVec,
    pub assigned_partitions: IntGaugeVec,
    pub state_entries: IntGaugeVec,
    pub state_bytes: IntGaugeVec,
    pub redriven: IntCounterVec,
    /// Batches whose audit records were not acknowledged (nothing else of
    /// them was written): an alert.
    pub audit_write_failures: IntCounterVec,
    /// 1 when a stage stopped after repeated failures (fail closed): an alert.
    pub stage_halted: IntGaugeVec,
    /// Inputs that made a stage panic (each quarantined as `malformed`).
    pub stage_panics: IntCounterVec,
    /// Vault API calls by HTTP status and decision.
    pub vault_requests: IntCounterVec,
    /// Break-glass resolutions, by caller id (a configured name, not PHI).
    pub vault_break_glass: IntCounterVec,
    pub vault_request_seconds: HistogramVec,
    /// Failed vault authentications (401), counted here and audited in
    /// aggregate.
    pub vault_unauthenticated: prometheus::IntCounter,
    /// 1 while a dependency the process needs answers (`vault_store`), 0
    /// while it does not: `/healthz` answers 503 meanwhile.
    pub dependency_up: IntGaugeVec,
    /// Connections and requests an HTTP server refused before its handler
    /// (`http::Refusal`), by server (`vault`, `metrics`).
    http_refused: IntCounterVec,
    /// Consent decisions of the gate (and route's re-check), by purpose,
    /// decision and reason (fixed vocabularies: never a value).
    pub consent_decisions: IntCounterVec,
    /// Revocation appended to `consent.events` → its notice committed to a
    /// destination.
    pub revocation_seconds: HistogramVec,
    schema_drift: IntCounterVec,
    /// 1 for the policy version each running stage enforces.
    pub policy_info: IntGaugeVec,
    /// Records disclosed to destinations (committed), by purpose and the
    /// policy version route shaped them under.
    pub disclosures: IntCounterVec,
    /// Fields released to destinations, by purpose and disclosure class
    /// (over `disclosures`: fields per record).
    pub destination_fields: IntCounterVec,
    /// Fields each purpose's allowlist names, by disclosure class: the
    /// ceiling `destination_fields` per record is drawn against.
    pub destination_allowlist_fields: IntGaugeVec,
    /// Encoded size of records written to destinations, by purpose.
    pub destination_record_bytes: HistogramVec,
    /// Records of a subject that reached a destination after the
    /// subject's consent for the purpose had been withdrawn (must stay 0).
    pub delivered_after_revocation: IntCounterVec,
    /// How far the consent table a stage decides on is behind the end of
    /// its topic: records, and seconds since it was last at the end.
    pub consent_table_lag_records: IntGaugeVec,
    pub consent_table_lag_seconds: IntGaugeVec,
    /// Vault resolve calls by caller, purpose (a configured purpose, else
    /// `other`) and decision.
    pub vault_resolves: IntCounterVec,
    /// Resolves of a token its subject's revocation (or erasure) shredded,
    /// by caller and purpose: a recipient asking for a revoked subject.
    pub vault_resolves_after_revocation: IntCounterVec,
    /// Distinct (source, path) label pairs of `schema_drift` so far.
    drift_paths: Mutex<HashSet<(String, String)>>,
    /// Every metric's name, as registered.
    names: Vec<String>,
}

/// At most this many distinct drift paths get their own series; the rest
/// are counted under `path="other"`, so a hostile feed cannot blow up the
/// metric's cardinality.
pub const MAX_DRIFT_PATHS: usize = 500;

/// The registry as it is built, remembering each metric's name: the
/// catalogue (`docs/metrics.md`) is checked against them.
#[derive(Default)]
struct Building {
    registry: Registry,
    names: std::cell::RefCell<Vec<String>>,
}

impl Building {
    fn register(&self, name: &str, c: Box<dyn prometheus::core::Collector>) {
        self.registry.register(c).expect("metric registered once");
        self.names.borrow_mut().push(name.to_string());
    }
}

fn counter(r: &Building, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(name, Box::new(c.clone()));
    c
}

fn histogram(r: &Building, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    histogram_with(r, name, help, labels, buckets)
}

fn histogram_with(
    r: &Building,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("static metric definition");
    r.register(name, Box::new(h.clone()));
    h
}

fn gauge(r: &Building, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(name, Box::new(g.clone()));
    g
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let r = Building::default();
        Arc::new(Metrics {
            records_in: counter(
                &r,
                "consentry_records_in_total",
                "Records consumed by a stage.",
                &["stage", "topic"],
            ),
            records_out: counter(
                &r,
                "consentry_records_out_total",
                "Records a stage wrote to an output topic (committed).",
                &["stage", "topic"],
            ),
            quarantined: counter(
                &r,
                "consentry_records_quarantined_total",
                "Records a stage sent to quarantine (committed).",
                &["stage", "reason"],
            ),
            duplicates: counter(
                &r,
                "consentry_records_duplicate_total",
                "Inputs skipped because their idempotency key was already handled.",
                &["stage"],
            ),
            audit_records: counter(
                &r,
                "consentry_audit_records_total",
                "Audit records a stage wrote (committed).",
                &["stage"],
            ),
            transactions: counter(
                &r,
                "consentry_transactions_total",
                "Stage transactions by outcome.",
                &["stage", "outcome"],
            ),
            batch_seconds: histogram(
                &r,
                "consentry_batch_duration_seconds",
                "Time to process and commit one batch.",
                &["stage"],
            ),
            commit_seconds: histogram(
                &r,
                "consentry_commit_duration_seconds",
                "Time to commit one transaction.",
                &["stage"],
            ),
            consent_decisions: counter(
                &r,
                "consentry_consent_decisions_total",
                "Consent decisions per (event, purpose): allow, deny or downgrade, and why.",
                &["stage", "purpose", "decision", "reason"],
            ),
            revocation_seconds: histogram_with(
                &r,
                "consentry_revocation_latency_seconds",
                "From a revocation's arrival on consent.events to its notice committed to a destination.",
                &["purpose"],
                // Finer around the 1 s target.
                vec![0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0, 5.0, 10.0],
            ),
            vault_requests: counter(
                &r,
                "consentry_vault_requests_total",
                "Vault API calls, by HTTP status and decision (each one audited).",
                &["status", "decision"],
            ),
            vault_break_glass: counter(
                &r,
                "consentry_vault_break_glass_total",
                "Tokens resolved by break-glass (high-severity audit records).",
                &["caller"],
            ),
            vault_request_seconds: histogram(
                &r,
                "consentry_vault_request_duration_seconds",
                "Vault API call latency, audit record written included.",
                &["status"],
            ),
            vault_unauthenticated: {
                let c = prometheus::IntCounter::new(
                    "consentry_vault_unauthenticated_total",
                    "Vault API calls without a valid credential (audited in aggregate per peer).",
                )
                .expect("valid metric");
                r.register("consentry_vault_unauthenticated_total", Box::new(c.clone()));
                c
            },
            dependency_up: gauge(
                &r,
                "consentry_dependency_up",
                "1 while a dependency the process needs answers its health probe, 0 while it does not.",
                &["dependency"],
            ),
            http_refused: counter(
                &r,
                "consentry_http_refused_total",
                "Connections and requests an HTTP server refused before its handler, by server and reason.",
                &["server", "reason"],
            ),
            consumer_lag: gauge(
                &r,
                "consentry_consumer_lag_records",
                "Records between a stage's position and the end of its input partition.",
                &["stage", "topic", "partition"],
            ),
            dedup_keys: gauge(
                &r,
                "consentry_ledger_keys",
                "Idempotency keys a stage holds in its ledger.",
                &["stage"],
            ),
            assigned_partitions: gauge(
                &r,
                "consentry_assigned_partitions",
                "Input partitions assigned to this instance of a stage.",
                &["stage"],
            ),
            state_entries: gauge(
                &r,
                "consentry_state_entries",
                "Entries in a stage's state table (normalize: patient index and held records).",
                &["stage"],
            ),
            state_bytes: gauge(
                &r,
                "consentry_state_bytes",
                "Bytes of values in a stage's state table.",
                &["stage"],
            ),
            redriven: counter(
                &r,
                "consentry_redriven_total",
                "Held records a stage sent on once what they waited for arrived (committed).",
                &["stage"],
            ),
            audit_write_failures: counter(
                &r,
                "consentry_audit_write_failures_total",
                "Batches stopped because their audit records could not be written (alert).",
                &["stage"],
            ),
            stage_halted: gauge(
                &r,
                "consentry_stage_halted",
                "1 when a stage stopped consuming after repeated failures (alert).",
                &["stage"],
            ),
            stage_panics: counter(
                &r,
                "consentry_stage_panics_total",
                "Inputs (or table work) that made a stage's code panic; the input is quarantined as malformed and the stage goes on.",
                &["stage"],
            ),
            schema_drift: counter(
                &r,
                "consentry_schema_drift_total",
                "Records quarantined for schema drift, by source format and the path the mapping does not know.",
                &["source", "path"],
            ),
            policy_info: gauge(
                &r,
                "consentry_policy_info",
                "1 for the policy version (topology policy_version) each running stage enforces.",
                &["stage", "policy_version"],
            ),
            disclosures: counter(
                &r,
                "consentry_disclosures_total",
                "Records disclosed to destinations (committed), by purpose and the policy version they were shaped under.",
                &["purpose", "policy_version"],
            ),
            destination_fields: counter(
                &r,
                "consentry_destination_fields_total",
                "Fields released to destinations (present in a record written), by purpose and disclosure class.",
                &["purpose", "class"],
            ),
            destination_allowlist_fields: gauge(
                &r,
                "consentry_destination_allowlist_fields",
                "Fields a purpose's allowlist names, by disclosure class.",
                &["purpose", "class"],
            ),
            destination_record_bytes: histogram_with(
                &r,
                "consentry_destination_record_bytes",
                "Encoded size of records written to destinations, by purpose.",
                &["purpose"],
                vec![
                    64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 65536.0,
                    262144.0,
                ],
            ),
            delivered_after_revocation: counter(
                &r,
                "consentry_delivered_after_revocation_total",
                "Records that reached a destination after their subject's consent for the purpose was withdrawn (must stay 0).",
                &["purpose"],
            ),
            consent_table_lag_records: gauge(
                &r,
                "consentry_consent_table_lag_records",
                "Records of consent.state a stage's consent table has not applied yet.",
                &["stage"],
            ),
            consent_table_lag_seconds: gauge(
                &r,
                "consentry_consent_table_lag_seconds",
                "Seconds since a stage's consent table was last at the end of consent.state (0 while it is).",
                &["stage"],
            ),
            vault_resolves: counter(
                &r,
                "consentry_vault_resolves_total",
                "Vault resolve calls by caller, purpose and decision.",
                &["caller", "purpose", "decision"],
            ),
            vault_resolves_after_revocation: counter(
                &r,
                "consentry_vault_resolves_after_revocation_total",
                "Resolve calls for a token shredded by its subject's revocation or erasure (refused as not found), by caller and purpose.",
                &["caller", "purpose"],
            ),
            drift_paths: Mutex::new(HashSet::new()),
            names: r.names.into_inner(),
            registry: r.registry,
        })
    }

    /// Counts one schema-drift quarantine. `path` names a segment, field or
    /// element (never a value); past `MAX_DRIFT_PATHS` distinct paths, new
    /// ones are counted as `other`.
    pub fn schema_drift(&self, source: &str, path: &str, n: u64) {
        let key = (source.to_string(), path.to_string());
        let label = match self.drift_paths.lock() {
            Ok(seen) if seen.contains(&key) => path,
            Ok(mut seen) if seen.len() < MAX_DRIFT_PATHS => {
                seen.insert(key);
                path
            }
            _ => "other",
        };
        self.schema_drift
            .with_label_values(&[source, label])
            .inc_by(n);
    }

    /// The name of every metric registered (whether or not it has a
    /// series yet).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Serves `/metrics` (and `/healthz`) on `addr` for the rest of the
    /// process, over TLS when `tls` is given. Returns the bound address
    /// (useful with port 0).
    pub fn serve(
        self: &Arc<Self>,
        addr: &str,
        tls: Option<crate::http::TlsConfig>,
    ) -> anyhow::Result<SocketAddr> {
        let handler = Arc::new(MetricsHandler(Arc::clone(self)));
        let server = crate::http::Server::start("metrics", addr, tls, Limits::metrics(), handler)?;
        Ok(server.detach())
    }

    /// Counts one connection or request an HTTP server refused.
    pub fn http_refused(&self, server: &str, why: Refusal) {
        self.http_refused
            .with_label_values(&[server, why.code()])
            .inc();
    }

    /// Probes `dependency` every second from a thread of its own, for
    /// `consentry_dependency_up` and `/healthz`. A probe that has not
    /// answered yes within 3 s counts as down, so a probe stuck on a
    /// dependency that stopped answering reports the outage too.
    pub fn watch_dependency(
        self: &Arc<Self>,
        dependency: &'static str,
        probe: impl Fn() -> bool + Send + 'static,
    ) {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::{Duration, Instant};
        let epoch = Instant::now();
        let since = move || epoch.elapsed().as_millis() as u64;
        let last_up = Arc::new(AtomicU64::new(u64::MAX));
        let gauge = self.dependency_up.with_label_values(&[dependency]);
        let up = probe();
        if up {
            last_up.store(since(), Ordering::SeqCst);
        }
        gauge.set(i64::from(up));
        let prober = {
            let (last_up, gauge) = (Arc::clone(&last_up), gauge.clone());
            std::thread::Builder::new()
                .name(format!("probe-{dependency}"))
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(1));
                    if probe() {
                        last_up.store(since(), Ordering::SeqCst);
                        gauge.set(1);
                    } else {
                        last_up.store(u64::MAX, Ordering::SeqCst);
                        gauge.set(0);
                    }
                })
        };
        let watchdog = std::thread::Builder::new()
            .name(format!("watch-{dependency}"))
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                let last = last_up.load(Ordering::SeqCst);
                if last == u64::MAX || since().saturating_sub(last) > 3_000 {
                    gauge.set(0);
                }
            });
        if let Err(e) = prober.and(watchdog) {
            tracing::warn!(error = %e, dependency, "cannot start the dependency probe");
        }
    }

    /// Whether a watched dependency is down.
    pub fn any_dependency_down(&self) -> bool {
        use prometheus::core::Collector;
        self.dependency_up
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .any(|m| m.get_gauge().get_value() < 1.0)
    }

    /// Whether any stage of the process has halted.
    pub fn any_halted(&self) -> bool {
        use prometheus::core::Collector;
        self.stage_halted
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .any(|m| m.get_gauge().get_value() > 0.0)
    }

    /// Sum of a counter over all label sets matching `stage`.
    pub fn total(counter: &IntCounterVec, stage: &str) -> u64 {
        use prometheus::core::Collector;
        counter
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "stage" && l.value() == stage)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }
}

/// `/metrics` and `/healthz`.
struct MetricsHandler(Arc<Metrics>);

impl Handler for MetricsHandler {
    fn handle(&self, request: Request) -> Response {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/metrics") => Response {
                content_type: "text/plain; version=0.0.4",
                ..Response::text(200, self.0.render())
            },
            // A halted stage is not healthy, whatever the other threads of
            // the process are doing.
            ("GET", "/healthz") if self.0.any_halted() => Response::text(503, "halted"),
            ("GET", "/healthz") if self.0.any_dependency_down() => {
                Response::text(503, "dependency down")
            }
            ("GET", "/healthz") => Response::text(200, "ok"),
            _ => Response::text(404, "not found"),
        }
    }

    fn refused(&self, _peer: IpAddr, why: Refusal) {
        self.0.http_refused("metrics", why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue's metric names: those in the first column of its
    /// tables.
    fn catalogued() -> std::collections::BTreeSet<String> {
        include_str!("../../../docs/metrics.md")
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split(" |").next())
            .flat_map(|cell| {
                cell.split('`')
                    .filter(|w| w.starts_with("consentry_"))
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_catalogue_documents_every_registered_metric_and_no_other() {
        let registered: std::collections::BTreeSet<String> =
            Metrics::new().names().iter().cloned().collect();
        let documented = catalogued();
        assert!(registered.len() >= 20, "{registered:?}");
        let missing: Vec<_> = registered.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&registered).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "registered but not in docs/metrics.md: {missing:?}; documented but not registered: {stale:?}"
        );
    }

    #[test]
    fn renders_and_sums() {
        let m = Metrics::new();
        m.records_in
            .with_label_values(&["normalize", "ehr.fhir"])
            .inc_by(3);
        m.records_in
            .with_label_values(&["normalize", "ehr.hl7v2"])
            .inc_by(2);
        m.records_in
            .with_label_values(&["route", "events.tokenized"])
            .inc();
        assert_eq!(Metrics::total(&m.records_in, "normalize"), 5);
        let text = m.render();
        assert!(
            text.contains("consentry_records_in_total{stage=\"normalize\",topic=\"ehr.fhir\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn serves_over_http() {
        let m = Metrics::new();
        m.duplicates.with_label_values(&["tokenize"]).inc();
        let addr = m.serve("127.0.0.1:0", None).unwrap();
        let body = ureq::get(&format!("http://{addr}/metrics"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        assert!(body.contains("consentry_records_duplicate_total{stage=\"tokenize\"} 1"));
        let health = || match ureq::get(&format!("http://{addr}/healthz")).call() {
            Ok(r) => r.status().as_u16(),
            Err(ureq::Error::StatusCode(c)) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(health(), 200);
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = Arc::clone(&up);
        m.watch_dependency("vault_store", move || {
            probe.load(std::sync::atomic::Ordering::SeqCst)
        });
        assert_eq!(health(), 503, "a dependency down is not healthy");
        up.store(true, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert_eq!(health(), 200, "back up");
        m.stage_halted.with_label_values(&["normalize"]).set(1);
        assert_eq!(health(), 503, "a halted stage is not healthy");
    }
}
