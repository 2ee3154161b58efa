//! Replay planning over the stages themselves: the synthetic feed through
//! every stage under the shipped policy is the history and the ledger;
//! the same policy plans nothing, and a field taken from one purpose
//! plans exactly the records that carried it.

use super::*;
use crate::pipeline_tests::NOW_MS;
use crate::test_fixtures::{services, topology, MemoryVault, SHIPPED_TOPOLOGY};
use consentry_core::stage::testing::{from_output, raw};
use consentry_synth::{generate, Feed, SynthConfig};
use std::collections::HashMap;
use std::sync::Arc;

const FIELD: &str = "encounter.encounter_class";

/// The ledger, the normalized history and the consent table of one live
/// run of the synthetic feed under the shipped policy.
/// What one live run left: what destinations hold, the normalized
/// history and the consent table.
struct LiveRun {
    held: BTreeMap<RecordKey, Record>,
    history: Vec<StageInput>,
    table: BTreeMap<String, Vec<u8>>,
    /// The raw source records the run read.
    sources: Vec<StageInput>,
}

fn live_run() -> LiveRun {
    live_run_under(&topology())
}

/// The same, with the stages running `t`.
fn live_run_under(t: &Topology) -> LiveRun {
    let services = services(Arc::new(MemoryVault::default()));
    let topic = |f: Feed| match f {
        Feed::Hl7v2 => "ehr.hl7v2",
        Feed::Fhir => "ehr.fhir",
        Feed::Consent => "consent.events",
    };
    let feed = generate(&SynthConfig::new(7, 30));
    let (consents, sources): (Vec<_>, Vec<_>) = feed
        .iter()
        .map(|r| (r.feed, raw(topic(r.feed), Some(&r.key), &r.payload)))
        .partition(|(f, _)| *f == Feed::Consent);
    let consents: Vec<StageInput> = consents.into_iter().map(|(_, i)| i).collect();
    let sources: Vec<StageInput> = sources.into_iter().map(|(_, i)| i).collect();
    let ledger = crate::build(StageName::ConsentLedger, t, &services).expect("ledger");
    let mut table = BTreeMap::new();
    crate::drive(ledger.as_ref(), &consents, &mut table);
    let stages = crate::run_in_process(t, &services, consents, sources.clone(), NOW_MS)
        .expect("stages build");
    let mut disclosures = Vec::new();
    let mut lineage = Lineage::default();
    let mut carried = HashMap::new();
    let mut values = HashMap::new();
    let mut history = Vec::new();
    for (name, outcomes) in stages {
        for o in outcomes {
            if name == "normalize" {
                history.extend(o.outputs.iter().map(from_output));
            }
            if name == "route" {
                for w in &o.outputs {
                    carried.insert(w.idempotency_key.to_string(), fields_of(&w.event));
                    values.insert(w.idempotency_key.to_string(), values_of(&w.event));
                }
            }
            lineage.add(&o.audit);
            disclosures.extend(o.disclosures);
        }
    }
    let sent = disclosures.len();
    let held = held_records(disclosures, &lineage, &carried, &values);
    assert!(held.unmatched.is_empty(), "{:?}", held.unmatched);
    assert_eq!(held.records.len(), sent, "every disclosure found its event");
    LiveRun {
        held: held.records,
        history,
        table,
        sources,
    }
}

fn plan(
    policy: &Topology,
    held: &BTreeMap<RecordKey, Record>,
    history: Vec<StageInput>,
    table: &BTreeMap<String, Vec<u8>>,
) -> Plan {
    plan_from(policy, held, (HistoryFrom::Normalized, history), table)
}

fn plan_from(
    policy: &Topology,
    held: &BTreeMap<RecordKey, Record>,
    history: (HistoryFrom, Vec<StageInput>),
    table: &BTreeMap<String, Vec<u8>>,
) -> Plan {
    let old = topology();
    let purposes: BTreeSet<String> = old
        .purposes
        .keys()
        .chain(policy.purposes.keys())
        .cloned()
        .collect();
    let mut services = services(Arc::new(MemoryVault::default()));
    services.vault = Some(Arc::new(PlanningVault));
    let replayed = replay(policy, &services, table, history, &purposes, NOW_MS).expect("replay");
    compare(held, &replayed, &purposes)
}

#[test]
fn from_the_source_a_change_plans_as_it_does_from_the_normalized_history() {
    let run = live_run();
    let policy = without_encounter_class();
    let normalized = plan(&policy, &run.held, run.history, &run.table);
    let from_source = plan_from(
        &policy,
        &run.held,
        (HistoryFrom::Source, run.sources),
        &run.table,
    );
    assert!(normalized.changes() > 0);
    assert_eq!(from_source, normalized);
}

#[test]
fn the_same_policy_plans_nothing() {
    let LiveRun {
        held,
        history,
        table,
        ..
    } = live_run();
    assert!(held.len() > 100, "a history worth planning: {}", held.len());
    let p = plan(&topology(), &held, history, &table);
    assert_eq!(p.changes(), 0, "{p:#?}");
    // Written under this very policy: all current.
    let current: u64 = p.destinations.iter().map(|d| d.already_current).sum();
    assert_eq!(current, held.len() as u64, "every disclosure accounted for");
}

#[test]
fn a_field_taken_from_a_purpose_plans_exactly_the_records_that_carried_it() {
    let LiveRun {
        held,
        history,
        table,
        ..
    } = live_run();
    let analytics = held.keys().filter(|k| k.0 == "outcomes-analytics").count() as u64;
    let carried = held
        .iter()
        .filter(|(k, r)| k.0 == "outcomes-analytics" && r.fields.contains(FIELD))
        .count() as u64;
    assert!(
        carried > 0 && carried < analytics,
        "some analytics records carry {FIELD}, not all: {carried} of {analytics}"
    );
    let held_analytics = analytics;
    let policy = without_encounter_class();
    let p = plan(&policy, &held, history, &table);
    let analytics = p
        .destinations
        .iter()
        .find(|d| d.purpose == "outcomes-analytics")
        .unwrap();
    assert_eq!(analytics.correct.records, carried);
    assert_eq!(analytics.unchanged, held_analytics - carried);
    assert_eq!(
        analytics.fields_withheld,
        BTreeMap::from([(FIELD.to_string(), carried)])
    );
    assert!(analytics.fields_released.is_empty() && analytics.profile_changes.is_empty());
    assert_eq!(
        (analytics.retract.records, analytics.backfill.records),
        (0, 0)
    );
    assert_eq!(analytics.correct.samples.len(), 3);
    assert_eq!(p.destinations[0].purpose, "outcomes-analytics");
    assert_eq!(p.changes(), carried, "no other destination changes: {p:#?}");
}

#[test]
fn a_subject_who_revoked_after_delivery_gets_neither_a_correction_nor_a_retraction() {
    use consentry_core::consent::{ConsentEntry, ConsentStatus};
    let LiveRun {
        held,
        history,
        mut table,
        ..
    } = live_run();
    // Every analytics consent revoked since the records went out.
    let mut revoked = 0;
    for (key, value) in table.iter_mut() {
        if key.contains("/HOPERAT/") {
            let mut e = ConsentEntry::decode(value).expect("a consent entry");
            e.status = ConsentStatus::Revoked;
            *value = e.encode();
            revoked += 1;
        }
    }
    assert!(revoked > 0);
    let analytics = held.keys().filter(|k| k.0 == "outcomes-analytics").count() as u64;
    // Under a policy that would also change their records.
    let policy = without_encounter_class();
    let p = plan(&policy, &held, history, &table);
    let a = p
        .destinations
        .iter()
        .find(|d| d.purpose == "outcomes-analytics")
        .unwrap();
    assert_eq!(a.consent_withheld, analytics, "{a:#?}");
    assert_eq!(a.changes(), 0, "{a:#?}");
    assert_eq!(p.changes(), 0, "no other destination changes: {p:#?}");
}

/// The analytics allowlist without `encounter.encounter_class`, under a
/// new policy version.
fn without_encounter_class() -> Topology {
    let text = SHIPPED_TOPOLOGY
        .replacen(
            "demographics.state, encounter.encounter_class]",
            "demographics.state]",
            1,
        )
        .replacen(
            "policy_version: \"2026.11-deidentify.1\"",
            "policy_version: \"2026.12-test\"",
            1,
        );
    Topology::parse("new.yaml", &text).expect("valid")
}

#[test]
fn records_stages_already_wrote_under_the_new_policy_are_not_corrected_again() {
    let policy = without_encounter_class();
    assert_ne!(policy.policy_version, topology().policy_version);
    // The stages switched over before this history was processed.
    let LiveRun {
        held,
        history,
        table,
        ..
    } = live_run_under(&policy);
    let p = plan(&policy, &held, history, &table);
    assert_eq!(p.changes(), 0, "{p:#?}");
    let current: u64 = p.destinations.iter().map(|d| d.already_current).sum();
    assert_eq!(
        current,
        held.len() as u64,
        "every record is already current"
    );
}
