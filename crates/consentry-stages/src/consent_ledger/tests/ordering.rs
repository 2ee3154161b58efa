//! Which version of a document wins: by revision, by time when there is
//! no `meta`, like with like, undated and future-dated permits, and
//! same-revision resends.

use super::*;

/// Issue 16: a new opt-out document at its own version 1 was refused as
/// stale against an older opt-in at version 3, and data kept flowing.
#[test]
fn a_newer_opt_out_document_beats_an_older_opt_in_whatever_the_versions() {
    let opt_in = document("opt-in", Some(3), "2026-01-10T09:00:00Z", "permit");
    let opt_out = document("opt-out", Some(1), "2026-06-01T09:00:00Z", "deny");
    for arrival in [
        vec![opt_in.clone(), opt_out.clone()],
        vec![opt_out.clone(), opt_in.clone()],
    ] {
        let (vault, l, mut table) = fresh();
        let outs = feed(&l, &mut table, arrival);
        let e = ConsentEntry::decode(table.values().next().expect("an entry")).unwrap();
        assert_eq!((e.reference.as_str(), e.permit), ("Consent/opt-out", false));
        // The refusal withdraws: the research domains are shredded.
        let shredded: BTreeSet<String> = vault
            .shredded
            .lock()
            .unwrap()
            .iter()
            .map(|(_, d)| d.clone())
            .collect();
        assert_eq!(shredded, ["registry", "trial"].map(String::from).into());
        // Whichever came second: applied, or refused as stale with the
        // revisions named, never a value.
        assert!(outs.iter().all(|o| o.quarantine.is_none()
            || o.quarantine
                .as_ref()
                .is_some_and(|q| q.reason == ReasonCode::StaleVersion
                    && q.detail == "consent/HRESCH/*: v3 is older than the table's v1")));
    }
}

/// No `meta` at all: a document's versions order by `dateTime`, and the
/// revision the table and audit name is that time.
#[test]
fn consents_without_meta_order_by_their_time() {
    let (_, l, mut table) = fresh();
    let first = document("c-nm", None, "2026-01-10T09:00:00Z", "permit");
    let mut later: serde_json::Value =
        serde_json::from_slice(&document("c-nm", None, "2026-03-10T09:00:00Z", "permit")).unwrap();
    later["status"] = json!("inactive");
    let later = later.to_string().into_bytes();
    let outs = feed(
        &l,
        &mut table,
        vec![first.clone(), later.clone(), first.clone(), later],
    );
    assert_eq!(
        reasons(&outs),
        [
            "consent_apply",
            "consent_apply",
            "stale_version: consent/HRESCH/*: d1768035600000 is older than the table's d1773133200000",
            "consent_duplicate"
        ]
    );
    let e = ConsentEntry::decode(table.values().next().unwrap()).unwrap();
    assert_eq!((e.status, e.version), (ConsentStatus::Revoked, None));
    assert_eq!(
        outs[1].audit.consent_version.as_deref(),
        Some("d1773133200000")
    );
}

/// A permit whose document gives no time stands in with its arrival; it
/// never supersedes a dated entry. A future-dated permit is taken as of its
/// arrival, so a refusal made after that arrival still beats it.
#[test]
fn undated_and_future_dated_permits_cannot_outrank_a_refusal() {
    let (_, l, mut table) = fresh();
    let opt_out = doc(
        "out",
        MRN,
        json!(null),
        Some("2026-06-01T09:00:00Z"),
        "active",
        research("deny"),
    );
    let undated_in = doc(
        "old-in",
        MRN,
        json!(null),
        None,
        "active",
        research("permit"),
    );
    feed(&l, &mut table, vec![opt_out.clone(), undated_in]);
    let e = entry_of(&table, &l, MRN);
    assert_eq!((e.reference.as_str(), e.permit), ("Consent/out", false));

    let mut table = BTreeMap::new();
    let future_in = doc(
        "future",
        MRN,
        json!(null),
        Some("2030-01-01T00:00:00Z"),
        "active",
        research("permit"),
    );
    feed(&l, &mut table, vec![future_in]);
    let e = entry_of(&table, &l, MRN);
    assert!(e.effective_ms <= ARRIVAL_MS, "capped at its arrival");
    // A refusal issued after that arrival wins.
    let later_out = doc(
        "later-out",
        MRN,
        json!(null),
        Some("2026-12-06T00:00:00Z"),
        "active",
        research("deny"),
    );
    let mut input_table = table.clone();
    let outs: Vec<Outcome> = l.process(&input(later_out, 10), &input_table);
    for o in &outs {
        apply_writes(&mut input_table, &o.state);
    }
    assert_eq!(reasons(&outs), ["consent_apply"]);
    assert!(!entry_of(&input_table, &l, MRN).permit);
}

/// One document's versions compare like with like: `meta.lastUpdated` with
/// `meta.lastUpdated`, `dateTime` with `dateTime`; a revocation without a
/// comparable time is the same revision's step, never stale.
#[test]
fn a_documents_versions_compare_like_with_like() {
    let l = ledger(Arc::new(MemoryVault::default()));
    let mut table = BTreeMap::new();
    let outs = feed(
        &l,
        &mut table,
        vec![
            doc(
                "c",
                MRN,
                json!({"lastUpdated": "2026-01-10T00:00:00Z"}),
                Some("2026-01-01T00:00:00Z"),
                "active",
                research("permit"),
            ),
            // No meta: only its dateTime (the original's) to go by.
            doc(
                "c",
                MRN,
                json!(null),
                Some("2026-01-01T00:00:00Z"),
                "inactive",
                research("permit"),
            ),
        ],
    );
    assert_eq!(reasons(&outs), ["consent_apply", "consent_apply"]);
    assert_eq!(entry_of(&table, &l, MRN).status, ConsentStatus::Revoked);
}

/// The same revision re-sent with other content: taken when it permits no
/// more (a shorter period), held for review when it would permit more.
#[test]
fn a_same_revision_resend_is_taken_only_if_no_looser() {
    let l = ledger(Arc::new(MemoryVault::default()));
    let mut table = BTreeMap::new();
    let with_end = |end: &str| {
        let mut p = research("permit");
        p["period"] = json!({"start": "2026-01-01T00:00:00Z", "end": end});
        doc(
            "p",
            MRN,
            json!(null),
            Some("2026-01-01T00:00:00Z"),
            "active",
            p,
        )
    };
    let outs = feed(
        &l,
        &mut table,
        vec![
            with_end("2030-01-01T00:00:00Z"),
            with_end("2028-01-01T00:00:00Z"),
            with_end("2035-01-01T00:00:00Z"),
            with_end("2028-01-01T00:00:00Z"),
        ],
    );
    assert_eq!(
        reasons(&outs),
        [
            "consent_apply",
            "consent_apply",
            "invalid_transition: consent/HRESCH/*: d1767225600000 again, permitting more: not taken",
            "consent_duplicate"
        ]
    );
}
