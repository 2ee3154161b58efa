//! `StageInput` builders for tests, benches and fuzz targets (feature
//! `test-support`): a raw record on a topic, and a stage's output handed on
//! as the next stage's input.

use super::{Body, InputMeta, Output, StageInput};

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

/// An earlier stage's output as the input of the stage reading its topic.
pub fn from_output(o: &Output) -> StageInput {
    StageInput {
        meta: meta(&o.topic, Some(o)),
        body: Body::Event(o.event.clone()),
    }
}
