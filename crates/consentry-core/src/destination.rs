//! A destination's own Avro schema: the canonical envelope cut down to its
//! purpose's allowlist, registered under the destination topic's subject.
//!
//! The schema is the allowlist made binding: route writes every record with
//! it, and Avro encodes only the fields a schema has, so a field the
//! allowlist does not name cannot reach the topic even if a stage before
//! left it in. The schema also says what the records are: `consentry.phi`
//! (true for limited data sets and identified-tokenized records, which
//! remain PHI), the purpose, the destination and the profile, as
//! attributes and in its `doc`.

use crate::avro::SchemaRef;
use crate::topology::{Purpose, Topology};
use serde_json::{json, Map, Value};

/// `patient-support` → `PatientSupport`.
fn type_name(purpose: &str) -> String {
    purpose
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Keeps the fields of a record schema whose paths are allowed; a nested
/// record (or array or union of one) stays if any of its fields does.
fn prune(fields: &[Value], prefix: &str, allowed: &dyn Fn(&str) -> bool) -> Vec<Value> {
    fields
        .iter()
        .filter_map(|f| {
            let name = f.get("name")?.as_str()?;
            let path = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            };
            let mut f = f.clone();
            let ty = f.get_mut("type")?;
            if let Some(kept) = prune_type(ty, &path, allowed) {
                kept.then_some(f)
            } else {
                allowed(&path).then_some(f)
            }
        })
        .collect()
}

/// For a type that holds a record: prunes it in place and says whether
/// anything is left. `None` for a leaf type.
fn prune_type(ty: &mut Value, path: &str, allowed: &dyn Fn(&str) -> bool) -> Option<bool> {
    match ty {
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("record") => {
            let fields = o.get("fields")?.as_array()?.clone();
            let kept = prune(&fields, path, allowed);
            let any = !kept.is_empty();
            o.insert("fields".into(), Value::Array(kept));
            Some(any)
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("array") => {
            prune_type(o.get_mut("items")?, path, allowed)
        }
        Value::Array(variants) => {
            let mut result = None;
            for v in variants.iter_mut() {
                if let Some(k) = prune_type(v, path, allowed) {
                    result = Some(result.unwrap_or(false) || k);
                }
            }
            result
        }
        _ => None,
    }
}

/// The Avro schema text of `purpose`'s destination.
pub fn schema_text(topology: &Topology, purpose: &Purpose) -> String {
    let schema: Value = serde_json::from_str(SchemaRef::CanonicalEvent.source())
        .expect("shipped schema is JSON (unit-tested)");
    let fields = schema["fields"].as_array().cloned().unwrap_or_default();
    let allowed = |p: &str| purpose.allow.contains(p);
    let kept = prune(&fields, "", &allowed);
    let phi = purpose.profile.is_phi();
    let destination = topology
        .destinations
        .get(&purpose.destination)
        .map(|d| d.system.as_str())
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert("type".into(), json!("record"));
    out.insert(
        "name".into(),
        json!(format!("{}Record", type_name(&purpose.name))),
    );
    out.insert(
        "namespace".into(),
        json!(format!(
            "io.consentry.v1.destination.{}",
            purpose.name.replace('-', "_")
        )),
    );
    out.insert(
        "doc".into(),
        json!(format!(
            "Records for purpose '{}' ({}), destination '{}': {}. Only the fields of the purpose's allowlist. PHI: {}.",
            purpose.name,
            purpose.profile.as_str(),
            purpose.destination,
            destination,
            if phi {
                "yes; these records remain protected health information"
            } else {
                "no; de-identified"
            }
        )),
    );
    out.insert("consentry.phi".into(), json!(phi));
    out.insert("consentry.purpose".into(), json!(purpose.name));
    out.insert("consentry.profile".into(), json!(purpose.profile.as_str()));
    out.insert("consentry.destination".into(), json!(purpose.destination));
    out.insert("fields".into(), Value::Array(kept));
    serde_json::to_string_pretty(&Value::Object(out)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::field_paths;

    fn topology() -> Topology {
        crate::topology::shipped::topology()
    }

    #[test]
    fn each_destination_schema_has_exactly_its_allowlist_and_its_label() {
        let t = topology();
        for p in t.purposes.values() {
            let text = schema_text(&t, p);
            let schema = apache_avro::Schema::parse_str(&text).expect("parses");
            let paths = field_paths(&schema);
            let allowed: std::collections::BTreeSet<String> = p.allow.iter().cloned().collect();
            assert_eq!(paths, allowed, "purpose {}", p.name);
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["consentry.phi"], json!(p.profile.is_phi()), "{}", p.name);
            assert_eq!(v["consentry.purpose"], json!(p.name));
            assert!(!text.contains("subject_token"));
        }
        let ps = &t.purposes["patient-support"];
        assert!(schema_text(&t, ps).contains("PHI: yes"));
        assert!(schema_text(&t, &t.purposes["trial-recruitment"]).contains("PHI: no"));
    }

    #[test]
    fn an_event_written_with_it_carries_only_allowed_fields() {
        let t = topology();
        let p = &t.purposes["marketing"];
        let schema = apache_avro::Schema::parse_str(&schema_text(&t, p)).unwrap();
        let ev = crate::CanonicalEvent {
            event_id: "e1".into(),
            event_type: "ADT^A01".into(),
            subject_key: "0123456789abcdef".into(),
            subject_token: Some("tok:subject:v1:abc".into()),
            policy_version: "p1".into(),
            purpose: Some("marketing".into()),
            ..Default::default()
        };
        let wire = crate::avro::encode_event_as(&ev, &schema, 9).unwrap();
        let v = crate::avro::decode_generic(&wire[5..], &schema).unwrap();
        let apache_avro::types::Value::Record(fields) = v else {
            panic!("a record")
        };
        let names: Vec<_> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["event_type", "policy_version", "purpose"]);
        assert!(!wire.windows(16).any(|w| w == b"0123456789abcdef"));
        // Read back as an envelope: what the destination lacks is empty.
        let back = crate::avro::decode_event(&wire[5..], &schema).unwrap();
        assert_eq!(back.event_type, "ADT^A01");
        assert!(back.event_id.is_empty() && back.subject_token.is_none());
    }
}
