//! `replay plan` on the real stack: after a live run, the same policy plans
//! nothing (exit 0); a policy that takes one field from one purpose plans
//! exactly the records that carried it, at that destination only (exit 3),
//! in a table a person reads and in JSON; and planning writes nothing.

use consentry_runtime::codec::SchemaCache;
use consentry_runtime::rdkafka::Message;
use consentry_synth::{generate, SynthConfig};
use consentry_testkit::{shipped_topology_text, Env};

const FIELD: &str = "encounter.encounter_class";
/// The shipped policy's version.
pub(crate) const SHIPPED_VERSION: &str = "2026.11-deidentify.1";

/// The shipped policy with each of `edits` (text → replacement, each
/// found once) under `version`, written to the test's directory: its path.
pub(crate) fn policy_file(env: &Env, version: &str, edits: &[(&str, &str)]) -> String {
    let mut text = consentry_testkit::shipped_topology_text().to_string();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "edit {from:?}");
        text = text.replacen(from, to, 1);
    }
    let old = format!("policy_version: \"{SHIPPED_VERSION}\"");
    assert!(text.contains(&old));
    text = text.replacen(&old, &format!("policy_version: \"{version}\""), 1);
    let path = env.dir.join(format!("{version}.yaml"));
    std::fs::write(&path, text).expect("write the policy");
    path.to_str().expect("a UTF-8 path").to_string()
}

/// The synthetic feed of `seed` over `patients`, through the live pipeline.
pub(crate) fn deliver(env: &Env, seed: u64, patients: usize) {
    env.publish_synth(&generate(&SynthConfig::new(seed, patients)));
    env.run_ok(&["run", "all", "--exit-when-idle", "4"]);
}

/// `replay plan --policy POLICY --json` with `extra` flags: its exit code
/// and the plan.
pub(crate) fn plan_json(
    env: &Env,
    policy: &str,
    extra: &[&str],
) -> (Option<i32>, serde_json::Value) {
    let mut args = vec!["replay", "plan", "--policy", policy, "--json"];
    args.extend(extra);
    let out = env.run(&args);
    let plan = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), plan)
}

/// The edit that takes the field from outcomes-analytics.
pub(crate) const WITHOUT_CLASS: (&str, &str) = (
    "demographics.state, encounter.encounter_class]",
    "demographics.state]",
);

#[test]
fn a_plan_names_the_field_and_exactly_the_records_that_carried_it() {
    let env = Env::new("replay");
    deliver(&env, 13, 12);

    // What the analytics destination holds, decoded with the registry.
    let mut cache = SchemaCache::for_connection(&env.conn).expect("registry");
    let analytics = env.read("out.outcomes-analytics");
    let carried = analytics
        .iter()
        .filter(|m| {
            let ev = cache
                .decode_event(m.payload().expect("payload"))
                .expect("decodes");
            ev.encounter.is_some_and(|e| e.encounter_class.is_some())
        })
        .count();
    assert!(
        carried > 0 && carried < analytics.len(),
        "some analytics records carry {FIELD}, not all: {carried} of {}",
        analytics.len()
    );
    let written = |env: &Env| {
        [
            "disclosures",
            "audit",
            "out.outcomes-analytics",
            "events.gated",
        ]
        .map(|t| env.read(t).len())
    };
    let before = written(&env);

    // The same policy: nothing to do.
    let same = env.dir.join("same.yaml");
    std::fs::write(&same, shipped_topology_text()).expect("write");
    let out = env.run(&["replay", "plan", "--policy", same.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("verdict: nothing would change"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps policy_version"),
        "a policy that keeps the version is warned of"
    );
    // Written under this very version and shape: every record current.
    let (_, plan) = plan_json(&env, same.to_str().unwrap(), &[]);
    let destinations = plan["destinations"].as_array().expect("destinations");
    assert_eq!(destinations.len(), 5);
    for d in destinations {
        assert_eq!(d["unchanged"], 0, "{d}");
        assert!(d["already_current"].as_u64() > Some(0), "{d}");
    }

    // The field taken from outcomes-analytics (and only there).
    let new = policy_file(&env, "2026.12-analytics-no-class", &[WITHOUT_CLASS]);
    let out = env.run(&["replay", "plan", "--policy", new.as_str()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("fields withheld: {FIELD} ({carried})")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "verdict: {carried} records would change at 1 of 5 destinations"
        )),
        "{text}"
    );
    let (code, plan) = plan_json(&env, &new, &[]);
    assert_eq!(code, Some(3));
    assert_eq!(plan["changes"], carried);
    assert_eq!(plan["policy_after"], "2026.12-analytics-no-class");
    let first = &plan["destinations"][0];
    assert_eq!(
        first["purpose"], "outcomes-analytics",
        "the biggest change first"
    );
    assert_eq!(first["correct"]["records"], carried);
    assert_eq!(
        first["fields_withheld"],
        serde_json::json!({ FIELD: carried })
    );
    assert_eq!(first["retract"]["records"], 0);
    assert_eq!(first["backfill"]["records"], 0);
    assert_eq!(first["unchanged"], analytics.len() - carried);
    assert_eq!(first["already_current"], 0);
    // Correlation ids for follow-up: each one `audit trace` follows to
    // the record route wrote.
    let samples = first["correct"]["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 3);
    for s in samples {
        let id = s.as_str().expect("a string");
        let trace = env.run_ok(&["audit", "trace", id]);
        assert!(trace.contains("route"), "{id}: {trace}");
    }
    for d in plan["destinations"].as_array().unwrap().iter().skip(1) {
        assert_eq!(
            (
                &d["correct"]["records"],
                &d["retract"]["records"],
                &d["backfill"]["records"]
            ),
            (
                &serde_json::json!(0),
                &serde_json::json!(0),
                &serde_json::json!(0)
            ),
            "{d}"
        );
    }

    // Selections: a window before the run holds nothing; one after its
    // start holds everything; one subject's history is theirs alone.
    let json = |extra: &[&str]| plan_json(&env, &new, extra).1;
    let before_run = json(&["--to", "2000-01-01"]);
    assert_eq!(
        (&before_run["events"], &before_run["changes"]),
        (&serde_json::json!(0), &serde_json::json!(0))
    );
    let all = json(&["--from", "2000-01-01T00:00:00Z"]);
    assert_eq!(all["changes"], carried);
    let normalized = env.events("events.normalized");
    let first = normalized[0]
        .1
        .identifiers
        .first()
        .expect("an identifier")
        .clone();
    let theirs = normalized
        .iter()
        .filter(|(_, e)| {
            e.identifiers
                .iter()
                .any(|i| i.system == first.system && i.value == first.value)
        })
        .count();
    assert!(theirs > 0 && theirs < normalized.len());
    let one = json(&["--subject", &first.value, "--system", &first.system]);
    assert_eq!(one["events"], theirs);
    assert!(one["changes"].as_u64() <= Some(carried as u64));

    // A dry run: not one record more anywhere.
    assert_eq!(written(&env), before);
}
