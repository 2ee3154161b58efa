//! The Kubernetes manifests, validated offline against topology.yaml: one
//! StatefulSet per stage running that stage, with a stable instance id, a
//! grace period longer than the transaction timeout and health probes; and
//! the alert rules, shipped as a rules file and a PrometheusRule alike.

use consentry_core::stage::StageName;
use serde_yaml_ng::Value;

fn at<'v>(v: &'v Value, path: &[&str]) -> &'v Value {
    path.iter().fold(v, |v, k| {
        v.get(k)
            .unwrap_or_else(|| panic!("missing {k} in {path:?}"))
    })
}

#[test]
fn every_stage_has_a_statefulset_that_runs_it() {
    let root = consentry_testkit::root();
    let topology = consentry_testkit::shipped_topology();
    let text =
        std::fs::read_to_string(root.join("deploy/kubernetes/stages.yaml")).expect("stages.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .collect();
    use serde::Deserialize;

    for stage in StageName::ALL.map(StageName::as_str) {
        assert!(topology.stage(stage).is_some());
        let sts = docs
            .iter()
            .find(|d| {
                d.get("kind").and_then(Value::as_str) == Some("StatefulSet")
                    && at(d, &["metadata", "name"]).as_str() == Some(&format!("consentry-{stage}"))
            })
            .unwrap_or_else(|| panic!("no StatefulSet for {stage}"));
        let pod = at(sts, &["spec", "template", "spec"]);
        assert!(
            at(pod, &["terminationGracePeriodSeconds"])
                .as_u64()
                .expect("grace")
                > 30,
            "grace period must exceed the 30 s transaction timeout"
        );
        let c = &at(pod, &["containers"])[0];
        let args: Vec<&str> = at(c, &["args"])
            .as_sequence()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(&args[..2], ["run", stage]);
        let env = at(c, &["env"]).as_sequence().expect("env");
        let instance = env
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some("CONSENTRY_INSTANCE"))
            .expect("instance env");
        assert_eq!(
            at(instance, &["valueFrom", "fieldRef", "fieldPath"]).as_str(),
            Some("metadata.name")
        );
        let value_of = |name: &str| {
            env.iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        };
        // Every stage seals quarantine under the key ring, mounted from a Secret.
        let key_file = value_of("CONSENTRY_KEY_FILE")
            .and_then(|e| e.get("value"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{stage}: no CONSENTRY_KEY_FILE"));
        let mounts = at(c, &["volumeMounts"]).as_sequence().expect("mounts");
        let keys_mount = mounts
            .iter()
            .find(|m| at(m, &["name"]).as_str() == Some("keys"))
            .unwrap_or_else(|| panic!("{stage}: no keys mount"));
        assert!(key_file.starts_with(at(keys_mount, &["mountPath"]).as_str().expect("path")));
        let volumes = at(pod, &["volumes"]).as_sequence().expect("volumes");
        assert!(volumes
            .iter()
            .any(|v| at(v, &["name"]).as_str() == Some("keys")
                && at(v, &["secret", "secretName"]).as_str() == Some("consentry-keys")));
        // The stages that use the vault reach its PostgreSQL store.
        assert_eq!(
            value_of("CONSENTRY_VAULT").is_some(),
            ["consent-ledger", "de-identify", "tokenize"].contains(&stage),
            "{stage}: CONSENTRY_VAULT"
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                at(c, &[probe, "httpGet", "path"]).as_str(),
                Some("/healthz")
            );
        }
        assert_eq!(
            at(sts, &["spec", "serviceName"]).as_str(),
            Some(format!("consentry-{stage}").as_str())
        );
        assert!(docs
            .iter()
            .any(|d| d.get("kind").and_then(Value::as_str) == Some("Service")
                && at(d, &["metadata", "name"]).as_str() == Some(&format!("consentry-{stage}"))));
    }
    let statefulsets = docs
        .iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some("StatefulSet"))
        .count();
    assert_eq!(statefulsets, StageName::ALL.len());
}

/// The alert rules: the PrometheusRule carries exactly the rules file's
/// groups; every alert says what happened, why it matters and where its
/// runbook is (a section of the README); every metric a rule reads is in
/// the catalogue (`docs/metrics.md`).
#[test]
fn every_alert_is_shipped_twice_the_same_documented_and_reads_known_metrics() {
    let root = consentry_testkit::root();
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let rules: Value = serde_yaml_ng::from_str(&read("deploy/prometheus/consentry-rules.yaml"))
        .expect("rules YAML");
    let operator: Value =
        serde_yaml_ng::from_str(&read("deploy/prometheus/prometheus-rule.yaml")).expect("YAML");
    assert_eq!(at(&operator, &["kind"]).as_str(), Some("PrometheusRule"));
    assert_eq!(
        at(&operator, &["spec", "groups"]),
        at(&rules, &["groups"]),
        "prometheus-rule.yaml and consentry-rules.yaml differ"
    );
    let readme = read("README.md");
    let catalogue = read("docs/metrics.md");
    let tested = read("deploy/prometheus/consentry-rules.test.yaml")
        + &read("deploy/prometheus/consentry-rules-baseline.test.yaml");
    let recorded = regex::Regex::new(r"^[a-z_]+:consentry_[a-z_]+:[a-z0-9]+$").expect("regex");
    let mut alerts = 0;
    for group in at(&rules, &["groups"]).as_sequence().expect("groups") {
        // Recorded so far in this group: a rule reads a recorded series
        // only from earlier in its own group, whose rules are evaluated in
        // order (across groups the order is not fixed, and a sample one
        // evaluation old can be past the query's lookback).
        let mut recorded_here = std::collections::BTreeSet::new();
        for rule in at(group, &["rules"]).as_sequence().expect("rules") {
            let expr = at(rule, &["expr"]).as_str().expect("expr");
            let (exported, records) = crate::dashboards::series_read(expr);
            for r in records {
                assert!(
                    recorded_here.contains(&r),
                    "{expr}: reads {r}, which is not recorded earlier in its group"
                );
            }
            if let Some(record) = rule.get("record").and_then(Value::as_str) {
                recorded_here.insert(record.to_string());
            }
            for base in exported {
                assert!(
                    catalogue.contains(&format!("`{base}`")),
                    "a rule reads {base}, which docs/metrics.md does not list"
                );
            }
            if let Some(record) = rule.get("record") {
                let record = record.as_str().expect("a name");
                assert!(
                    recorded.is_match(record),
                    "{record}: level:metric:operations"
                );
                continue;
            }
            let name = at(rule, &["alert"]).as_str().expect("an alert");
            for key in ["summary", "description", "runbook"] {
                let text = at(rule, &["annotations", key]).as_str().unwrap_or("");
                assert!(!text.trim().is_empty(), "{name} has no {key}");
            }
            let anchor = format!("README.md#{}", name.to_lowercase());
            assert_eq!(
                at(rule, &["annotations", "runbook"]).as_str(),
                Some(anchor.as_str())
            );
            assert!(
                readme.contains(&format!("\n### {name}\n")),
                "README.md has no runbook section for {name}"
            );
            assert!(
                tested.contains(&format!("alertname: {name}\n")),
                "no promtool test evaluates {name}"
            );
            alerts += 1;
        }
    }
    assert_eq!(alerts, 17);
}
