//! De-identification on the real stack: a synthetic corpus carrying every one of the
//! 18 HIPAA identifier kinds (structured and in free text) through all six
//! stages; then every byte of every record on the destination topics,
//! `events.tokenized` and the audit topic is scanned for every input value,
//! under each purpose's profile. Then a replay of the same feed with the
//! same keys and vault (a restart) gives the same tokens and date shifts,
//! the vault resolves what the records carry, and shredding a subject makes
//! its tokens unresolvable.

use consentry_core::CanonicalEvent;
use consentry_runtime::inspect::header;
use consentry_synth::{generate, patients, Feed, SynthConfig};
use consentry_testkit::Env;
use consentry_vault::VaultError;
use std::collections::{BTreeMap, BTreeSet};

const PATIENTS: usize = 12;

/// Every byte a record carries: key, header values, payload.
fn by_key(events: Vec<(String, CanonicalEvent)>) -> BTreeMap<String, CanonicalEvent> {
    events.into_iter().collect()
}

#[test]
fn no_identifier_leaves_and_tokens_survive_a_restart() {
    let env = Env::new("deid");
    let cfg = SynthConfig::new(21, PATIENTS);
    let feed = generate(&cfg);
    env.publish_synth(&feed);
    env.run_ok(&["run", "all", "--exit-when-idle", "6"]);
    // What each destination should hold, consent applied (computed in process).
    let expected = env.expected_outputs(&feed);
    let events: usize = feed
        .iter()
        .filter(|r| r.feed != Feed::Consent)
        .map(consentry_synth::events_in)
        .sum();

    // The scan: every input value against every byte of every record.
    let people = patients(&cfg);
    let direct: Vec<(&str, String)> = people.iter().flat_map(|p| p.direct_identifiers()).collect();
    let limited: Vec<(&str, String)> = people
        .iter()
        .flat_map(|p| p.limited_identifiers())
        .collect();
    let all: Vec<(&str, String)> = direct.iter().chain(&limited).cloned().collect();
    let mut scanned = 0;
    for p in env.topology.purposes.values() {
        let records = env.read(&p.topic);
        let want = expected.get(&p.topic).map_or(0, BTreeMap::len);
        assert!(want > 0 && want <= events, "{}", p.topic);
        assert_eq!(
            records.len(),
            want,
            "{} holds every consented event",
            p.topic
        );
        for m in &records {
            let mut bytes = consentry_testkit::record_bytes(m);
            // Keyed ids and tokens are random-looking runs: a ZIP turns up
            // in them by chance, not as a value.
            consentry_testkit::mask_ids(&mut bytes);
            // A PHI profile may keep ZIP, city and birth date (a family name
            // inside a kept city is no leak); the others keep none of them.
            let leak = if p.profile.is_phi() {
                consentry_testkit::find_leak(&bytes, &direct, &limited)
            } else {
                consentry_testkit::find_leak(&bytes, &all, &[])
            };
            assert!(
                leak.is_none(),
                "a {:?} reached {}",
                leak.map(|l| l.0),
                p.topic
            );
            let phi = if p.profile.is_phi() { "true" } else { "false" };
            assert_eq!(header(m, "phi"), Some(phi), "{}", p.topic);
            scanned += 1;
        }
    }
    let destined: usize = env
        .topology
        .purposes
        .values()
        .map(|p| expected.get(&p.topic).map_or(0, BTreeMap::len))
        .sum();
    assert_eq!(scanned, destined);
    for topic in ["events.tokenized", "audit"] {
        let records = env.read(topic);
        assert!(!records.is_empty());
        for m in &records {
            let mut bytes = consentry_testkit::record_bytes(m);
            // events.tokenized holds the limited data sets' ZIPs and dates.
            let leak = if topic == "audit" {
                // Chain hashes and fingerprints are long runs of hex digits,
                // in which a 5-digit ZIP turns up by chance: not a value.
                mask_hex_runs(&mut bytes);
                consentry_testkit::find_leak(&bytes, &all, &[])
            } else {
                consentry_testkit::find_leak(&bytes, &direct, &limited)
            };
            assert!(leak.is_none(), "a {:?} reached {topic}", leak.map(|l| l.0));
        }
    }

    // The recipe: every de-identify audit record names its profile, and the
    // trial purpose its keyed, bounded date shift.
    let audits = env.audits();
    let deid: Vec<_> = audits
        .iter()
        .filter(|a| a.stage == "de-identify" && a.decision != "checkpoint")
        .collect();
    assert_eq!(deid.len(), expected["events.deidentified"].len());
    assert!(deid.iter().all(|a| a.profile.is_some()));
    assert!(deid.iter().any(|a| a
        .transformations
        .iter()
        .any(|t| t.method == "date_shift" && t.params == "max_days=180")));

    // A restart on a replay of the same feed, with the same keys and vault.
    let first_ps = by_key(env.events("out.patient-support"));
    let first_trial = by_key(env.events("out.trial-recruitment"));
    let again = Env::sharing_keys("deid2", &env);
    again.publish_synth(&feed);
    again.run_ok(&["run", "all", "--exit-when-idle", "6"]);
    let second_ps = by_key(again.events("out.patient-support"));
    let second_trial = by_key(again.events("out.trial-recruitment"));
    assert_eq!(first_ps.len(), expected["out.patient-support"].len());
    assert_eq!(
        first_ps, second_ps,
        "deterministic tokens are the same after a restart"
    );
    assert_eq!(
        first_trial, second_trial,
        "random linkage tokens and date shifts are the same after a restart"
    );
    // Within a subject, one token; across subjects, different ones.
    let subjects: BTreeSet<_> = first_trial
        .values()
        .map(|e| e.subject_key.clone())
        .collect();
    let consented = people
        .iter()
        .filter(|p| p.consented.contains(&"HRESCH"))
        .count();
    assert_eq!(subjects.len(), consented);

    // The vault resolves what the records carry, until the subject is shredded.
    let (_, vault) = env.open_vault();
    let mrns: BTreeSet<String> = people.iter().map(|p| p.mrn.clone()).collect();
    let trial_token = subjects.iter().next().expect("a subject").to_string();
    let identity =
        String::from_utf8(vault.resolve(&trial_token).expect("resolves").to_vec()).expect("utf-8");
    let (system, mrn) = identity.split_once('|').expect("system|value");
    assert_eq!(system, env.topology.identity.subject_system);
    assert!(
        mrns.contains(mrn),
        "a linkage token stands for the subject's MRN"
    );
    let ps = first_ps
        .values()
        .find(|e| !e.identifiers.is_empty())
        .expect("a patient-support record with identifiers");
    let crm_token = ps.identifiers[0].value.to_string();
    assert!(crm_token.starts_with("tok:crm:v1:"));
    assert!(vault.resolve(&crm_token).is_ok());
    // Shredding: the subject behind the trial token.
    let subject = people
        .iter()
        .find(|p| p.mrn == mrn)
        .map(|p| consentry_core::keys::subject_key(system, &p.mrn))
        .expect("the patient");
    assert!(vault.shred(&subject, None).expect("shreds") >= 1);
    assert!(matches!(
        vault.resolve(&trial_token),
        Err(VaultError::NotFound)
    ));
}

/// Zeroes every run of 32 or more lower-case hex digits, dashes allowed
/// between them (MAC outputs, ids in UUID layout).
fn mask_hex_runs(bytes: &mut [u8]) {
    // Dashes join a run too: correlation ids are hex in UUID layout
    // (8-4-4-4-12), where a ZIP turns up by chance about once in a few
    // thousand records. A run must still hold 32 hex digits.
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-';
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && hex(bytes[i]) {
            i += 1;
        }
        if bytes[start..i].iter().filter(|b| **b != b'-').count() >= 32 {
            bytes[start..i].fill(0);
        }
        i = i.max(start + 1);
    }
}

#[test]
fn hex_runs_and_uuids_are_masked_and_short_values_are_not() {
    let mut b = b"zip 12345 in 0a1b2c3d-1234-5678-9abc-def012345678 and ab12345cd".to_vec();
    mask_hex_runs(&mut b);
    let text = String::from_utf8_lossy(&b).replace('\0', "");
    assert_eq!(text, "zip 12345 in  and ab12345cd");
}
