//! The shipped alert rules and dashboards in a real Prometheus (Debian's,
//! installed by `make test` when absent), scraping a running pipeline and
//! a running vault. The feed carries drift: an admission with an unlisted
//! Z-segment, a burst of events for a patient without consent, two
//! revocations; the vault gets allowed, refused, break-glass and
//! unauthenticated calls. Through Prometheus's own rule evaluation
//! `ConsentrySchemaDrift` fires for that segment and
//! `ConsentryConsentDenialsSpike` for the purposes the burst was denied
//! (their hold times shortened in this copy of the rules: promtool's tests
//! cover the holds), `ConsentryDeliveredAfterRevocation` stays quiet, and
//! every dashboard panel's queries are accepted, the first of each
//! answering with the pipeline's or the vault's series.

use crate::dashboards;
use crate::vault_api::{post, resolve, EMERGENCY, WHY};
use consentry_synth::{generate, hl7_adt, patients, SynthConfig};
use consentry_testkit::consent_feed::{capture, mrn, publish_all, publish_burst};
use consentry_testkit::{free_port, Children, Env};
use std::process::Command;
use std::time::{Duration, Instant};

/// Prometheus's HTTP API answer for `path` (`data` of its JSON), or its
/// error.
fn api(port: u16, path: &str) -> Result<serde_json::Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map_err(|e| e.to_string())?
        .into_body()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if v["status"] == "success" {
        Ok(v["data"].clone())
    } else {
        Err(format!("{}: {}", v["errorType"], v["error"]))
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's result, or Prometheus's error (a query it cannot
/// parse or evaluate).
fn try_query(port: u16, q: &str) -> Result<Vec<serde_json::Value>, String> {
    api(port, &format!("/api/v1/query?query={}", encode(q)))
        .map(|d| d["result"].as_array().cloned().unwrap_or_default())
}

fn query(port: u16, q: &str) -> Vec<serde_json::Value> {
    try_query(port, q).unwrap_or_default()
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn alerts(port: u16, name: &str) -> Vec<serde_json::Value> {
    api(port, "/api/v1/alerts")
        .ok()
        .and_then(|d| d["alerts"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .collect()
}

fn firing(port: u16, name: &str) -> Vec<serde_json::Value> {
    alerts(port, name)
        .into_iter()
        .filter(|a| a["state"] == "firing")
        .collect()
}

/// The panels whose queries Prometheus refuses, or whose first query has
/// no series: empty when every panel would draw.
fn panels_without_data(port: u16) -> Vec<String> {
    let mut missing = Vec::new();
    for panel in dashboards::panels() {
        for (i, expr) in panel.exprs.iter().enumerate() {
            match try_query(port, &dashboards::expand(expr)) {
                Err(e) => missing.push(format!(
                    "{} / {}: refused: {e}",
                    panel.dashboard, panel.title
                )),
                // Only the first query must have data: the others compare
                // with last week, which a fresh Prometheus has not seen.
                Ok(r) if r.is_empty() && i == 0 => {
                    missing.push(format!("{} / {}: no data", panel.dashboard, panel.title))
                }
                Ok(_) => {}
            }
        }
    }
    missing
}

/// A vault serving one caller, with its metrics; a few calls of each kind
/// made. Returns the child and the metrics port.
fn vault_with_calls(venv: &Env) -> (std::process::Child, u16) {
    let (crm, trial) = {
        let (_, vault) = venv.open_vault();
        let identity = b"urn:oid:2.16.840.1.113883.3.7777.1|CS0000042";
        (
            vault
                .subject_token("crm", "subject-a", identity, 1)
                .expect("issues"),
            vault
                .subject_token("trial", "subject-a", identity, 1)
                .expect("issues"),
        )
    };
    let desk = venv.add_caller(
        "support-desk",
        &[
            "--domains",
            "crm,trial",
            "--purposes",
            "patient-support",
            "--break-glass",
        ],
    );
    let served = venv.serve_vault_with(&[], &[]);
    let call = |auth: Option<&str>, token: &str, purpose: &str, why: &str, break_glass: bool| {
        post(
            served.port,
            auth,
            &resolve(token, purpose, why, break_glass),
        )
        .0
    };
    for _ in 0..3 {
        assert_eq!(call(Some(&desk), &crm, "patient-support", WHY, false), 200);
    }
    assert_eq!(
        call(Some(&desk), &trial, "trial-recruitment", EMERGENCY, true),
        200
    );
    assert_eq!(
        call(Some(&desk), &trial, "trial-recruitment", WHY, false),
        403
    );
    assert_eq!(call(None, &crm, "patient-support", WHY, false), 401);
    (served.child, served.metrics_port)
}

/// The shipped rules with every hold (`for:`) shortened to 5 s, so that
/// alerts can fire within a test; promtool's tests hold them as shipped.
fn rules_without_holds(env: &Env) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(
        consentry_testkit::root().join("deploy/prometheus/consentry-rules.yaml"),
    )
    .expect("rules");
    let hold = regex::Regex::new(r"(?m)^(\s+)for: \S+$").expect("regex");
    let path = env.dir.join("rules.yaml");
    std::fs::write(&path, hold.replace_all(&shipped, "${1}for: 5s").as_ref()).expect("rules copy");
    path
}

#[test]
fn alerts_fire_and_every_dashboard_panel_draws_in_a_real_prometheus() {
    let env = Env::new("prom");
    let cfg = SynthConfig::new(41, 10);
    env.publish_synth(&generate(&cfg));
    // alice and bob consent to research (HRESCH) and care management.
    let (alice, bob, nobody) = (mrn(1), mrn(2), mrn(9));
    let grants: Vec<Vec<u8>> = [&alice, &bob]
        .iter()
        .flat_map(|m| ["HRESCH", "CAREMGT"].map(|p| capture(&env, m, p, "active", 1)))
        .collect();
    publish_all(&env, "consent.events", &grants);
    let metrics = free_port();
    let mut children = Children(vec![env.spawn(&[
        "run",
        "all",
        "--exit-when-idle",
        "120",
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
    ])]);
    let venv = Env::new("prom-vault");
    let (vault, vault_metrics) = vault_with_calls(&venv);
    children.0.push(vault);

    let rules = rules_without_holds(&env);
    let config = env.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: consentry\n    static_configs:\n      - targets: [\"127.0.0.1:{metrics}\", \"127.0.0.1:{vault_metrics}\"]\n",
            rules.display()
        ),
    )
    .expect("prometheus.yml");
    let port = free_port();
    let mut prometheus = Command::new("prometheus");
    prometheus.args([
        &format!("--config.file={}", config.display()),
        &format!("--storage.tsdb.path={}", env.dir.join("tsdb").display()),
        &format!("--web.listen-address=127.0.0.1:{port}"),
    ]);
    children.0.push(env.spawn_command(prometheus));

    // Prometheus has the pipeline's series: every stage's policy.
    wait("a scrape of the pipeline", Duration::from_secs(90), || {
        query(port, "consentry_policy_info").len() == 6
    });
    let policies = query(port, "count by (policy_version) (consentry_policy_info)");
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert_eq!(
        policies[0]["metric"]["policy_version"],
        env.topology.policy_version.as_str()
    );
    env.wait_for(
        "the grants in the consent table",
        Duration::from_secs(60),
        || env.read("consent.state").len() >= 4,
    );
    assert!(
        firing(port, "ConsentrySchemaDrift").is_empty(),
        "no drift yet"
    );

    // Data for alice and bob, then their research consent revoked, one
    // after the other (two observations of the revocation latency).
    publish_burst(&env, &alice, "A", 20);
    publish_burst(&env, &bob, "B", 20);
    env.wait_for(
        "the first records to leave",
        Duration::from_secs(90),
        || env.read("out.trial-recruitment").len() >= 40,
    );
    for (who, n) in [(&alice, 1), (&bob, 2)] {
        publish_all(
            &env,
            "consent.events",
            &[capture(&env, who, "HRESCH", "revoked", 2)],
        );
        wait("a revocation's notice", Duration::from_secs(60), || {
            query(port, "sum(consentry_revocation_latency_seconds_count)")
                .first()
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .is_some_and(|v| v >= f64::from(n) * 2.0)
        });
    }
    // A burst for a patient nobody asked consent of: denied for every
    // purpose that denies without consent.
    publish_burst(&env, &nobody, "N", 300);
    // Drift: an admission with a segment the topology does not list.
    let p = &patients(&cfg)[0];
    let adt = hl7_adt(&cfg, p, "A08", 7).replacen(
        &format!("|CS{:08}A08|", p.index),
        &format!("|ZQ{:08}A08|", p.index),
        1,
    );
    let drifted = format!("{}\rZQX|1|x", adt.trim_end_matches('\r'));
    env.publish("ehr.hl7v2", &[(None, drifted.as_bytes())]);

    wait(
        "ConsentrySchemaDrift firing",
        Duration::from_secs(90),
        || !firing(port, "ConsentrySchemaDrift").is_empty(),
    );
    let drift = firing(port, "ConsentrySchemaDrift");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0]["labels"]["path"], "segment ZQX");
    assert_eq!(drift[0]["labels"]["severity"], "warning");
    assert!(drift[0]["annotations"]["summary"]
        .as_str()
        .is_some_and(|s| s.contains("segment ZQX")));

    // The denial spike, for the purposes that deny without consent (not
    // marketing, which sends a "consent needed" notice instead).
    wait(
        "ConsentryConsentDenialsSpike firing",
        Duration::from_secs(90),
        || !firing(port, "ConsentryConsentDenialsSpike").is_empty(),
    );
    let spiking: std::collections::BTreeSet<String> = firing(port, "ConsentryConsentDenialsSpike")
        .iter()
        .filter_map(|a| a["labels"]["purpose"].as_str().map(String::from))
        .collect();
    let denying: std::collections::BTreeSet<String> = env
        .topology
        .purposes
        .values()
        .filter(|p| p.on_missing_consent == consentry_core::topology::MissingConsent::Deny)
        .map(|p| p.name.clone())
        .collect();
    assert!(
        !spiking.is_empty() && spiking.is_subset(&denying),
        "spiking {spiking:?}, denying without consent {denying:?}"
    );
    assert!(!spiking.contains("marketing"));

    // Every panel draws.
    let start = Instant::now();
    let missing = loop {
        let missing = panels_without_data(port);
        if missing.is_empty() || start.elapsed() > Duration::from_secs(60) {
            break missing;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(missing.is_empty(), "panels without data: {missing:#?}");
    // What the footprint panels show: the allowlist is the ceiling (a
    // ratio of rates, so within float error).
    let over = query(
        port,
        "purpose:consentry_destination_fields_per_record:rate1h > on (purpose) 1.000001 * max by (purpose) (sum by (purpose, instance) (consentry_destination_allowlist_fields))",
    );
    assert!(
        over.is_empty(),
        "a destination carried more fields than its allowlist names: {over:?}"
    );
    assert!(
        !query(
            port,
            "purpose:consentry_destination_fields_per_record:rate1h > 0"
        )
        .is_empty(),
        "fields were released"
    );
    // The vault's panels see the calls made, by caller and purpose.
    let resolves = query(
        port,
        "sum by (caller, purpose, decision) (consentry_vault_resolves_total)",
    );
    let row = |purpose: &str, decision: &str| {
        resolves
            .iter()
            .find(|s| s["metric"]["purpose"] == purpose && s["metric"]["decision"] == decision)
            .and_then(|s| s["value"][1].as_str())
            .map(String::from)
    };
    assert_eq!(row("patient-support", "allow").as_deref(), Some("3"));
    assert_eq!(
        row("trial-recruitment", "break_glass").as_deref(),
        Some("1")
    );
    assert_eq!(row("trial-recruitment", "deny").as_deref(), Some("1"));
    assert!(resolves
        .iter()
        .all(|s| s["metric"]["caller"] == "support-desk"));
    // Nothing reached a destination after its revocation.
    assert!(alerts(port, "ConsentryDeliveredAfterRevocation").is_empty());
    assert_eq!(
        query(
            port,
            "sum(consentry_delivered_after_revocation_total) or vector(0)"
        )[0]["value"][1],
        "0"
    );
}
