//! Bad input: malformed HL7, invalid JSON, an empty record and a 5 MB record
//! are quarantined with the right reason code and an audit record; the good
//! records around them all go through; the stage keeps running. A message
//! that reuses an event id with other content is held as
//! `idempotency_conflict`; an exact resend is a counted duplicate.

use consentry_runtime::inspect::header;
use consentry_runtime::rdkafka::Message;
use consentry_synth::{fhir_patient, hl7_adt, patients, SynthConfig};
use consentry_testkit::Env;

#[test]
fn bad_records_are_quarantined_and_nothing_else_is_lost() {
    let env = Env::new("bad");
    let cfg = SynthConfig::new(3, 3);
    let ps = patients(&cfg);
    let good_hl7: Vec<String> = ps.iter().map(|p| hl7_adt(&cfg, p, "A01", 0)).collect();
    let good_fhir: Vec<String> = ps
        .iter()
        .map(|p| fhir_patient(&cfg, p).to_string())
        .collect();
    let huge = vec![b'x'; 5 * 1024 * 1024];
    // The same MSH-10 as good_hl7[0], other content: not a retransmission.
    let conflicting = good_hl7[0].replace(&ps[0].family, "Othername");
    assert_ne!(conflicting, good_hl7[0]);

    // The three records of patient 0 share a key, hence a partition, so
    // they are read in the order written: original, conflict, resend.
    let p0 = Some("patient-0");
    env.publish(
        "ehr.hl7v2",
        &[
            (p0, good_hl7[0].as_bytes()),
            (None, b"MSH|this is not hl7\rPID|1".as_slice()),
            (None, good_hl7[1].as_bytes()),
            (None, huge.as_slice()),
            (None, good_hl7[2].as_bytes()),
            (p0, conflicting.as_bytes()),
            (p0, good_hl7[0].as_bytes()),
        ],
    );
    env.publish(
        "ehr.fhir",
        &[
            (None, good_fhir[0].as_bytes()),
            (None, b"{\"resourceType\": \"Patient\", \"id\": ".as_slice()),
            (None, b"".as_slice()),
            (None, good_fhir[1].as_bytes()),
            (None, good_fhir[2].as_bytes()),
        ],
    );

    let stdout = env.run_ok(&["run", "normalize", "--exit-when-idle", "3"]);
    let row = consentry_testkit::stage_row(&stdout, "normalize");
    assert_eq!(
        row[1..5],
        ["12", "6", "5", "1"],
        "in, out, quarantined, duplicates:\n{stdout}"
    );

    // All six good records went through.
    let normalized = env.events("events.normalized");
    assert_eq!(normalized.len(), 6);
    for p in &ps {
        assert!(normalized
            .iter()
            .any(|(_, e)| e.event_id == format!("hl7v2:CSEHR:CS{:08}A01", p.index)));
        assert!(normalized
            .iter()
            .any(|(_, e)| e.event_id == format!("fhir:Patient/pat-{}/_history/1", p.index)));
    }

    // Each bad one is in quarantine, with reason, source position and its bytes.
    let q = env.read("quarantine");
    let mut got: Vec<(String, String, usize)> = q
        .iter()
        .map(|m| {
            assert!(
                header(m, "source-partition").is_some() && header(m, "source-offset").is_some(),
                "source position headers"
            );
            // Sealed: the bytes on the topic are not the input's, and
            // they open, under the record's headers, to exactly the input.
            let opened = env.open_quarantined(m);
            if let (Some(sealed), Some(plain)) = (m.payload(), &opened) {
                if plain.len() >= 8 {
                    assert!(!sealed.windows(8).any(|w| w == &plain[..8]));
                }
            }
            (
                header(m, "source-topic").unwrap_or("?").to_string(),
                header(m, "reason-code").unwrap_or("?").to_string(),
                opened.map_or(0, |p| p.len()),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String, usize)> = vec![
        ("ehr.fhir".into(), "empty".into(), 0),
        ("ehr.fhir".into(), "malformed".into(), 34),
        (
            "ehr.hl7v2".into(),
            "idempotency_conflict".into(),
            conflicting.len(),
        ),
        ("ehr.hl7v2".into(), "malformed".into(), 25),
        ("ehr.hl7v2".into(), "too_large".into(), huge.len()),
    ];
    assert_eq!(got, want);
    for m in &q {
        assert_eq!(header(m, "stage"), Some("normalize"));
        let detail = header(m, "reason-detail").expect("detail");
        assert!(
            !detail.contains("Patient\", \"id"),
            "detail must not quote the record"
        );
    }

    // And each has an audit record saying so.
    let audits = env.audits();
    let quarantined: Vec<_> = audits
        .iter()
        .filter(|a| a.decision == "quarantine")
        .collect();
    assert_eq!(quarantined.len(), 5);
    // A quarantine id is the audit id of the decision to quarantine.
    for m in &q {
        let id = header(m, "quarantine-id").expect("quarantine id");
        assert!(quarantined.iter().any(|a| a.audit_id.as_str() == id));
    }
    let mut codes: Vec<&str> = quarantined.iter().map(|a| a.reason_code.as_str()).collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "empty",
            "idempotency_conflict",
            "malformed",
            "malformed",
            "too_large"
        ]
    );
    assert_eq!(audits.iter().filter(|a| a.decision == "forward").count(), 6);
}

/// Issue 16: a FHIR timestamp whose zone offset holds a non-ASCII character
/// crashed normalize for good (the offset was never committed, so it
/// crash-looped). Now: quarantined as malformed, naming the path and never
/// the value; the records after it normalized; the stage runs on and exits
/// 0 at idle.
#[test]
fn a_crafted_timestamp_is_quarantined_and_the_stage_goes_on() {
    let env = Env::new("crafted");
    let cfg = SynthConfig::new(23, 3);
    let ps = patients(&cfg);
    let crafted_time = "2026-11-01T08:30:00+0\u{e9}\u{e9}";
    let crafted = serde_json::json!({
        "resourceType": "Patient", "id": "crafted-1",
        "meta": {"versionId": "1", "lastUpdated": crafted_time},
        "identifier": [{"system": cfg.subject_system, "value": "CRAFTED01"}]
    })
    .to_string();
    let good: Vec<String> = ps
        .iter()
        .map(|p| fhir_patient(&cfg, p).to_string())
        .collect();
    let key = Some("one-partition");
    let mut records: Vec<(Option<&str>, &[u8])> = vec![(key, crafted.as_bytes())];
    records.extend(good.iter().map(|g| (key, g.as_bytes())));
    env.publish("ehr.fhir", &records);
    let hl7 = hl7_adt(&cfg, &ps[0], "A01", 0);
    env.publish("ehr.hl7v2", &[(None, hl7.as_bytes())]);

    let out = env.run(&["run", "normalize", "--exit-when-idle", "3"]);
    assert!(out.status.success(), "exit 0 at idle");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = consentry_testkit::stage_row(&stdout, "normalize");
    assert_eq!(
        row[1..4],
        ["5", "4", "1"],
        "in, out, quarantined:\n{stdout}"
    );
    let q = env.read("quarantine");
    assert_eq!(q.len(), 1);
    assert_eq!(header(&q[0], "reason-code"), Some("malformed"));
    assert_eq!(
        header(&q[0], "reason-detail"),
        Some("Patient.meta.lastUpdated")
    );
    assert_eq!(env.events("events.normalized").len(), 4);
    // The value is nowhere but in the sealed record: not in the stage's
    // output or log, not in a header.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for text in [&stdout, &stderr] {
        assert!(!text.contains("CRAFTED01") && !text.contains('\u{e9}'));
    }
}
