//! Tests of topology loading: the shipped file loads, and each mutation of
//! it is refused with the file, line and fix.

use super::validate::parse_retention;
use super::*;
use crate::avro::SchemaRef;

use super::shipped::TEXT as SHIPPED;

fn errors_of(text: &str) -> Vec<TopologyError> {
    match Topology::parse("t.yaml", text) {
        Ok(_) => panic!("expected the topology to be rejected"),
        Err(e) => e.errors,
    }
}

/// The shipped text with `from` replaced by `to` (which must occur once).
fn mutate(from: &str, to: &str) -> String {
    assert_eq!(
        SHIPPED.matches(from).count(),
        1,
        "mutation anchor must be unique: {from}"
    );
    SHIPPED.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .expect("needle in text")
}

#[test]
fn shipped_topology_is_valid() {
    let t = Topology::parse("topology.yaml", SHIPPED).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.stages.len(), 6);
    assert_eq!(t.purposes.len(), 5);
    // The consent table: written by the ledger, read by the gate and route.
    assert_eq!(
        t.stages["consent-ledger"].state.as_deref(),
        Some("consent.state")
    );
    assert_eq!(
        t.stages["consent-gate"].reads.as_deref(),
        Some("consent.state")
    );
    assert_eq!(t.stages["route"].reads.as_deref(), Some("consent.state"));
    assert_eq!(t.stages["route"].state.as_deref(), Some("route.disclosed"));
    let marketing = &t.purposes["marketing"];
    assert_eq!(
        (marketing.channel.as_str(), marketing.on_missing_consent),
        ("email", MissingConsent::Notify)
    );
    assert_eq!(
        t.purposes["patient-support"].on_missing_consent,
        MissingConsent::Deny
    );
    assert_eq!(t.purposes["patient-support"].channel, "*");
    assert_eq!(t.audit_topic, "audit");
    assert_eq!(t.quarantine_topic, "quarantine");
    assert_eq!(
        t.topic("audit").map(|a| a.retention),
        Some(Retention::Unlimited)
    );
    assert_eq!(
        t.topic("consent.state").map(|a| a.cleanup),
        Some(Cleanup::Compact)
    );
    assert_eq!(t.purposes["marketing"].topic, "out.marketing");
    assert_eq!(t.purposes["trial-recruitment"].consent_code, "HRESCH");
    let trial = &t.purposes["trial-recruitment"];
    assert_eq!(trial.token_domain, "trial");
    assert_eq!(trial.linkage, Linkage::Random);
    assert_eq!(trial.deidentify.dates, DateMode::Shift);
    assert_eq!(trial.deidentify.age, AgeMode::Band(5));
    assert_eq!(trial.deidentify.rollup_codes, ["E75", "Q87"]);
    // Defaults: deterministic linkage for the PHI profiles, none otherwise,
    // the purpose's name as its domain.
    assert_eq!(
        t.purposes["patient-support"].linkage,
        Linkage::Deterministic
    );
    assert_eq!(
        t.purposes["registry-research"].linkage,
        Linkage::Deterministic
    );
    assert_eq!(t.purposes["outcomes-analytics"].linkage, Linkage::None);
    assert_eq!(t.purposes["marketing"].token_domain, "marketing");
    assert_eq!(
        t.purposes["marketing"].deidentify,
        DeidentifySpec {
            shift_max_days: DEFAULT_SHIFT_MAX_DAYS,
            ..Default::default()
        }
    );
}

#[test]
fn deterministic_tokens_are_refused_for_de_identified_purposes() {
    let text = mutate(
        "    linkage: random
",
        "    linkage: deterministic
",
    );
    let e = errors_of(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("164.514(c)"), "{}", e[0]);
    assert_eq!(e[0].line, line_of(&text, "linkage: deterministic"));
    assert!(e[0].fix.contains("linkage: random"));
}

#[test]
fn bad_deidentify_settings_name_their_line() {
    let text = mutate(
        "deidentify: { age: years }",
        "deidentify: { age: decades, dates: shift, rollup_codes: [e75] }",
    );
    let e = errors_of(&text);
    let line = line_of(&text, "age: decades");
    for (what, fix) in [
        ("has age 'decades'", "band-N"),
        (
            "shifts dates, but its profile limited-data-set keeps them",
            "safe-harbor",
        ),
        ("rolls up 'e75'", "upper-case"),
    ] {
        assert!(
            e.iter()
                .any(|x| x.message.contains(what) && x.fix.contains(fix) && x.line == line),
            "{what}: {e:?}"
        );
    }
    let unknown = mutate("deidentify: { age: years }", "deidentify: { ages: years }");
    assert!(errors_of(&unknown)[0]
        .message
        .contains("unknown field `ages`"));
}

#[test]
fn token_domains_are_valid_and_never_shared() {
    let text = mutate(
        "    token_domain: trial
",
        "    token_domain: crm
",
    );
    let e = errors_of(&text);
    assert!(
        e.iter().any(|x| x.message
            == "purposes 'patient-support' and 'trial-recruitment' share token domain 'crm'"),
        "{e:?}"
    );
    let bad = mutate(
        "    token_domain: trial
",
        "    token_domain: Trial_1
",
    );
    assert!(errors_of(&bad)[0].message.contains("not a valid domain"));
}

#[test]
fn unknown_key_names_line_and_fix() {
    let text = mutate(
        "    consumer_group: consentry-route\n",
        "    consumer_group: consentry-route\n    colour: blue\n",
    );
    let e = errors_of(&text);
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("unknown field `colour`"), "{}", e[0]);
    assert_eq!(e[0].line, line_of(&text, "colour: blue"));
    assert!(e[0]
        .to_string()
        .starts_with(&format!("t.yaml:{}:", e[0].line)));
}

#[test]
fn input_that_is_not_a_topic() {
    let text = mutate("inputs: [events.gated]", "inputs: [events.gatd]");
    let e = errors_of(&text);
    assert!(
        e.iter().any(|e| e.message
            == "stage 'de-identify' input 'events.gatd' is not a defined topic"
            && e.line == line_of(&text, "events.gatd")
            && e.fix.contains("add it under `topics:`")),
        "{e:?}"
    );
}

#[test]
fn missing_stage_and_broken_chain() {
    let text = mutate(
        "    inputs: [events.deidentified]\n",
        "    inputs: [events.normalized]\n",
    );
    let e = errors_of(&text);
    assert!(
        e.iter().any(|e| e
            .message
            .contains("stage 'tokenize' reads none of the topics stage 'de-identify' writes")),
        "{e:?}"
    );
}

#[test]
fn audit_topic_must_be_unlimited() {
    let text = mutate(
        "retention: unlimited, schema: audit_record",
        "retention: 7d, schema: audit_record",
    );
    let e = errors_of(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0]
        .message
        .contains("audit topic 'audit' must keep its records forever"));
    assert_eq!(e[0].fix, "set `retention: unlimited`");
    assert_eq!(e[0].line, line_of(&text, "role: audit"));
}

#[test]
fn consent_table_must_be_compacted() {
    let text = mutate(
        "consent.state:        { role: consent-state, partitions: 3, cleanup: compact }",
        "consent.state:        { role: consent-state, partitions: 3 }",
    );
    let e = errors_of(&text);
    assert!(
        e.iter()
            .any(|e| e.message.contains("is not compacted") && e.fix == "set `cleanup: compact`"),
        "{e:?}"
    );
}

#[test]
fn unclassified_and_unknown_fields() {
    let text = mutate(
        "  note: highly-restricted\n",
        "  notes: highly-restricted\n",
    );
    let e = errors_of(&text);
    assert!(
        e.iter()
            .any(|e| e.message == "envelope field 'note' has no disclosure class"),
        "{e:?}"
    );
    assert!(
        e.iter().any(
            |e| e.message == "field 'notes' is not in the canonical envelope schema"
                && e.line == line_of(&text, "notes:")
        ),
        "{e:?}"
    );
}

#[test]
fn allowlist_names_unknown_field() {
    let text = mutate(
        "allow: [event_type, policy_version, purpose]",
        "allow: [event_type, policy_version, purpose, ssn]",
    );
    let e = errors_of(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("allows field 'ssn'"));
    assert_eq!(e[0].line, line_of(&text, "purpose, ssn]"));
}

#[test]
fn purpose_with_unknown_destination_and_bad_code() {
    let text = mutate(
        "    consent_code: HMARKT\n    destination: crm-marketing\n",
        "    consent_code: hmarkt\n    destination: crm-spam\n",
    );
    let e = errors_of(&text);
    assert!(
        e.iter()
            .any(|e| e.message.contains("names destination 'crm-spam'")
                && e.fix.contains("crm-marketing")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|e| e
            .message
            .contains("'hmarkt', which is not a v3 ActReason code")),
        "{e:?}"
    );
    // The route stage no longer covers out.marketing's purpose? It still lists it; no error expected there.
}

#[test]
fn bad_enum_value_and_syntax() {
    let e = errors_of(&mutate(
        "profile: aggregate-only",
        "profile: aggregate-maybe",
    ));
    assert!(
        e[0].message.contains("unknown variant `aggregate-maybe`"),
        "{e:?}"
    );
    assert!(e[0].line > 0);
    let e = errors_of("version: 1\ntopics: [unclosed\n");
    assert!(e[0].line > 0, "{e:?}");
}

#[test]
fn wrong_version_and_shared_groups() {
    let text = mutate("version: 1\n", "version: 2\n").replacen(
        "consumer_group: consentry-tokenize",
        "consumer_group: consentry-route",
        1,
    );
    let e = errors_of(&text);
    assert!(
        e.iter()
            .any(|e| e.message == "unsupported format version 2" && e.line == 5),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|e| e.message.contains("share consumer group 'consentry-route'")),
        "{e:?}"
    );
}

#[test]
fn route_must_cover_every_destination() {
    let text = mutate(", out.marketing, disclosures]", ", disclosures]");
    let e = errors_of(&text);
    assert!(
        e.iter().any(|e| e.message.contains(
            "route does not write purpose 'marketing''s destination topic 'out.marketing'"
        )),
        "{e:?}"
    );
}

#[test]
fn field_paths_of_envelope() {
    let p = field_paths(SchemaRef::CanonicalEvent.schema());
    assert!(p.contains("demographics.family_name"));
    assert!(p.contains("codes.code"));
    assert!(p.contains("suppressed"));
    assert!(!p.contains("demographics"));
}

#[test]
fn retention_parsing() {
    assert_eq!(parse_retention("unlimited"), Some(Retention::Unlimited));
    assert_eq!(parse_retention("7d"), Some(Retention::Millis(604_800_000)));
    assert_eq!(parse_retention("30m"), Some(Retention::Millis(1_800_000)));
    assert_eq!(parse_retention("7w"), None);
    assert_eq!(parse_retention("d"), None);
    assert_eq!(parse_retention("0d"), None);
}

#[test]
fn source_topics_declare_their_format() {
    let text = mutate(
        "{ role: source, format: hl7v2, partitions: 3 }",
        "{ role: source, partitions: 3 }",
    );
    let e = errors_of(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0].message,
        "source topic 'ehr.hl7v2' does not say what it carries"
    );
    assert_eq!(e[0].line, line_of(&text, "ehr.hl7v2:"));
}

#[test]
fn no_allowlist_may_name_the_internal_subject_token_or_use_its_domain() {
    let text = mutate(
        "allow: [event_type, policy_version, purpose]",
        "allow: [event_type, policy_version, purpose, subject_token]",
    );
    let e = errors_of(&text);
    assert!(
        e.iter().any(|e| e
            .message
            .contains("'subject_token', which never leaves the boundary")),
        "{e:?}"
    );
    for reserved in ["subject", "quarantine"] {
        let text = mutate(
            "token_domain: analytics",
            &format!("token_domain: {reserved}"),
        );
        let e = errors_of(&text);
        assert!(
            e.iter().any(|e| e.message.contains("which is reserved")),
            "{reserved}: {e:?}"
        );
    }
}

#[test]
fn the_disclosure_ledger_keeps_everything() {
    let text = mutate(
        "disclosures:          { role: disclosures, partitions: 3, retention: unlimited,",
        "disclosures:          { role: disclosures, partitions: 3, retention: 30d,",
    );
    assert!(!errors_of(&text).is_empty());
}

#[test]
fn the_consent_table_is_written_by_the_ledger_and_read_by_gate_and_route() {
    // The gate without the table it decides on.
    let text = mutate(
        "    ledger: ledger.consent-gate\n    reads: consent.state\n",
        "    ledger: ledger.consent-gate\n",
    );
    let e = errors_of(&text);
    assert!(
        e.iter()
            .any(|e| e.message
                == "stage 'consent-gate' does not read the consent table it decides on"),
        "{e:?}"
    );
    // tokenize, whose vault caches a consent change invalidates.
    let text = mutate(
        "    ledger: ledger.tokenize\n    # A consent change drops the subject's cached vault answers (after a\n    # shred, no token the vault no longer holds is handed out).\n    reads: consent.state\n",
        "    ledger: ledger.tokenize\n",
    );
    assert!(
        errors_of(&text).iter().any(|e| {
            e.message
            == "stage 'tokenize' does not read the consent table it invalidates its vault caches by"
        }),
        "tokenize without the consent table"
    );
    // The ledger writing an ordinary state table.
    let text = mutate(
        "    state: consent.state\n",
        "    state: normalize.patient-index\n",
    );
    let e = errors_of(&text);
    assert!(
        e.iter()
            .any(|e| e.message.contains("consent-gate does not read the table")),
        "{e:?}"
    );
    // consent_basis is internal, like the pseudonym.
    let text = mutate(
        "allow: [event_type, policy_version, purpose]",
        "allow: [event_type, policy_version, purpose, consent_basis]",
    );
    assert!(errors_of(&text).iter().any(|e| e
        .message
        .contains("'consent_basis', which never leaves the boundary")));
    // An unknown on_missing_consent is refused by name.
    let text = mutate("on_missing_consent: notify", "on_missing_consent: allow");
    assert!(Topology::parse("t.yaml", &text).is_err());
}
