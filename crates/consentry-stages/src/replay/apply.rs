//! What `replay apply` writes besides route's own records: the replay's
//! id and the retraction notice. Pure; the command writes them.

use consentry_core::disclosure::Disclosure;
use consentry_core::envelope::{retain_fields, CanonicalEvent, Text};
use consentry_core::keys;
use consentry_core::stage::Output;
use std::collections::BTreeSet;

/// The event type of a retraction notice.
pub const RECORD_RETRACTED: &str = "record:retracted";

/// The writer name replay's keys and audit records use.
pub const WRITER: &str = "replay";

/// The idempotency key under which replay writes route's record
/// (`route_key`, as route would write it under `policy_version`) in place
/// of `supersedes`: never a key route itself writes (a destination that
/// holds a record under route's key would drop the write as a duplicate),
/// and one per superseded record, so a policy changed back and forth
/// writes anew each time rather than finding its earlier write done.
pub fn write_key(policy_version: &str, route_key: &str, supersedes: Option<&str>) -> Text {
    keys::idempotency_key(
        WRITER,
        policy_version,
        &format!("{route_key}/{}", supersedes.unwrap_or("")),
        Some("record"),
    )
}

/// A replay's id: the same for the same change (both versions, the new
/// policy's bytes) over the same selection, so the same command run again
/// continues the same replay and its idempotency keys.
pub fn replay_id(before: &str, after: &str, policy: &[u8], selection: &str) -> String {
    let mut d = keys::ContentDigest::new();
    for part in [
        before.as_bytes(),
        after.as_bytes(),
        policy,
        selection.as_bytes(),
    ] {
        d.update(&(part.len() as u64).to_be_bytes());
        d.update(part);
    }
    format!("rp1-{}", hex::encode(&d.finish()[..8]))
}

/// The notice that tells a destination a record it holds (`supersedes`,
/// whose record it received under `record_key` with `correlation_id`) is
/// no longer sent under `policy_version`. Ids only: the notice names the
/// record (its `supersedes` header is the record's idempotency key) and
/// the subject as the destination knows them, within `allow`.
pub fn retraction_notice(
    supersedes: &Disclosure,
    record_key: &str,
    correlation_id: &str,
    policy_version: &str,
    allow: &BTreeSet<String>,
) -> Output {
    let idempotency_key = keys::idempotency_key(
        WRITER,
        policy_version,
        &supersedes.disclosure_id,
        Some(RECORD_RETRACTED),
    );
    let notice = CanonicalEvent {
        event_id: idempotency_key.clone(),
        event_type: Text::const_new(RECORD_RETRACTED),
        correlation_id: correlation_id.into(),
        policy_version: policy_version.into(),
        purpose: Some(supersedes.purpose.clone()),
        subject_key: supersedes.subject_reference.clone().unwrap_or_default(),
        ..Default::default()
    };
    let (notice, _) = retain_fields(&notice, |p| allow.contains(p));
    Output {
        topic: supersedes.topic.clone(),
        key: record_key.into(),
        idempotency_key,
        correlation_id: correlation_id.into(),
        event: Box::new(notice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_id_names_one_change_over_one_selection() {
        let id = replay_id("v1", "v2", b"policy", "all");
        assert!(id.starts_with("rp1-") && id.len() == 20, "{id}");
        assert_eq!(id, replay_id("v1", "v2", b"policy", "all"));
        for other in [
            replay_id("v0", "v2", b"policy", "all"),
            replay_id("v1", "v3", b"policy", "all"),
            replay_id("v1", "v2", b"policy2", "all"),
            replay_id("v1", "v2", b"policy", "purpose=a"),
            // Parts are length-prefixed: moving a boundary changes the id.
            replay_id("v1v", "2", b"policy", "all"),
        ] {
            assert_ne!(id, other);
        }
    }

    #[test]
    fn a_write_key_is_never_route_s_and_differs_per_superseded_record() {
        let route = "ik1-route";
        let first = write_key("v2", route, Some("ik1-old"));
        assert_ne!(first, route);
        assert_eq!(first, write_key("v2", route, Some("ik1-old")));
        for other in [
            write_key("v2", route, Some("ik1-retraction")),
            write_key("v2", route, None),
            write_key("v3", route, Some("ik1-old")),
            write_key("v2", "ik1-other", Some("ik1-old")),
        ] {
            assert_ne!(first, other);
        }
    }

    #[test]
    fn a_retraction_names_the_record_and_carries_no_value() {
        let d = Disclosure {
            disclosure_id: "ik1-old".into(),
            purpose: "analytics".into(),
            topic: "out.analytics".into(),
            subject_reference: Some("tok:analytics:1:abc".into()),
            correlation_id: "internal-corr".into(),
            event_type: "ADT^A01".into(),
            ..Default::default()
        };
        let allow: BTreeSet<String> = ["event_id", "event_type", "subject_key", "correlation_id"]
            .map(String::from)
            .into();
        let n = retraction_notice(&d, "k", "dest-corr", "v2", &allow);
        assert_eq!(n.topic, "out.analytics");
        assert_eq!(n.event.event_type, RECORD_RETRACTED);
        assert_eq!(n.event.subject_key, "tok:analytics:1:abc");
        assert_eq!(n.event.correlation_id, "dest-corr");
        assert_eq!(n.event.event_id, n.idempotency_key);
        // Not allowed: not carried (the policy version, the purpose).
        assert!(n.event.purpose.is_none() && n.event.policy_version.is_empty());
        // Deterministic, and per superseded record.
        assert_eq!(
            n.idempotency_key,
            retraction_notice(&d, "k", "dest-corr", "v2", &allow).idempotency_key
        );
        let other = Disclosure {
            disclosure_id: "ik1-other".into(),
            ..d.clone()
        };
        assert_ne!(
            n.idempotency_key,
            retraction_notice(&other, "k", "dest-corr", "v2", &allow).idempotency_key
        );
    }
}
