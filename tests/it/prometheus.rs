//! The shipped alert rules in a real Prometheus (Debian's, installed by
//! `make test` when absent), scraping a running pipeline: once an
//! admission with an unlisted Z-segment arrives, `ConsentrySchemaDrift`
//! fires for that segment through Prometheus's own rule evaluation, and
//! the queries the rules read answer with the pipeline's series (the
//! policy each stage enforces, the consent decision mix).

use consentry_synth::{generate, hl7_adt, patients, SynthConfig};
use consentry_testkit::{free_port, Children, Env};
use std::process::Command;
use std::time::{Duration, Instant};

/// Prometheus's HTTP API answer for `path` (`data` of its JSON).
fn api(port: u16, path: &str) -> Option<serde_json::Value> {
    let body = ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

fn query(port: u16, q: &str) -> Vec<serde_json::Value> {
    let q: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    api(port, &format!("/api/v1/query?query={q}"))
        .and_then(|d| d["result"].as_array().cloned())
        .unwrap_or_default()
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn schema_drift_fires_in_a_real_prometheus_scraping_the_pipeline() {
    let env = Env::new("prom");
    let cfg = SynthConfig::new(41, 10);
    env.publish_synth(&generate(&cfg));
    let metrics = free_port();
    let mut children = Children(vec![env.spawn(&[
        "run",
        "all",
        "--exit-when-idle",
        "90",
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
    ])]);

    let root = consentry_testkit::root();
    let rules = root.join("deploy/prometheus/consentry-rules.yaml");
    let config = env.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: consentry\n    static_configs:\n      - targets: [\"127.0.0.1:{metrics}\"]\n",
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
    wait("the consent mix recorded", Duration::from_secs(60), || {
        !query(
            port,
            "purpose_decision:consentry_consent_decisions:share15m",
        )
        .is_empty()
    });
    let firing = |port: u16| -> Vec<serde_json::Value> {
        api(port, "/api/v1/alerts")
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "ConsentrySchemaDrift")
            .collect()
    };
    assert!(firing(port).is_empty(), "no drift yet");

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
        || firing(port).iter().any(|a| a["state"] == "firing"),
    );
    let alerts = firing(port);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["path"], "segment ZQX");
    assert_eq!(alerts[0]["labels"]["severity"], "warning");
    assert!(alerts[0]["annotations"]["summary"]
        .as_str()
        .is_some_and(|s| s.contains("segment ZQX")));
}
