//! The consent ledger turns any bytes on consent.events (FHIR JSON, or an
//! Avro capture behind the wire format's magic byte) into outcomes, never a
//! panic: several records sharing a table, and whatever bytes a corrupted
//! table might hold. The gate then decides on that table without panicking.
#![no_main]
use consentry_core::stage::{apply_writes, Body, InputMeta, Stage, StageInput};
use consentry_core::CanonicalEvent;
use consentry_crypto::token::VaultRefusal;
use consentry_crypto::{Environment, KeyRing, TokenVault, VaultUnavailable};
use consentry_stages::consent_gate::ConsentGate;
use consentry_stages::consent_ledger::ConsentLedger;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

struct NoVault;

impl TokenVault for NoVault {
    fn subject_token(&self, _: &str, _: &str, _: &[u8]) -> Result<String, VaultRefusal> {
        Err(VaultUnavailable("fuzz".into()).into())
    }
    fn register(&self, _: &str, _: &str, _: &str, _: &[u8]) -> Result<(), VaultRefusal> {
        Ok(())
    }
    fn shred(&self, _: &str, _: &str) -> Result<usize, VaultUnavailable> {
        Ok(0)
    }
    fn reinstate(&self, _: &str, _: &str) -> Result<(), VaultUnavailable> {
        Ok(())
    }
}

fn stages() -> &'static (ConsentLedger, ConsentGate) {
    static S: OnceLock<(ConsentLedger, ConsentGate)> = OnceLock::new();
    S.get_or_init(|| {
        let t = consentry_core::topology::shipped::topology();
        let ring = KeyRing::from_key(Environment::NonProduction, [9; 32]);
        let ledger = ConsentLedger::new(&t, Some(&ring), Some(Arc::new(NoVault))).expect("ledger");
        let gate = ConsentGate::new(&t, Some(&ring)).expect("gate");
        (ledger, gate)
    })
}

fuzz_target!(|data: &[u8]| {
    let (ledger, gate) = stages();
    let mut table: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let chunks: Vec<&[u8]> = data.split(|b| *b == 0xfe).take(8).collect();
    // The last chunk also lands in the table as a corrupted entry.
    if let Some(last) = chunks.last() {
        table.insert("consent/tok:subject:v1:x/HRESCH/*".into(), last.to_vec());
    }
    for (i, c) in chunks.iter().enumerate() {
        let input = StageInput {
            meta: InputMeta { topic: "consent.events".into(), offset: i as i64, now_ms: 1, ..Default::default() },
            body: Body::Raw(c.to_vec()),
        };
        for o in ledger.process(&input, &table) {
            apply_writes(&mut table, &o.state);
        }
    }
    let ev = CanonicalEvent { subject_key: "x".into(), event_type: "fhir:Observation".into(), ..Default::default() };
    let input = StageInput {
        meta: InputMeta { idempotency_key: Some("k".into()), ..Default::default() },
        body: Body::Event(Box::new(ev)),
    };
    let _ = gate.process(&input, &table);
});
