//! In-process throughput of the pure stages and the Avro codec, one core.
//! `make bench` prints records/s per benchmark from these.

use consentry_core::avro::{decode_event, encode_event, split_wire, SchemaRef};
use consentry_core::stage::{Body, InputMeta, NoState, Stage, StageInput};
use consentry_core::topology::Topology;
use consentry_stages::deidentify::scrub::Known;
use consentry_stages::deidentify::DeIdentify;
use consentry_stages::normalize::Normalize;
use consentry_stages::tokenize::Tokenize;
use consentry_synth::{fhir_encounter, fhir_patient, hl7_adt, patients, SynthConfig};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

/// The allocator the `consentry` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn input(topic: &str, body: Body) -> StageInput {
    StageInput {
        meta: InputMeta {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            key: None,
            idempotency_key: Some("ik1-bench".into()),
            correlation_id: None,
            ..Default::default()
        },
        body,
    }
}

fn benches(c: &mut Criterion) {
    let topology = Topology::load(std::path::Path::new("topology.yaml")).expect("topology.yaml");
    let cfg = SynthConfig::new(1, 1);
    let p = &patients(&cfg)[0];
    let adt = input(
        "ehr.hl7v2",
        Body::Raw(hl7_adt(&cfg, p, "A01", 0).into_bytes()),
    );
    let fhir_p = input(
        "ehr.fhir",
        Body::Raw(fhir_patient(&cfg, p).to_string().into_bytes()),
    );
    let fhir_e = input(
        "ehr.fhir",
        Body::Raw(fhir_encounter(&cfg, p).to_string().into_bytes()),
    );
    // A collection Bundle as an EHR sends a new admission: the Patient and
    // its Encounter, the Encounter pointing at the Patient by urn:uuid.
    let mut encounter = fhir_encounter(&cfg, p);
    encounter["subject"] =
        serde_json::json!({"reference": "urn:uuid:9b1f0e0c-5c7a-4d4e-9d55-000000000001"});
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "id": "b1", "meta": {"versionId": "1"}, "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:9b1f0e0c-5c7a-4d4e-9d55-000000000001", "resource": fhir_patient(&cfg, p)},
            {"fullUrl": "urn:uuid:9b1f0e0c-5c7a-4d4e-9d55-000000000002", "resource": encounter}
        ]
    });
    let fhir_bundle = input("ehr.fhir", Body::Raw(bundle.to_string().into_bytes()));
    let normalize = Normalize::new(&topology);
    let outcomes = normalize.process(&adt, &NoState);
    let event = outcomes[0].outputs[0].event.clone();
    let bundle_events = normalize.process(&fhir_bundle, &NoState);
    assert!(
        bundle_events.len() == 2 && bundle_events.iter().all(|o| o.quarantine.is_none()),
        "the bundle normalizes to two events"
    );
    let ring = Arc::new(consentry_crypto::KeyRing::from_key(
        consentry_crypto::Environment::NonProduction,
        [7; 32],
    ));
    let deid = DeIdentify::new(&topology, Some(&ring)).expect("de-identify builds");
    let for_purpose = |topic: &str, purpose: &str, ev: &consentry_core::CanonicalEvent| {
        let mut ev = ev.clone();
        ev.purpose = Some(purpose.into());
        input(topic, Body::Event(Box::new(ev)))
    };
    let wire = encode_event(&event, 1).expect("encodes");

    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Elements(1));
    g.bench_function("normalize_adt_a01", |b| {
        b.iter(|| black_box(normalize.process(black_box(&adt), &NoState)))
    });
    g.bench_function("normalize_fhir_patient", |b| {
        b.iter(|| black_box(normalize.process(black_box(&fhir_p), &NoState)))
    });
    g.bench_function("normalize_fhir_encounter", |b| {
        b.iter(|| black_box(normalize.process(black_box(&fhir_e), &NoState)))
    });
    // One record (the Bundle), two events.
    g.bench_function("normalize_fhir_bundle_patient_encounter", |b| {
        b.iter(|| black_box(normalize.process(black_box(&fhir_bundle), &NoState)))
    });
    // de-identify, one (event, purpose) record per profile (the ADT A01
    // event: demographics, encounter, next of kin, diagnosis, note).
    for (name, purpose) in [
        ("deidentify_safe_harbor_shift", "trial-recruitment"),
        ("deidentify_safe_harbor_scrub_text", "outcomes-analytics"),
        ("deidentify_limited_data_set", "registry-research"),
        ("deidentify_identified_tokenized", "patient-support"),
        ("deidentify_aggregate_only", "marketing"),
    ] {
        let gated = for_purpose("events.gated", purpose, &event);
        assert!(deid.process(&gated, &NoState)[0].quarantine.is_none());
        g.bench_function(name, |b| {
            b.iter(|| black_box(deid.process(black_box(&gated), &NoState)))
        });
    }
    // tokenize, with the real vault on the embedded store (its answers are
    // cached per process after the first record of a subject).
    let dir = std::env::temp_dir().join(format!("consentry-bench-vault-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let open_vault = |file: &str| {
        let store = consentry_vault::FileStore::open(&dir.join(file)).expect("vault store");
        consentry_vault::Vault::new(
            &ring,
            consentry_crypto::Environment::NonProduction,
            Box::new(store),
        )
        .expect("vault")
    };
    let tokenize = Tokenize::new(
        &topology,
        Some(&ring),
        Some(Arc::new(open_vault("tokenize.redb"))),
    )
    .expect("tokenize builds");
    let deidentified = |purpose: &str| {
        let o = deid.process(&for_purpose("events.gated", purpose, &event), &NoState);
        (*o[0].outputs[0].event).clone()
    };
    // Three tokens per record: the subject and two identifiers.
    let mut three = deidentified("patient-support");
    three.identifiers.truncate(2);
    three.demographics = None;
    three.contacts.clear();
    for (name, ev) in [
        ("tokenize_deterministic_3_tokens", three),
        (
            "tokenize_identified_tokenized_full",
            deidentified("patient-support"),
        ),
        (
            "tokenize_limited_data_set",
            deidentified("registry-research"),
        ),
        (
            "tokenize_safe_harbor_random",
            deidentified("trial-recruitment"),
        ),
    ] {
        let rec = input("events.deidentified", Body::Event(Box::new(ev)));
        assert!(tokenize.process(&rec, &NoState)[0].quarantine.is_none());
        g.bench_function(name, |b| {
            b.iter(|| black_box(tokenize.process(black_box(&rec), &NoState)))
        });
    }
    // The token core: three deterministic tokens, keys derived once beforehand.
    let tokenizer = consentry_crypto::Tokenizer::new(&ring, "crm").expect("tokenizer");
    let ids: Vec<(String, String)> = event
        .identifiers
        .iter()
        .take(3)
        .map(|i| (i.system.to_string(), i.value.to_string()))
        .collect();
    assert_eq!(
        ids.len(),
        3,
        "the benchmark event carries three identifiers"
    );
    g.bench_function("tokens_deterministic_x3", |b| {
        b.iter(|| {
            for (system, value) in &ids {
                black_box(tokenizer.deterministic(black_box(system), black_box(value)));
            }
        })
    });
    g.bench_function("avro_encode_event", |b| {
        b.iter(|| black_box(encode_event(black_box(&event), 1)))
    });
    g.bench_function("avro_decode_event", |b| {
        b.iter(|| {
            let (_, body) = split_wire(black_box(&wire)).expect("framed");
            black_box(decode_event(body, SchemaRef::CanonicalEvent.schema()))
        })
    });
    // Free-text scrubbing of the synthetic note (every shaped identifier
    // kind), with the record's own values.
    let scrubber = consentry_stages::deidentify::scrub::Scrubber::new();
    let note = event.note.clone().unwrap_or_default();
    let known: Vec<Known<'_>> = event
        .demographics
        .iter()
        .flat_map(|d| {
            [
                d.family_name.as_deref().map(Known::name),
                d.given_name.as_deref().map(Known::name),
                d.city.as_deref().map(Known::value),
            ]
        })
        .flatten()
        .collect();
    g.bench_function("scrub_note", |b| {
        b.iter(|| black_box(scrubber.scrub(black_box(&note), &known)))
    });
    // Vault resolve on the embedded file store (open the subject's wrapped
    // key, open the sealed identity).
    let vault = open_vault("vault.redb");
    let token = vault
        .issue("trial", &event.subject_key, b"MRN-BENCH-0001", 0)
        .expect("issues");
    g.bench_function("vault_resolve_file_store", |b| {
        b.iter(|| black_box(vault.resolve(black_box(&token)).expect("resolves")))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(name = stages; config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1)); targets = benches);
criterion_main!(stages);
