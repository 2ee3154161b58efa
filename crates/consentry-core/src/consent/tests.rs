//! Tests of the consent state machine, the ordering of versions, and the
//! gate's decision from a subject's entries.

use super::*;
use crate::envelope::ConsentProvision;
use ConsentStatus::*;

fn change(status: ConsentStatus, version: i64) -> ConsentChange {
    ConsentChange {
        status,
        version: Some(version),
        updated_ms: None,
        issued_ms: None,
        dated: true,
        reference: "Consent/c1".into(),
        permit: true,
        effective_ms: 1_000,
        period_start_ms: None,
        period_end_ms: None,
        provisions: Vec::new(),
        source: "portal".into(),
        captured_by: None,
        notice_version: None,
        received_ms: 5,
    }
}

fn entry(status: ConsentStatus, version: i64) -> ConsentEntry {
    match transition(None, &change(Captured, version)) {
        Transition::Apply(e) => ConsentEntry { status, ..*e },
        other => panic!("{other:?}"),
    }
}

/// Every (from, to) pair within one version, against the list written out
/// by hand from the state machine.
#[test]
fn every_transition_within_a_version() {
    let valid = [
        (Captured, Validated),
        (Validated, Active),
        (Captured, Revoked),
        (Validated, Revoked),
        (Active, Expired),
        (Active, Revoked),
        (Active, Superseded),
        // A revocation is always taken: withdrawing a lapsed or replaced
        // consent still shreds and notifies.
        (Expired, Revoked),
        (Superseded, Revoked),
    ];
    let mut applied = 0;
    for from in ConsentStatus::ALL {
        for to in ConsentStatus::ALL {
            let got = transition(Some(&entry(from, 3)), &change(to, 3));
            if from == to {
                assert_eq!(got, Transition::Duplicate, "{from:?} again");
            } else if valid.contains(&(from, to)) {
                let Transition::Apply(e) = got else {
                    panic!("{from:?} -> {to:?} refused")
                };
                assert_eq!((e.status, e.version), (to, Some(3)));
                applied += 1;
            } else {
                assert_eq!(
                    got,
                    Transition::Refuse(Refusal::InvalidTransition {
                        from: Some(from),
                        to
                    }),
                    "{from:?} -> {to:?} must be refused"
                );
            }
        }
    }
    assert_eq!(applied, valid.len());
}

#[test]
fn from_unknown_only_the_entry_states() {
    for to in ConsentStatus::ALL {
        let got = transition(None, &change(to, 1));
        match to {
            Captured | Validated | Active => {
                assert!(
                    matches!(got, Transition::Apply(ref e) if e.status == to && e.previous_revision.is_none())
                )
            }
            _ => assert_eq!(
                got,
                Transition::Refuse(Refusal::InvalidTransition { from: None, to })
            ),
        }
    }
    let r = Refusal::InvalidTransition {
        from: None,
        to: Revoked,
    };
    assert_eq!(
        (r.reason().as_str(), r.detail().as_str()),
        ("invalid_transition", "unknown -> revoked")
    );
}

/// A newer version starts a new consent (supersession, re-grant), revokes
/// (always), or expires the current one (unless it has already ended).
#[test]
fn newer_versions_supersede_regrant_revoke_or_end() {
    for from in ConsentStatus::ALL {
        for to in ConsentStatus::ALL {
            let got = transition(Some(&entry(from, 2)), &change(to, 5));
            let ok = to.is_entry() || to == Revoked || (to == Expired && !from.is_final());
            match got {
                Transition::Apply(e) => {
                    assert!(ok, "{from:?} -> v5 {to:?} applied");
                    assert_eq!(
                        (e.status, e.version, e.previous_revision.as_deref()),
                        (to, Some(5), Some("v2"))
                    );
                }
                Transition::Refuse(Refusal::InvalidTransition { from: f, to: t }) => {
                    assert!(!ok, "{from:?} -> v5 {to:?} refused");
                    assert_eq!((f, t), (Some(from), to));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Re-grant after a revocation is a new version.
    let Transition::Apply(regrant) = transition(Some(&entry(Revoked, 2)), &change(Active, 3))
    else {
        panic!("re-grant refused")
    };
    assert_eq!(
        (regrant.status, regrant.previous_revision.as_deref()),
        (Active, Some("v2"))
    );
    // ... and never the same version.
    assert!(matches!(
        transition(Some(&entry(Revoked, 2)), &change(Active, 2)),
        Transition::Refuse(_)
    ));
}

#[test]
fn older_versions_are_stale_whatever_they_say() {
    for from in ConsentStatus::ALL {
        for to in ConsentStatus::ALL {
            assert_eq!(
                transition(Some(&entry(from, 7)), &change(to, 6)),
                Transition::Refuse(Refusal::StaleVersion {
                    current: "v7".into(),
                    got: "v6".into()
                })
            );
        }
    }
    assert_eq!(
        Refusal::StaleVersion {
            current: "v7".into(),
            got: "v6".into()
        }
        .detail(),
        "v6 is older than the table's v7"
    );
}

/// A document of another id: ordered by effective time, never by version
/// numbers, which belong to each document alone (issue 16: a new opt-out
/// at its own version 1 lost to an older opt-in at version 3).
#[test]
fn a_newer_document_supersedes_an_older_one_whatever_their_versions() {
    let opt_in = ConsentChange {
        reference: "Consent/opt-in".into(),
        effective_ms: 1_000,
        ..change(Active, 3)
    };
    let opt_out = ConsentChange {
        reference: "Consent/opt-out".into(),
        effective_ms: 2_000,
        permit: false,
        ..change(Active, 1)
    };
    for order in [[&opt_in, &opt_out], [&opt_out, &opt_in]] {
        let mut table: Option<ConsentEntry> = None;
        for c in order {
            if let Transition::Apply(e) = transition(table.as_ref(), c) {
                table = Some(*e);
            }
        }
        let t = table.expect("applied");
        assert_eq!(
            (t.reference.as_str(), t.permit),
            ("Consent/opt-out", false),
            "arrival {:?}",
            order.map(|c| c.reference.as_str())
        );
    }
    // The older document arriving last is stale, named by revisions.
    let Transition::Apply(out) = transition(None, &opt_out) else {
        panic!()
    };
    assert!(matches!(
        transition(Some(&out), &opt_in),
        Transition::Refuse(Refusal::StaleVersion { .. })
    ));
    // At the same time a refusal wins, in either order.
    let same_time = ConsentChange {
        effective_ms: 2_000,
        ..opt_in.clone()
    };
    assert_eq!(order(&out, &same_time), Order::Older);
    let Transition::Apply(permit) = transition(None, &same_time) else {
        panic!()
    };
    assert_eq!(order(&permit, &opt_out), Order::Newer);
    // Two permits at the same time: the same answer whatever arrives first.
    let other = ConsentChange {
        reference: "Consent/zzz".into(),
        ..same_time.clone()
    };
    let Transition::Apply(z) = transition(None, &other) else {
        panic!()
    };
    assert_eq!(order(&permit, &other), Order::Newer);
    assert_eq!(order(&z, &same_time), Order::Older);
}

/// Within one document without version numbers: by update time.
#[test]
fn versions_without_numbers_order_by_update_time() {
    let at = |status, t| ConsentChange {
        version: None,
        updated_ms: Some(t),
        ..change(status, 1)
    };
    let Transition::Apply(first) = transition(None, &at(Active, 10)) else {
        panic!()
    };
    assert_eq!(first.basis("*"), "Consent/c1@t10/*");
    let Transition::Apply(revoked) = transition(Some(&first), &at(Revoked, 20)) else {
        panic!()
    };
    assert_eq!(revoked.status, Revoked);
    assert!(matches!(
        transition(Some(&revoked), &at(Active, 5)),
        Transition::Refuse(Refusal::StaleVersion { .. })
    ));
    assert_eq!(
        transition(Some(&first), &at(Active, 10)),
        Transition::Duplicate
    );
    // Neither version nor time: named by the effective time.
    let bare = ConsentChange {
        version: None,
        ..change(Active, 1)
    };
    assert_eq!(bare.revision(), "e1000");
    // The same revision turning into a refusal is taken (most restrictive).
    let deny = ConsentChange {
        permit: false,
        ..at(Active, 10)
    };
    assert!(matches!(transition(Some(&first), &deny), Transition::Apply(e) if !e.permit));
}

/// Out-of-order delivery: whatever order versions 1..=3 arrive in, the
/// table ends at the newest valid one.
#[test]
fn newest_valid_version_wins_in_any_order() {
    let changes = [change(Active, 1), change(Revoked, 2), change(Active, 3)];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        let mut table: Option<ConsentEntry> = None;
        for i in order {
            if let Transition::Apply(e) = transition(table.as_ref(), &changes[i]) {
                table = Some(*e);
            }
        }
        let t = table.expect("something applied");
        // v2 (revoked) alone cannot start a consent; v3 always ends up on top.
        assert_eq!((t.version, t.status), (Some(3), Active), "order {order:?}");
    }
}

fn ask<'a>(classes: &'a [&'a str], now_ms: i64) -> Ask<'a> {
    Ask {
        code: "HRESCH",
        classes,
        event_time_ms: Some(2_000),
        judge_period: true,
        now_ms,
        notify_when_missing: false,
    }
}

#[test]
fn decisions_by_state_period_and_expiry() {
    let classes = ["Observation"];
    let on = |e: ConsentEntry, now| decide(&[("*", e)], &ask(&classes, now));
    let d = on(entry(Active, 4), 3_000);
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Allow, ConsentReason::Active)
    );
    assert_eq!(d.basis.as_deref(), Some("Consent/c1@v4/*"));
    assert_eq!(
        (d.reference.as_deref(), d.version.as_deref()),
        (Some("Consent/c1"), Some("v4"))
    );
    for (status, why) in [
        (Captured, ConsentReason::Pending),
        (Validated, ConsentReason::Pending),
        (Expired, ConsentReason::Expired),
        (Superseded, ConsentReason::Superseded),
        (Revoked, ConsentReason::Revoked),
    ] {
        let d = on(entry(status, 4), 3_000);
        assert_eq!((d.verdict, d.reason), (Verdict::Deny, why), "{status:?}");
        assert_eq!(d.version.as_deref(), Some("v4"));
    }
    // Expiry is judged at the processing time...
    let expiring = ConsentEntry {
        period_end_ms: Some(2_500),
        ..entry(Active, 1)
    };
    assert_eq!(on(expiring.clone(), 2_400).verdict, Verdict::Allow);
    assert_eq!(on(expiring, 2_600).reason, ConsentReason::Expired);
    // ...the period against the event's own time.
    let later = ConsentEntry {
        period_start_ms: Some(2_001),
        ..entry(Active, 1)
    };
    assert_eq!(
        on(later.clone(), 3_000).reason,
        ConsentReason::OutsidePeriod
    );
    // An event without a time: the period is judged at the processing
    // time, never skipped.
    let timeless = |e: ConsentEntry, now| {
        decide(
            &[("*", e)],
            &Ask {
                event_time_ms: None,
                ..ask(&classes, now)
            },
        )
    };
    assert_eq!(
        timeless(later.clone(), 2_000).reason,
        ConsentReason::OutsidePeriod
    );
    assert_eq!(timeless(later, 2_002).verdict, Verdict::Allow);
    // A consent that refuses the purpose.
    let refusal = ConsentEntry {
        permit: false,
        ..entry(Active, 1)
    };
    assert_eq!(on(refusal, 3_000).reason, ConsentReason::Refused);
    // Nothing known: deny, or "consent needed" where the purpose takes it.
    let d = decide(&[], &ask(&classes, 0));
    assert_eq!(
        (d.verdict, d.reason, d.basis),
        (Verdict::Deny, ConsentReason::Unknown, None)
    );
    let notify = Ask {
        notify_when_missing: true,
        ..ask(&classes, 0)
    };
    assert_eq!(decide(&[], &notify).verdict, Verdict::Downgrade);
    assert_eq!(
        decide(&[("*", entry(Captured, 1))], &notify).verdict,
        Verdict::Downgrade
    );
    // Never a notice to a subject who refused.
    assert_eq!(
        decide(&[("*", entry(Revoked, 1))], &notify).verdict,
        Verdict::Deny
    );
}

/// The most restrictive of a channel's entry and the all-channel one.
#[test]
fn a_refusal_on_any_channel_beats_a_permit() {
    let classes = ["Patient"];
    let a = ask(&classes, 0);
    let d = decide(&[("email", entry(Revoked, 2)), ("*", entry(Active, 1))], &a);
    assert_eq!(
        (d.verdict, d.basis.as_deref()),
        (Verdict::Deny, Some("Consent/c1@v2/email"))
    );
    let d = decide(&[("email", entry(Expired, 2)), ("*", entry(Active, 1))], &a);
    assert_eq!(
        (d.verdict, d.basis.as_deref()),
        (Verdict::Allow, Some("Consent/c1@v1/*"))
    );
}

fn provision(decision: &str, depth: i32, purposes: &[&str], classes: &[&str]) -> ConsentProvision {
    ConsentProvision {
        decision: Some(decision.into()),
        purposes: purposes.iter().map(|p| (*p).into()).collect(),
        data_classes: classes.iter().map(|c| (*c).into()).collect(),
        depth,
    }
}

/// A permit with a nested deny for a data class: the narrower decision.
#[test]
fn nested_deny_provisions_narrow_the_decision() {
    let provisions = vec![
        provision("deny", 1, &[], &["Observation"]),
        // Inside the deny: a permit for one purpose's lab results again.
        provision("permit", 2, &["TREAT"], &[]),
        provision("deny", 1, &["HMARKT"], &[]),
    ];
    let e = ConsentEntry {
        provisions: provisions.clone(),
        ..entry(Active, 1)
    };
    let obs = ["Observation"];
    let enc = ["Patient", "Encounter"];
    let d = decide(&[("*", e.clone())], &ask(&obs, 0));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Deny, ConsentReason::ProvisionDeny)
    );
    assert_eq!(
        decide(&[("*", e.clone())], &ask(&enc, 0)).verdict,
        Verdict::Allow
    );
    assert_eq!(
        provision_decision(true, &provisions, "TREAT", &obs),
        (true, 2)
    );
    assert_eq!(
        provision_decision(true, &provisions, "HMARKT", &enc),
        (false, 1)
    );
    assert_eq!(
        provision_decision(true, &provisions, "HRESCH", &enc),
        (true, 0)
    );
    // A root deny with a nested permit for one purpose opens only that one.
    let opt_in = [provision("permit", 1, &["HRESCH"], &[])];
    assert_eq!(
        provision_decision(false, &opt_in, "HRESCH", &obs),
        (true, 1)
    );
    assert_eq!(
        provision_decision(false, &opt_in, "HMARKT", &obs),
        (false, 0)
    );
    // A depth gap is not trusted to open anything.
    let gap = [provision("permit", 3, &[], &[])];
    assert_eq!(provision_decision(false, &gap, "HRESCH", &obs), (false, 0));
}

/// An entry that does not decode refuses; it is never skipped (skipping it
/// would let a permit on another channel decide).
#[test]
fn an_unreadable_entry_denies() {
    let classes = ["Patient"];
    let d = decide_table(
        &[("email", None), ("*", Some(entry(Active, 1)))],
        &ask(&classes, 0),
    );
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Deny, ConsentReason::Unreadable)
    );
    let d = decide_table(&[("*", Some(entry(Active, 1)))], &ask(&classes, 0));
    assert_eq!(d.verdict, Verdict::Allow);
    // A provision deeper than any document is refused, not allocated for.
    let deep = ConsentEntry {
        provisions: vec![provision("permit", i32::MAX, &[], &[])],
        ..entry(Active, 1)
    };
    assert_eq!(
        decide(&[("*", deep)], &ask(&classes, 0)).verdict,
        Verdict::Deny
    );
}

#[test]
fn keys_entries_and_classes() {
    let k = table_key("tok:subject:v1:abc", "HRESCH", "*");
    assert_eq!(k, "consent/tok:subject:v1:abc/HRESCH/*");
    assert_eq!(parse_key(&k), Some(("tok:subject:v1:abc", "HRESCH", "*")));
    assert_eq!(parse_key("disclosed/x"), None);
    let e = entry(Active, 9);
    assert_eq!(ConsentEntry::decode(&e.encode()), Some(e));
    assert_eq!(ConsentEntry::decode(b"{"), None);
    assert_eq!(event_classes("fhir:Observation"), ["Observation"]);
    assert_eq!(event_classes("ADT^A08"), ["Patient", "Encounter"]);
    for s in ConsentStatus::ALL {
        assert_eq!(ConsentStatus::parse(s.as_str()), Some(s));
    }
    assert_eq!(ConsentStatus::from_fhir("entered-in-error"), Some(Revoked));
    assert_eq!(ConsentStatus::from_fhir("bogus"), None);
}
