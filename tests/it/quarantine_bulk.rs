//! Bulk re-drive after a policy change, on the real stack: 100 records
//! quarantined as `schema_drift` at `segment ZPD` (and 3 at another
//! segment) go back through normalize with `quarantine redrive --reason
//! schema_drift --path "segment ZPD"` once the site lists ZPD: each is
//! normalized once, the others stay quarantined, every opening is a vault
//! audit record, and running the same re-drive again adds nothing.

use super::quarantine::{redrive_openings, run_normalize_under, zpd_topology};
use consentry_synth::{hl7_adt, patients, SynthConfig};
use consentry_testkit::{Children, Env};

const WHY: &str = "ZPD is now declared by the site";

#[test]
fn every_matching_quarantined_record_is_normalized_once() {
    let env = Env::new("qbulk");
    let cfg = SynthConfig::new(17, 103);
    let people = patients(&cfg);
    let messages: Vec<String> = people
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let segment = if i < 100 { "ZPD" } else { "ZXX" };
            let adt = hl7_adt(&cfg, p, "A01", 0);
            format!("{}\r{segment}|1|x", adt.trim_end_matches('\r'))
        })
        .collect();
    let records: Vec<(Option<&str>, &[u8])> =
        messages.iter().map(|m| (None, m.as_bytes())).collect();
    env.publish("ehr.hl7v2", &records);
    let out = env.run_ok(&["run", "normalize", "--exit-when-idle", "3"]);
    let row = consentry_testkit::stage_row(&out, "normalize");
    assert_eq!(
        row[1..4],
        ["103", "0", "103"],
        "in, out, quarantined:\n{out}"
    );

    let ops = env.add_caller(
        "ops",
        &[
            "--domains",
            "quarantine",
            "--purposes",
            "quarantine-review,quarantine-redrive",
        ],
    );
    let topology = zpd_topology(&env);

    let redrive = || {
        let (vault, port) = env.serve_vault();
        let vault = Children(vec![vault]);
        let out = env
            .cmd()
            .env("CONSENTRY_VAULT_CREDENTIAL", &ops)
            .env("CONSENTRY_VAULT_URL", format!("http://127.0.0.1:{port}"))
            .args([
                "quarantine",
                "redrive",
                "--reason",
                "schema_drift",
                "--path",
                "segment ZPD",
                "--justification",
                WHY,
            ])
            .output()
            .expect("consentry runs");
        // The vault file admits one process: stop the vault before the stage.
        drop(vault);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    };
    let run_fixed = || run_normalize_under(&env, &topology).0;

    let said = redrive();
    assert!(
        said.contains("redriven: 100 records quarantined for schema_drift at 'segment ZPD'"),
        "{said}"
    );
    let row = run_fixed();
    assert_eq!(row[1..4], ["100", "100", "0"], "in, out, quarantined");
    let normalized = env.events("events.normalized");
    assert_eq!(normalized.len(), 100, "each ZPD record normalized once");
    assert!(normalized.iter().all(|(_, e)| e.event_type == "ADT^A01"));

    // The same bulk re-drive again: every record a duplicate.
    let said = redrive();
    assert!(said.contains("redriven: 100 records"), "{said}");
    let row = run_fixed();
    assert_eq!(
        row[1..5],
        ["100", "0", "0", "100"],
        "in, out, quarantined, duplicates"
    );
    assert_eq!(env.events("events.normalized").len(), 100);

    // The ZXX records were not selected; every opening was audited.
    assert_eq!(redrive_openings(&env), 200);
}
