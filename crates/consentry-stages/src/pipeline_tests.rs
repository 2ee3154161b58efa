//! The stages chained in process over the synthetic feed, under the
//! shipped topology: every purpose's records, under its profile's rules.
//! (The broker-level version, scanning the destination topics, is
//! `tests/deidentify.rs`.)

use crate::Services;
use consentry_core::stage::testing::meta;
use consentry_core::stage::StageName;
use consentry_core::stage::{Body, InputMeta, Outcome, Output, StageInput};
use consentry_core::topology::{Profile, Topology};
use consentry_crypto::TokenVault;
use consentry_synth::{generate, patients, Feed, SynthConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::test_fixtures::{services, topology, MemoryVault};

/// The synthetic feed's processing time: after every admission (2026-10-01
/// to 2026-11-30), inside every consent's period (from a day before the
/// admission, for ten years), so an event without a time of its own (a
/// transaction Bundle's new resources), judged at this time, is inside too.
pub(crate) const NOW_MS: i64 = 1_796_500_000_000;

/// Runs the synthetic feed through every stage (its consents through the
/// consent ledger first); returns the route outputs and every outcome.
fn through_pipeline(cfg: &SynthConfig, services: &Services) -> (Vec<Output>, Vec<Outcome>) {
    let t = topology();
    let input = |r: &consentry_synth::SynthRecord| StageInput {
        meta: meta(
            match r.feed {
                Feed::Hl7v2 => "ehr.hl7v2",
                Feed::Fhir => "ehr.fhir",
                Feed::Consent => "consent.events",
            },
            None,
        ),
        body: Body::Raw(r.payload.clone()),
    };
    let feed = generate(cfg);
    let (consents, sources): (Vec<_>, Vec<_>) = feed.iter().partition(|r| r.feed == Feed::Consent);
    let stages = crate::run_in_process(
        &t,
        services,
        consents.into_iter().map(input).collect(),
        sources.into_iter().map(input).collect(),
        NOW_MS,
    )
    .expect("stages build");
    let mut outcomes = Vec::new();
    let mut last = Vec::new();
    for (name, outs) in stages {
        for o in outs {
            assert!(
                o.quarantine.is_none(),
                "{name} quarantined {:?}",
                o.quarantine
            );
            if name == "route" {
                last.extend(o.outputs.iter().cloned());
            }
            outcomes.push(o);
        }
    }
    (last, outcomes)
}

fn events(cfg: &SynthConfig) -> usize {
    generate(cfg)
        .iter()
        .filter(|r| r.feed != Feed::Consent)
        .map(consentry_synth::events_in)
        .sum()
}

/// Events each purpose should receive: those of patients whose consent
/// names its code, and for a purpose that takes "consent needed" notices,
/// every event (a notice where there is no consent).
fn expected_per_purpose(cfg: &SynthConfig, t: &Topology) -> BTreeMap<String, usize> {
    let people: HashMap<String, Vec<&'static str>> = patients(cfg)
        .into_iter()
        .map(|p| {
            (
                consentry_core::keys::subject_key(&cfg.subject_system, &p.mrn).to_string(),
                p.consented.clone(),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for r in generate(cfg).iter().filter(|r| r.feed != Feed::Consent) {
        for p in t.purposes.values() {
            let consented = people
                .get(&r.key)
                .is_some_and(|c| c.contains(&p.consent_code.as_str()));
            let notify = p.on_missing_consent == consentry_core::topology::MissingConsent::Notify;
            if consented || notify {
                *out.entry(p.name.clone()).or_default() += consentry_synth::events_in(r);
            }
        }
    }
    out
}

#[test]
fn every_purpose_gets_every_event_with_no_identifier_its_profile_forbids() {
    let t = topology();
    let cfg = SynthConfig::new(9, 6);
    let (outs, outcomes) = through_pipeline(&cfg, &services(Arc::default()));
    let expected = expected_per_purpose(&cfg, &t);
    let total: usize = expected.values().sum();
    assert_eq!(outs.len(), total);
    // Consent is a real filter here: two patients never agreed to
    // marketing, which gets "consent needed" notices for their events.
    let needed = outs
        .iter()
        .filter(|o| o.event.event_type == crate::consent_gate::CONSENT_NEEDED)
        .count();
    assert!(needed > 0 && needed < events(&cfg), "{needed}");
    let people = patients(&cfg);
    for p in t.purposes.values() {
        let mine: Vec<&Output> = outs.iter().filter(|o| o.topic == p.topic).collect();
        assert_eq!(mine.len(), expected[&p.name], "{}", p.name);
        for o in &mine {
            // Every byte of the record as JSON (Avro carries the same strings).
            let mut bytes = serde_json::to_string(&o.event).expect("serializes");
            if p.profile.is_phi() {
                // What the profile keeps is no leak (a name inside a city:
                // "Lewis" in "Lewistown").
                for (_, v) in people.iter().flat_map(|x| x.limited_identifiers()) {
                    bytes = bytes.replace(&v, "");
                }
            }
            for person in &people {
                for (kind, v) in person.direct_identifiers() {
                    assert!(
                        !bytes.contains(&v),
                        "a {kind} reached {} ({}) in {}",
                        p.name,
                        p.profile.as_str(),
                        o.event.event_type,
                    );
                }
                if !p.profile.is_phi() {
                    for (kind, v) in person.limited_identifiers() {
                        assert!(!bytes.contains(&v), "a {kind} reached {}", p.name);
                    }
                }
            }
            // The label travels in the destination's schema and the
            // disclosure ledger (security_labels is on no allowlist).
            let disclosure = outcomes
                .iter()
                .flat_map(|x| &x.disclosures)
                .find(|d| d.disclosure_id == o.idempotency_key)
                .expect("every record written is in the disclosure ledger");
            assert_eq!(disclosure.phi, p.profile.is_phi(), "{}", p.name);
            assert_eq!(disclosure.purpose, p.name.as_str());
        }
        // A limited data set keeps what it may: 5-digit ZIPs and full birth dates.
        if p.profile == Profile::LimitedDataSet {
            let zips: BTreeSet<_> = mine
                .iter()
                .filter_map(|o| o.event.demographics.as_ref()?.postal_code.clone())
                .collect();
            assert!(zips.iter().any(|z| z.len() == 5), "{zips:?}");
        }
    }
    // One audit record per stage per unit; de-identify's carries the recipe.
    let deid: Vec<_> = outcomes
        .iter()
        .filter(|o| o.audit.stage == "de-identify")
        .collect();
    assert_eq!(deid.len(), total);
    for o in &deid {
        let purpose = o.audit.purpose.as_deref().expect("purpose");
        let profile = t.purposes[purpose].profile.as_str();
        assert_eq!(o.audit.profile.as_deref(), Some(profile));
        assert!(!o.audit.transformations.is_empty());
    }
    let trial = deid
        .iter()
        .find(|o| o.audit.purpose.as_deref() == Some("trial-recruitment"))
        .expect("a trial record");
    assert!(trial
        .audit
        .transformations
        .iter()
        .any(|s| s.method == "date_shift" && s.params == "max_days=180"));
    let keys: BTreeSet<_> = outs.iter().map(|o| &o.idempotency_key).collect();
    assert_eq!(keys.len(), outs.len(), "idempotency keys are distinct");
}

#[test]
fn tokens_follow_each_purposes_linkage_and_domain() {
    let cfg = SynthConfig::new(9, 6);
    let vault = Arc::new(MemoryVault::default());
    let (outs, _) = through_pipeline(&cfg, &services(Arc::clone(&vault)));
    let by_topic =
        |topic: &str| -> Vec<&Output> { outs.iter().filter(|o| o.topic == topic).collect() };

    // identified-tokenized: deterministic crm tokens, registered with the vault.
    let ps = by_topic("out.patient-support");
    for o in &ps {
        assert!(o.event.subject_key.starts_with("tok:crm:v1:"));
        assert!(!o.event.identifiers.is_empty());
        for i in &o.event.identifiers {
            assert!(i.value.starts_with("tok:crm:v1:"), "{}", i.system);
        }
        if let Some(d) = &o.event.demographics {
            for v in [&d.family_name, &d.phone, &d.email].into_iter().flatten() {
                assert!(v.starts_with("tok:crm:v1:"));
            }
        }
    }
    // What the vault holds for a token is the identifier it stands for.
    let registered = vault.registered.lock().unwrap();
    let first = &ps[0].event.identifiers[0];
    let (domain, subject, identity) = &registered[first.value.as_str()];
    assert_eq!(domain, "crm");
    assert!(!subject.is_empty() && !subject.starts_with("tok:"));
    let identity = String::from_utf8(identity.clone()).expect("utf-8");
    let (system, value) = identity.split_once('|').expect("system|value");
    assert_eq!(system, first.system);
    let known: BTreeSet<String> = patients(&cfg)
        .iter()
        .flat_map(|p| p.direct_identifiers().into_iter().map(|(_, v)| v))
        .collect();
    assert!(
        known.contains(value),
        "the token stands for a real identifier"
    );
    drop(registered);

    // limited-data-set: a deterministic registry token, nothing registered.
    for o in by_topic("out.research-registry") {
        assert!(o.event.subject_key.starts_with("tok:registry:v1:"));
        assert!(o.event.identifiers.is_empty());
    }
    // safe-harbor with random linkage: one vaulted token per subject, the
    // same across the subject's events; no deterministic token anywhere.
    let trial = by_topic("out.trial-recruitment");
    let subjects: BTreeSet<_> = trial.iter().map(|o| o.event.subject_key.clone()).collect();
    assert_eq!(subjects.len(), 6, "one token per patient");
    for s in &subjects {
        assert!(s.starts_with("tok:trial:r1:"));
    }
    // safe-harbor without linkage, aggregate-only: no subject at all.
    for topic in [
        "out.outcomes-analytics",
        "out.marketing",
        "out.trial-recruitment",
    ] {
        for o in by_topic(topic) {
            let bytes = serde_json::to_string(&o.event).expect("serializes");
            assert!(
                !bytes.contains(":v1:"),
                "a deterministic token reached {topic}"
            );
            if topic != "out.trial-recruitment" {
                assert!(o.event.subject_key.is_empty());
            }
            assert!(o.event.identifiers.is_empty());
        }
    }
    // Domains never join: the same patient's tokens differ by domain.
    let crm: BTreeSet<_> = ps.iter().map(|o| o.event.subject_key.clone()).collect();
    assert!(crm.is_disjoint(&subjects));
}

#[test]
fn processing_is_deterministic_given_the_vault() {
    let cfg = SynthConfig::new(3, 3);
    let vault = Arc::new(MemoryVault::default());
    let a = through_pipeline(&cfg, &services(Arc::clone(&vault))).0;
    let b = through_pipeline(&cfg, &services(vault)).0;
    assert_eq!(a, b);
}

#[test]
fn a_vault_that_does_not_answer_is_not_a_verdict_on_the_record() {
    let t = topology();
    let vault = Arc::new(MemoryVault::default());
    vault.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let tokenize = crate::tokenize::Tokenize::new(
        &t,
        services(Arc::clone(&vault)).keys.as_deref(),
        Some(vault),
    )
    .expect("builds");
    let ev = consentry_core::CanonicalEvent {
        subject_key: "subject-digest".into(),
        purpose: Some("trial-recruitment".into()),
        ..Default::default()
    };
    let o = consentry_core::stage::Stage::process(
        &tokenize,
        &StageInput {
            meta: InputMeta {
                idempotency_key: Some("ik1-x".into()),
                ..meta("events.deidentified", None)
            },
            body: Body::Event(Box::new(ev)),
        },
        &consentry_core::stage::NoState,
    );
    assert_eq!(
        o[0].quarantine.as_ref().map(|q| q.reason),
        Some(consentry_core::ReasonCode::Unavailable)
    );
    assert!(o[0].outputs.is_empty());
}

/// Shredding holds against records in flight: once the subject's consent
/// changes, tokenize forgets what it cached of the subject, the vault
/// refuses to issue again, and the record is denied, until a newer grant.
#[test]
fn after_a_shred_tokenize_hands_out_nothing_the_vault_no_longer_holds() {
    use consentry_core::stage::{NoState, Stage};
    let t = topology();
    let vault = Arc::new(MemoryVault::default());
    let tokenize = crate::tokenize::Tokenize::new(
        &t,
        services(Arc::clone(&vault)).keys.as_deref(),
        Some(Arc::clone(&vault) as Arc<dyn TokenVault>),
    )
    .expect("builds");
    let record = |purpose: &str| StageInput {
        meta: InputMeta {
            idempotency_key: Some(format!("ik1-{purpose}")),
            ..meta("events.deidentified", None)
        },
        body: Body::Event(Box::new(consentry_core::CanonicalEvent {
            subject_key: "subject-digest".into(),
            subject_token: Some("tok:subject:v1:PSEUDO".into()),
            purpose: Some(purpose.into()),
            ..Default::default()
        })),
    };
    let first = tokenize.process(&record("trial-recruitment"), &NoState);
    let token = first[0].outputs[0].event.subject_key.clone();
    assert!(token.starts_with("tok:trial:r1:"));
    // The consent ledger shreds (research consent withdrawn); the table
    // change reaches tokenize.
    vault.shred("subject-digest", "trial").unwrap();
    let changed = [consentry_core::consent::table_key(
        "tok:subject:v1:PSEUDO",
        "HRESCH",
        "*",
    )];
    let all = |_: &str, _: i32| true;
    assert!(tokenize
        .on_state_change(Some(&changed), &NoState, &all)
        .is_empty());
    let after = tokenize.process(&record("trial-recruitment"), &NoState);
    assert!(after[0].outputs.is_empty(), "no token after the shred");
    assert_eq!(
        (
            after[0].audit.decision.as_str(),
            after[0].audit.reason_code.as_str()
        ),
        ("deny", "subject_shredded")
    );
    assert!(vault.links.lock().unwrap().is_empty(), "nothing re-created");
    // Another consent code's change leaves other domains' caches alone.
    let other = tokenize.process(&record("patient-support"), &NoState);
    assert!(!other[0].outputs.is_empty());
    // A newer grant reinstates: a new subject in the domain.
    vault.reinstate("subject-digest", "trial").unwrap();
    let again = tokenize.process(&record("trial-recruitment"), &NoState);
    let new = &again[0].outputs[0].event.subject_key;
    assert!(new.starts_with("tok:trial:r1:") && *new != token);
}

#[test]
fn stages_that_need_keys_or_the_vault_refuse_to_start_without_them() {
    let t = topology();
    let err = crate::build(StageName::DeIdentify, &t, &Services::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("trial-recruitment") && err.contains("key ring"),
        "{err}"
    );
    let keys_only = Services {
        keys: services(Arc::default()).keys,
        vault: None,
    };
    let err = crate::build(StageName::Tokenize, &t, &keys_only)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("vault"), "{err}");
    assert!(crate::build(StageName::DeIdentify, &t, &keys_only).is_ok());
}
