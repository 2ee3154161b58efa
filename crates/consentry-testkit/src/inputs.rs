//! `StageInput` builders: a raw record on a source topic, a synthetic
//! feed's record on its feed's topic, and a stage output handed on as the
//! next stage's input.

use consentry_core::stage::{Body, InputMeta, Output, StageInput};
use consentry_synth::{Feed, SynthRecord};

/// The source topic a synthetic feed is published to.
pub fn feed_topic(feed: Feed) -> &'static str {
    match feed {
        Feed::Hl7v2 => "ehr.hl7v2",
        Feed::Fhir => "ehr.fhir",
        Feed::Consent => "consent.events",
    }
}

/// Input metadata for a record on `topic` (partition 0, offset 0), carrying
/// the key and identity of `o` when it is an earlier stage's output.
pub fn meta(topic: &str, o: Option<&Output>) -> InputMeta {
    InputMeta {
        topic: topic.into(),
        partition: 0,
        offset: 0,
        key: o.map(|o| o.key.to_string()),
        idempotency_key: o.map(|o| o.idempotency_key.to_string()),
        correlation_id: o.map(|o| o.correlation_id.to_string()),
        ..Default::default()
    }
}

/// A raw payload on `topic`, with `key`.
pub fn raw(topic: &str, key: Option<&str>, payload: &[u8]) -> StageInput {
    StageInput {
        meta: InputMeta {
            topic: topic.into(),
            key: key.map(String::from),
            ..Default::default()
        },
        body: Body::Raw(payload.to_vec()),
    }
}

/// A synthetic record on its feed's source topic, under its own key.
pub fn synth(r: &SynthRecord) -> StageInput {
    raw(feed_topic(r.feed), Some(&r.key), &r.payload)
}

/// An earlier stage's output as the input of the stage reading its topic.
pub fn from_output(o: &Output) -> StageInput {
    StageInput {
        meta: meta(&o.topic, Some(o)),
        body: Body::Event(o.event.clone()),
    }
}
