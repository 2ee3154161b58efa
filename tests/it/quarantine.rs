//! Quarantine without plaintext, on the real stack: a record normalize
//! quarantines is on the quarantine topic only sealed (no byte of any
//! identifier in its key, headers or payload); `consentry quarantine show`
//! opens it only through the vault's API, for a caller whose scope allows
//! it, and every attempt is an audit record; `consentry quarantine
//! redrive` sends it back through its stage, which handles it once.

use consentry_runtime::inspect::header;
use consentry_runtime::rdkafka::message::Message;
use consentry_synth::{hl7_adt, patients, SynthConfig};
use consentry_testkit::{Children, Env};
use std::time::Duration;

const WHY: &str = "triage of schema drift from the ADT feed";

#[test]
fn quarantine_is_sealed_opened_through_the_vault_and_redriven_once() {
    let env = Env::new("quarantine");
    let cfg = SynthConfig::new(11, 1);
    let p = &patients(&cfg)[0];
    // An A01 with a Z-segment the site has not declared (schema drift),
    // which carries identifiers of its own.
    // Padded to about 1 MB, near normalize's 1 MiB limit: `show` and
    // `redrive` must work for any record the stage accepts (the vault's
    // API took 16 KiB bodies once).
    let adt = hl7_adt(&cfg, p, "A01", 0);
    let msg = format!(
        "{}\rZPD|1|{}^{}|{}|{}|{}",
        adt.trim_end_matches('\r'),
        p.family,
        p.given,
        p.ssn,
        p.phone,
        "Q".repeat(1_000_000)
    );
    assert!(msg.len() < consentry_stages::normalize::DEFAULT_MAX_RECORD_BYTES);
    env.publish("ehr.hl7v2", &[(None, msg.as_bytes())]);
    let out = env.run_ok(&["run", "normalize", "--exit-when-idle", "3"]);
    let row = consentry_testkit::stage_row(&out, "normalize");
    assert_eq!(row[1..4], ["1", "0", "1"], "in, out, quarantined:\n{out}");

    // 1. Sealed: nothing of the input in any byte of the record.
    let q = env.read("quarantine");
    assert_eq!(q.len(), 1);
    let rec = &q[0];
    assert_eq!(header(rec, "reason-code"), Some("schema_drift"));
    assert_eq!(header(rec, "reason-detail"), Some("segment ZPD"));
    assert!(rec.payload().is_some(), "the payload is held, sealed");
    let identifiers = p.direct_identifiers();
    // Failures name the identifier's kind, never its value.
    let leak =
        consentry_testkit::find_leak(&consentry_testkit::record_bytes(rec), &identifiers, &[]);
    assert!(
        leak.is_none(),
        "a {:?} is readable on the quarantine topic",
        leak.map(|l| l.0)
    );
    assert!(
        env.open_quarantined(rec).as_deref() == Some(msg.as_bytes()),
        "the sealed payload is the input, whole"
    );
    let id = header(rec, "quarantine-id").expect("id").to_string();

    // `list` shows what to act on, and nothing that is PHI.
    let listed = env.run_ok(&["quarantine", "list"]);
    assert!(
        listed.contains(&id) && listed.contains("schema_drift") && listed.contains("segment ZPD")
    );
    let leak = consentry_testkit::find_leak(listed.as_bytes(), &identifiers, &[]);
    assert!(leak.is_none(), "a {:?} in `list`", leak.map(|l| l.0));

    // 2. Opened only through the vault, in scope, with a justification.
    let ops = env.add_caller(
        "ops",
        &[
            "--domains",
            "quarantine",
            "--purposes",
            "quarantine-review,quarantine-redrive",
        ],
    );
    let analyst = env.add_caller(
        "analyst",
        &["--domains", "crm", "--purposes", "patient-support"],
    );
    let (vault, port) = env.serve_vault();
    let mut vault = Children(vec![vault]);
    let url = format!("http://127.0.0.1:{port}");
    let quarantine = |credential: &str, args: &[&str]| {
        env.cmd()
            .env("CONSENTRY_VAULT_CREDENTIAL", credential)
            .env("CONSENTRY_VAULT_URL", &url)
            .arg("quarantine")
            .args(args)
            .output()
            .expect("consentry runs")
    };
    let short = &id[..16];
    let shown = quarantine(&ops, &["show", short, "--justification", WHY]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(&format!("quarantine id:  {id}")));
    assert!(text.contains(&format!("ZPD|1|{}^{}", p.family, p.given)));
    assert!(text.contains("schema_drift (segment ZPD)"));
    for (credential, why, refusal) in [
        (analyst.as_str(), WHY, "403 domain_not_in_scope"),
        (ops.as_str(), "look", "403 justification_required"),
        ("cvk_not-a-credential", WHY, "401 unauthenticated"),
    ] {
        let denied = quarantine(credential, &["show", &id, "--justification", why]);
        assert!(!denied.status.success());
        let err = String::from_utf8_lossy(&denied.stderr);
        assert!(err.contains(refusal), "{err}");
        assert!(!String::from_utf8_lossy(&denied.stdout).contains(&p.family));
    }

    // Every attempt is audited, allowed or denied, naming the record; the
    // unauthenticated one in aggregate, naming its peer.
    let vault_audits = || -> Vec<_> {
        env.audits()
            .into_iter()
            .filter(|a| a.stage == "vault" && a.decision != "checkpoint")
            .collect()
    };
    env.wait_for(
        "the unauthenticated call's aggregate record",
        Duration::from_secs(30),
        || vault_audits().len() >= 4,
    );
    let vault_audits = vault_audits();
    // (Audit records spread over partitions: compare them as a set.)
    let mut about: Vec<(&str, Option<&str>, Option<&str>)> = vault_audits
        .iter()
        .filter(|a| a.quarantine_id.as_deref() == Some(id.as_str()))
        .map(|a| {
            (
                a.decision.as_str(),
                a.actor.as_deref(),
                a.reason_code.as_str().into(),
            )
        })
        .collect();
    about.sort();
    assert_eq!(
        about,
        [
            ("allow", Some("ops"), Some("ok")),
            ("deny", Some("analyst"), Some("domain_not_in_scope")),
            ("deny", Some("ops"), Some("justification_required")),
        ]
    );
    assert_eq!(
        vault_audits.len(),
        4,
        "the unauthenticated call too (it names no record)"
    );
    let unauthenticated: Vec<_> = vault_audits
        .iter()
        .filter(|a| a.reason_code == "unauthenticated")
        .map(|a| {
            (
                a.actor.as_deref(),
                a.transformations[0].params.starts_with("calls=1,"),
            )
        })
        .collect();
    assert_eq!(unauthenticated, [(Some("peer:127.0.0.1"), true)]);

    // 3. Redrive, once the site declares ZPD: the stage handles it as new.
    let topology = zpd_topology(&env);
    let redrive = |credential: &str| {
        let out = quarantine(
            credential,
            &[
                "redrive",
                &id,
                "--justification",
                "ZPD is now declared by the site",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = redrive(&ops);
    let partition = header(rec, "source-partition").expect("partition");
    assert!(
        said.contains(&format!("-> ehr.hl7v2[{partition}] for stage normalize")),
        "{said}"
    );
    // The vault file admits one process: stop the vault before the stage.
    drop(vault);
    let run_fixed = || run_normalize_under(&env, &topology);
    let (row, out) = run_fixed();
    assert_eq!(
        (&row[1..4], row.last().map(String::as_str)),
        (&["1".to_string(), "1".into(), "0".into()][..], Some("1")),
        "in, out, quarantined; redriven:\n{out}"
    );
    let normalized = env.events("events.normalized");
    assert_eq!(normalized.len(), 1);
    assert_eq!(normalized[0].1.event_type, "ADT^A01");

    // Redriving the same record again is a duplicate, not a second event.
    let (again, port2) = env.serve_vault();
    vault = Children(vec![again]);
    let url2 = format!("http://127.0.0.1:{port2}");
    let out = env
        .cmd()
        .env("CONSENTRY_VAULT_CREDENTIAL", &ops)
        .env("CONSENTRY_VAULT_URL", &url2)
        .args(["quarantine", "redrive", &id, "--justification", WHY])
        .output()
        .expect("consentry runs");
    assert!(out.status.success());
    drop(vault);
    let (row, out) = run_fixed();
    assert_eq!(
        row[1..5],
        ["1", "0", "0", "1"],
        "in, out, quarantined, duplicates:\n{out}"
    );
    assert_eq!(env.events("events.normalized").len(), 1);
    // Each redrive opened the payload through the vault, audited.
    assert_eq!(redrive_openings(&env), 2);
}

/// The shipped topology with the site's ZPD segment listed, written to the
/// test's directory; its path.
pub(crate) fn zpd_topology(env: &Env) -> String {
    let fixed = consentry_testkit::shipped_topology_text().replace(
        "    hl7v2: []   # e.g. ZPD",
        "    hl7v2: [ZPD]   # e.g. ZPD",
    );
    assert!(fixed.contains("hl7v2: [ZPD]"));
    let topology = env.dir.join("topology-zpd.yaml");
    std::fs::write(&topology, fixed).expect("write topology");
    topology.to_str().expect("utf-8 path").to_string()
}

/// normalize under `topology` until idle: its summary row, and the whole
/// summary.
pub(crate) fn run_normalize_under(env: &Env, topology: &str) -> (Vec<String>, String) {
    let out = env.run_ok(&[
        "--topology",
        topology,
        "run",
        "normalize",
        "--exit-when-idle",
        "3",
    ]);
    (consentry_testkit::stage_row(&out, "normalize"), out)
}

/// Payloads the vault opened for re-drive, each an audit record.
pub(crate) fn redrive_openings(env: &Env) -> usize {
    env.audits()
        .into_iter()
        .filter(|a| {
            a.stage == "vault"
                && a.purpose.as_deref() == Some("quarantine-redrive")
                && a.decision == "allow"
        })
        .count()
}
