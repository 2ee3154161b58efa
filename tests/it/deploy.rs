//! The Kubernetes manifests, validated offline against topology.yaml: one
//! StatefulSet per stage running that stage, with a stable instance id, a
//! grace period longer than the transaction timeout and health probes.

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
