//! The consent feed the consent tests share: patients' MRNs, Avro consent
//! captures framed with the registry's id, minimal ADT messages, and
//! publishing in order.

use crate::Env;
use consentry_core::avro;
use consentry_core::consent::ConsentEvent;
use consentry_runtime::registry::RegistryClient;

pub const SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.7777.1";

pub fn mrn(i: usize) -> String {
    format!("CS{:07}", 3_000_000 + i)
}

/// An Avro capture, framed with the registry's id for consent.events.
pub fn capture(env: &Env, mrn: &str, purpose: &str, state: &str, version: i64) -> Vec<u8> {
    let id = RegistryClient::new(&env.conn.registry_url)
        .lookup(
            &env.conn.subject("consent.events"),
            avro::SchemaRef::ConsentEvent.source(),
        )
        .expect("consent_event registered by topics apply");
    let c = ConsentEvent {
        consent_id: format!("portal-{mrn}-{purpose}"),
        subject_system: SYSTEM.into(),
        subject_value: mrn.into(),
        purpose: purpose.into(),
        channel: "*".into(),
        state: state.into(),
        version,
        effective_ms: 1_790_000_000_000,
        expires_ms: None,
        source: "portal".into(),
        captured_by: Some("role:registration".into()),
        notice_version: Some("np-2026-1".into()),
    };
    avro::encode_consent_event(&c, id).expect("encodes")
}

/// A minimal ADT^A08 for a patient, with its own message id.
pub fn adt(mrn: &str, id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|CSEHR|CSHOSP|CONSENTRY|CS|20261001120000||ADT^A08^ADT_A01|{id}|P|2.5\r\
         EVN|A08|20261001120000\r\
         PID|1||{mrn}^^^CSHOSP^MR||Testperson^Alex||19800101|F\r\
         PV1|1|I\r"
    )
    .into_bytes()
}

/// Publishes payloads to one partition, in order (one key).
pub fn publish_all(env: &Env, topic: &str, payloads: &[Vec<u8>]) {
    let records: Vec<(Option<&str>, &[u8])> =
        payloads.iter().map(|p| (Some("k"), p.as_slice())).collect();
    env.publish(topic, &records);
}

pub fn publish_burst(env: &Env, mrn: &str, tag: &str, n: usize) {
    let msgs: Vec<Vec<u8>> = (0..n).map(|i| adt(mrn, &format!("{tag}{i:04}"))).collect();
    publish_all(env, "ehr.hl7v2", &msgs);
}
