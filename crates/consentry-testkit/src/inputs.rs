//! `StageInput` builders: core's (a raw record on a topic, a stage output
//! handed on as the next stage's input) and a synthetic feed's record on
//! its feed's topic.

pub use consentry_core::stage::testing::{from_output, meta, raw};
use consentry_core::stage::StageInput;
use consentry_synth::{Feed, SynthRecord};

/// The source topic a synthetic feed is published to.
pub fn feed_topic(feed: Feed) -> &'static str {
    match feed {
        Feed::Hl7v2 => "ehr.hl7v2",
        Feed::Fhir => "ehr.fhir",
        Feed::Consent => "consent.events",
    }
}

/// A synthetic record on its feed's source topic, under its own key.
pub fn synth(r: &SynthRecord) -> StageInput {
    raw(feed_topic(r.feed), Some(&r.key), &r.payload)
}
