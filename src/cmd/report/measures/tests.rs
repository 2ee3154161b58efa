//! The measures on hand-made inputs whose answers are worked out here.

use super::*;
use consentry_core::audit::AuditOutput;
use consentry_core::consent::{table_key, ConsentReason, ConsentStatus};
use consentry_core::envelope::{Demographics, Text};

fn topology() -> Topology {
    consentry_testkit::shipped_topology()
}

fn decision(id: &str, stage: &str, d: Decision, purpose: &str, at: i64) -> AuditRecord {
    AuditRecord {
        audit_id: id.into(),
        stage: Text::from(stage),
        decision: d,
        purpose: Some(purpose.into()),
        policy_version: "p1".into(),
        processing_time_ms: at,
        ..Default::default()
    }
}

fn disclosure(id: &str, subject: &str, purpose: &str, at: i64, fields: &[&str]) -> Disclosure {
    Disclosure {
        disclosure_id: id.into(),
        subject_token: subject.into(),
        purpose: purpose.into(),
        destination: "dest".into(),
        event_type: "ADT^A01".into(),
        consent_reference: Some("Consent/1".into()),
        fields: fields.iter().map(|f| Text::from(*f)).collect(),
        disclosed_at_ms: at,
        profile: "limited-data-set".into(),
        phi: true,
        ..Default::default()
    }
}

fn entry(status: ConsentStatus, received_ms: i64) -> ConsentEntry {
    ConsentEntry {
        status,
        version: None,
        updated_ms: None,
        issued_ms: None,
        reference: "Consent/1".into(),
        permit: true,
        effective_ms: received_ms,
        dated: true,
        period_start_ms: None,
        period_end_ms: None,
        provisions: Vec::new(),
        source: "portal".into(),
        captured_by: None,
        notice_version: None,
        previous_revision: None,
        received_ms,
    }
}

/// Epoch ms of a date's midnight.
fn day(y: i64, m: i64, d: i64) -> i64 {
    consentry_stages::time::civil_to_epoch_ms(y, m, d, 0, 0, 0).expect("a date")
}

fn empty() -> Inputs {
    Inputs {
        audit: Vec::new(),
        disclosures: Vec::new(),
        consent: Vec::new(),
        released: Vec::new(),
        undecodable_disclosures: 0,
        trail: Trail {
            intact: true,
            records: 0,
            breaks: 0,
        },
    }
}

#[test]
fn iso_weeks_at_year_ends() {
    assert_eq!(iso_week(day(2026, 12, 5)), "2026-W49");
    // 2021-01-03 was a Sunday of 2020's week 53.
    assert_eq!(iso_week(day(2021, 1, 3)), "2020-W53");
    assert_eq!(iso_week(day(2021, 1, 4)), "2021-W01");
    // 2024-12-30 (a Monday) starts 2025's first week.
    assert_eq!(iso_week(day(2024, 12, 30)), "2025-W01");
}

#[test]
fn percentiles_by_nearest_rank() {
    let v: Vec<i64> = (1..=100).collect();
    assert_eq!(percentile(&v, 50.0), Some(50));
    assert_eq!(percentile(&v, 99.0), Some(99));
    assert_eq!(percentile(&[7], 99.0), Some(7));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn consent_share_counts_each_gate_decision_once_within_the_period() {
    let t = topology();
    let mut i = empty();
    let gate = "consent-gate";
    i.audit = vec![
        (
            decision("a1", gate, Decision::Allow, "patient-support", 10),
            true,
        ),
        // The same record again (a retried batch): counted once.
        (
            decision("a1", gate, Decision::Allow, "patient-support", 10),
            true,
        ),
        (
            decision("a2", gate, Decision::Allow, "patient-support", 11),
            true,
        ),
        (
            decision("a3", gate, Decision::Deny, "patient-support", 12),
            true,
        ),
        (
            decision("a4", gate, Decision::Downgrade, "marketing", 13),
            true,
        ),
        // Before the period.
        (
            decision("a0", gate, Decision::Deny, "patient-support", 1),
            true,
        ),
        // Route's forward is not the gate's decision.
        (
            decision("r1", "route", Decision::Forward, "patient-support", 14),
            true,
        ),
    ];
    let r = compute(&t, &i, 5, 100, 5);
    let ps = r
        .consent
        .iter()
        .find(|c| c.purpose == "patient-support")
        .unwrap();
    assert_eq!((ps.events, ps.allowed, ps.denied), (3, 2, 1));
    assert_eq!(ps.validated_pct, 66.67);
    let m = r.consent.iter().find(|c| c.purpose == "marketing").unwrap();
    assert_eq!((m.events, m.consent_needed, m.validated_pct), (1, 1, 0.0));
}

#[test]
fn a_disclosure_after_the_revocation_arrived_is_counted_and_one_before_is_not() {
    let t = topology();
    let code = &t.purposes["trial-recruitment"].consent_code;
    let row = |subject: &str, channel: &str, status: ConsentStatus, at: i64| {
        (
            table_key(subject, code, channel),
            at,
            Some(entry(status, at)),
        )
    };
    let mut i = empty();
    i.consent = vec![
        row("s1", "*", ConsentStatus::Active, 100),
        row("s1", "*", ConsentStatus::Revoked, 200),
        row("s2", "*", ConsentStatus::Active, 100),
        // Another channel's revocation does not withdraw this purpose's.
        row("s2", "sms", ConsentStatus::Revoked, 150),
        // Revoked, then granted again: only the time between counts.
        row("s3", "*", ConsentStatus::Revoked, 100),
        row("s3", "*", ConsentStatus::Active, 300),
        // Erased: the tombstone withdraws everything after it.
        row("s4", "*", ConsentStatus::Active, 50),
        (table_key("s4", code, "*"), 120, None),
    ];
    i.disclosures = vec![
        disclosure("d1", "s1", "trial-recruitment", 150, &[]),
        disclosure("d2", "s1", "trial-recruitment", 250, &[]),
        disclosure("d3", "s2", "trial-recruitment", 250, &[]),
        // Another purpose's consent code is not withdrawn.
        disclosure("d4", "s1", "patient-support", 250, &[]),
        disclosure("d5", "s3", "trial-recruitment", 200, &[]),
        disclosure("d6", "s3", "trial-recruitment", 350, &[]),
        disclosure("d7", "s4", "trial-recruitment", 100, &[]),
        disclosure("d8", "s4", "trial-recruitment", 130, &[]),
    ];
    let r = compute(&t, &i, 0, 1000, 5);
    // d2, d5 and d8.
    assert_eq!(r.revocation.disclosures_after_revocation, 3);
}

#[test]
fn footprint_counts_non_operational_fields_per_destination() {
    let t = topology();
    let mut i = empty();
    i.disclosures = vec![
        disclosure(
            "d1",
            "s",
            "research-registry",
            1,
            &["event_type", "demographics.sex", "demographics.birth_date"],
        ),
        disclosure(
            "d2",
            "s",
            "research-registry",
            2,
            &["event_type", "demographics.sex"],
        ),
        // The same disclosure again.
        disclosure(
            "d2",
            "s",
            "research-registry",
            2,
            &["event_type", "demographics.sex"],
        ),
    ];
    let r = compute(&t, &i, 0, 10, 5);
    assert_eq!(r.phi_footprint.len(), 1);
    let f = &r.phi_footprint[0];
    assert_eq!(f.records, 2);
    let fields: Vec<(&str, &str, u64)> = f
        .fields
        .iter()
        .map(|c| (c.field.as_str(), c.class.as_str(), c.records))
        .collect();
    assert_eq!(
        fields,
        [
            ("demographics.birth_date", "limited", 1),
            ("demographics.sex", "limited", 2)
        ]
    );
}

#[test]
fn completeness_needs_a_verified_route_record_naming_each_disclosure() {
    let t = topology();
    let mut i = empty();
    let forward = |id: &str, key: &str, ok: bool| {
        let mut a = decision(id, "route", Decision::Forward, "patient-support", 5);
        a.outputs = vec![AuditOutput {
            topic: "out.patient-support".into(),
            idempotency_key: key.into(),
            fingerprint: Text::default(),
            correlation_id: None,
            event_id: None,
        }];
        a.consent_reference = Some("Consent/1".into());
        a.consent_version = Some("v1".into());
        a.reason_code = ConsentReason::Active.as_str().into();
        (a, ok)
    };
    // A "consent needed" notice's forward names no consent, and is not
    // held to: it left on none.
    let mut notice = forward("r3", "k4", true);
    notice.0.consent_reference = None;
    notice.0.reason_code = ConsentReason::Unknown.as_str().into();
    let mut unnamed = forward("r4", "k5", true);
    unnamed.0.consent_version = None;
    i.audit = vec![
        // A copy that does not verify, then one that does: the one that
        // does counts.
        forward("r1", "k1", false),
        forward("r1", "k1", true),
        forward("r2", "k2", false),
        notice,
        unnamed,
    ];
    i.disclosures = vec![
        disclosure("k1", "s", "patient-support", 5, &[]),
        disclosure("k2", "s", "patient-support", 5, &[]),
        disclosure("k3", "s", "patient-support", 5, &[]),
    ];
    i.undecodable_disclosures = 1;
    let r = compute(&t, &i, 0, 10, 5);
    let c = &r.audit_completeness;
    // An entry that does not decode counts as unbacked.
    assert_eq!((c.disclosures, c.disclosures_backed), (4, 1));
    assert_eq!(c.disclosures_backed_pct, 25.0);
    // r3 and r4 (verified) wrote k4 and k5, which the ledger does not
    // hold; r2 is not verified, so not held to it.
    assert_eq!(c.forwards_without_disclosure, 2);
    assert_eq!((c.decisions, c.decisions_naming_consent_and_policy), (3, 2));
}

#[test]
fn detokenizations_group_by_caller_and_week() {
    let t = topology();
    let mut i = empty();
    let call = |id: &str, caller: &str, d: Decision, at: i64| {
        let mut a = decision(id, "vault", d, "patient-support", at);
        a.actor = Some(caller.into());
        a.token = Some("tok".into());
        (a, true)
    };
    let week = 7 * 86_400_000;
    let monday = day(2026, 11, 30);
    let mut revoked = call("v6", "batch", Decision::Deny, monday);
    revoked.0.reason_code = "shredded".into();
    i.audit = vec![
        revoked,
        call("v1", "desk", Decision::Allow, monday),
        call("v2", "desk", Decision::BreakGlass, monday + 1),
        call("v3", "desk", Decision::Deny, monday + 2),
        call("v4", "desk", Decision::Allow, monday + week),
        call("v5", "batch", Decision::Allow, monday),
    ];
    let r = compute(&t, &i, 0, monday + 2 * week, 5);
    let rows: Vec<(&str, &str, u64, u64, u64)> = r
        .detokenizations
        .iter()
        .map(|d| {
            (
                d.caller.as_str(),
                d.week.as_str(),
                d.resolves,
                d.break_glass,
                d.refused,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("batch", "2026-W49", 1, 0, 1),
            ("desk", "2026-W49", 2, 1, 1),
            ("desk", "2026-W50", 1, 0, 0)
        ]
    );
    assert_eq!(r.revocation.resolves_after_revocation, 1);
}

#[test]
fn k_counts_subjects_per_quasi_identifier_group() {
    let t = topology();
    let mut i = empty();
    let rec = |subject: Option<&str>, sex: &str, state: &str| ReleasedRecord {
        purpose: "outcomes-analytics".to_string(),
        at_ms: 1,
        subject: subject.map(String::from),
        event: CanonicalEvent {
            demographics: Some(Demographics {
                sex: Some(sex.into()),
                state: Some(state.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    i.released = vec![
        // One subject's three records are one member of their group.
        rec(Some("a"), "F", "IL"),
        rec(Some("a"), "F", "IL"),
        rec(Some("a"), "F", "IL"),
        rec(Some("b"), "F", "IL"),
        rec(Some("c"), "M", "IL"),
        rec(Some("d"), "M", "WI"),
        rec(Some("e"), "M", "WI"),
        // Without a ledger entry: a subject of its own.
        rec(None, "M", "WI"),
    ];
    let r = compute(&t, &i, 0, 10, 3);
    let k = r
        .k_anonymity
        .iter()
        .find(|k| k.purpose == "outcomes-analytics")
        .unwrap();
    // Groups: F/IL {a, b} (4 records), M/IL {c}, M/WI {d, e, ?}.
    assert_eq!((k.records, k.groups, k.smallest_group), (8, 3, 1));
    assert_eq!((k.groups_under_k, k.records_in_groups_under_k), (2, 5));
    assert_eq!(
        k.quasi_identifiers,
        ["demographics.sex", "demographics.state"]
    );
}

#[test]
fn ages_fall_in_ten_year_bands() {
    assert_eq!(age_band(Some("34")), "30-39");
    assert_eq!(age_band(Some("92")), "90+");
    assert_eq!(age_band(Some("90+")), "90+");
    assert_eq!(age_band(Some("40-49")), "40-49");
    assert_eq!(age_band(None), "*");
}
