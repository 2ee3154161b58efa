//! The validation pass: from the raw structs to a `Topology`, checking every
//! cross-reference and collecting every problem with its line. Topics,
//! fields, destinations, identity and normalize's settings are checked
//! here; purposes and stages, the two largest, in their own files.

use std::collections::BTreeMap;

use super::error::{TopologyError, TopologyErrors};
use super::model::*;
use super::paths::{field_paths, valid_fhir_path, valid_hl7_path};
use super::raw::{self, PathIndex};
use crate::avro::SchemaRef;

mod purposes;
mod stages;

pub(super) struct Validator<'a> {
    pub(super) file: &'a str,
    pub(super) index: &'a PathIndex,
    pub(super) errors: Vec<TopologyError>,
}

impl Validator<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        let (line, column) = self.index.locate(path);
        self.errors.push(TopologyError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
            fix: fix.into(),
        });
    }

    pub(super) fn validate(mut self, raw: raw::Topology) -> Result<Topology, TopologyErrors> {
        if raw.version != 1 {
            self.error(
                "version",
                format!("unsupported format version {}", raw.version),
                "set `version: 1`; this build reads format version 1",
            );
        }
        if raw.policy_version.trim().is_empty() {
            self.error(
                "policy_version",
                "policy_version is empty",
                "set a policy version such as \"2026.11.1\"",
            );
        }

        let topics = self.topics(&raw.topics);
        let audit_topic = self.single_role(&topics, TopicRole::Audit, "audit");
        let audit_heads_topic = self.single_role(&topics, TopicRole::AuditHeads, "audit-heads");
        let quarantine_topic = self.single_role(&topics, TopicRole::Quarantine, "quarantine");
        let disclosure_topic = self.single_role(&topics, TopicRole::Disclosures, "disclosures");
        let fields = self.fields(&raw.fields);
        let destinations = self.destinations(&raw.destinations, &topics);
        let purposes = self.purposes(&raw.purposes, &destinations, &fields);
        let stages = self.stages(&raw.stages, &topics, &purposes);
        let identity = self.identity(raw.identity);
        let normalize = self.normalize(raw.normalize);

        if self.errors.is_empty() {
            Ok(Topology {
                policy_version: raw.policy_version,
                topics,
                stages,
                destinations,
                purposes,
                identity,
                fields,
                normalize,
                audit_topic: audit_topic.unwrap_or_default(),
                audit_heads_topic: audit_heads_topic.unwrap_or_default(),
                quarantine_topic: quarantine_topic.unwrap_or_default(),
                disclosure_topic: disclosure_topic.unwrap_or_default(),
            })
        } else {
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(TopologyErrors {
                errors: self.errors,
            })
        }
    }

    fn topics(&mut self, raw: &BTreeMap<String, raw::Topic>) -> BTreeMap<String, TopicSpec> {
        let mut out = BTreeMap::new();
        for (name, t) in raw {
            let path = format!("topics.{name}");
            if !valid_topic_name(name) {
                self.error(
                    &path,
                    format!("topic name '{name}' is not a valid Kafka topic name"),
                    "use only letters, digits, '.', '_' and '-' (at most 200 characters)",
                );
            }
            if !(1..=1000).contains(&t.partitions) {
                self.error(
                    &format!("{path}.partitions"),
                    format!("topic '{name}' has {} partitions", t.partitions),
                    "set partitions between 1 and 1000",
                );
            }
            let retention = match t.retention.as_deref() {
                None => Retention::Default,
                Some(r) => match parse_retention(r) {
                    Some(r) => r,
                    None => {
                        self.error(
                            &format!("{path}.retention"),
                            format!("topic '{name}' has an unreadable retention '{r}'"),
                            "write `unlimited` or a duration such as `7d`, `12h`, `30m`",
                        );
                        Retention::Default
                    }
                },
            };
            let schema = match t.schema.as_deref() {
                None => None,
                Some(s) => match SchemaRef::from_name(s) {
                    Some(s) => Some(s),
                    None => {
                        let known: Vec<_> = SchemaRef::ALL.iter().map(|s| s.name()).collect();
                        self.error(
                            &format!("{path}.schema"),
                            format!("topic '{name}' names schema '{s}', which is not in schemas/"),
                            format!("use one of: {}", known.join(", ")),
                        );
                        None
                    }
                },
            };
            let expect_schema = match t.role {
                // FHIR Consent JSON and Avro ConsentEvents side by side.
                TopicRole::ConsentEvents => Some(SchemaRef::ConsentEvent),
                TopicRole::Source
                | TopicRole::ConsentState
                | TopicRole::Quarantine
                | TopicRole::Ledger
                | TopicRole::AuditHeads
                | TopicRole::State => None,
                TopicRole::Internal => Some(SchemaRef::CanonicalEvent),
                TopicRole::Destination => Some(SchemaRef::Destination),
                TopicRole::Disclosures => Some(SchemaRef::Disclosure),
                TopicRole::Audit => Some(SchemaRef::AuditRecord),
            };
            if t.schema.is_some() && schema.is_some() && schema != expect_schema
                || t.schema.is_none() && expect_schema.is_some()
            {
                let want = expect_schema
                    .map(|s| format!("`schema: {}`", s.name()))
                    .unwrap_or_else(|| "no `schema` key (raw bytes)".into());
                self.error(
                    &format!("{path}.schema"),
                    format!("topic '{name}' with role {:?} has the wrong schema", t.role),
                    format!("give it {want}"),
                );
            }
            let wants_format = matches!(t.role, TopicRole::Source | TopicRole::ConsentEvents);
            if wants_format && t.format.is_none() {
                self.error(
                    &path,
                    format!("source topic '{name}' does not say what it carries"),
                    "add `format: hl7v2` or `format: fhir-json`",
                );
            } else if !wants_format && t.format.is_some() {
                self.error(
                    &format!("{path}.format"),
                    format!("topic '{name}' has a `format`, but only source and consent-event topics carry raw feeds"),
                    "remove `format`",
                );
            }
            if matches!(
                t.role,
                TopicRole::ConsentState
                    | TopicRole::Ledger
                    | TopicRole::State
                    | TopicRole::AuditHeads
            ) && t.cleanup != Cleanup::Compact
            {
                self.error(
                    &format!("{path}.cleanup"),
                    format!(
                        "topic '{name}' is a table (role {:?}) but is not compacted",
                        t.role
                    ),
                    "set `cleanup: compact`",
                );
            }
            if matches!(t.role, TopicRole::Audit | TopicRole::Disclosures)
                && retention != Retention::Unlimited
            {
                self.error(
                    &format!("{path}.retention"),
                    format!(
                        "{} topic '{name}' must keep its records forever",
                        if t.role == TopicRole::Audit {
                            "audit"
                        } else {
                            "disclosure-ledger"
                        }
                    ),
                    "set `retention: unlimited`",
                );
            }
            out.insert(
                name.clone(),
                TopicSpec {
                    name: name.clone(),
                    role: t.role,
                    partitions: t.partitions,
                    cleanup: t.cleanup,
                    retention,
                    schema,
                    format: t.format,
                },
            );
        }
        out
    }

    fn single_role(
        &mut self,
        topics: &BTreeMap<String, TopicSpec>,
        role: TopicRole,
        word: &str,
    ) -> Option<String> {
        let found: Vec<_> = topics
            .values()
            .filter(|t| t.role == role)
            .map(|t| t.name.clone())
            .collect();
        match found.len() {
            1 => found.into_iter().next(),
            0 => {
                self.error(
                    "topics",
                    format!("no topic has `role: {word}`"),
                    format!("add one topic with `role: {word}`"),
                );
                None
            }
            _ => {
                self.error(
                    &format!("topics.{}", found[1]),
                    format!(
                        "more than one topic has `role: {word}`: {}",
                        found.join(", ")
                    ),
                    format!("keep exactly one topic with `role: {word}`"),
                );
                None
            }
        }
    }

    fn fields(&mut self, raw: &BTreeMap<String, FieldClass>) -> BTreeMap<String, FieldClass> {
        let schema_paths = field_paths(SchemaRef::CanonicalEvent.schema());
        for p in &schema_paths {
            if !raw.contains_key(p) {
                self.error(
                    "fields",
                    format!("envelope field '{p}' has no disclosure class"),
                    format!("add `{p}: <operational|limited|phi-restricted|highly-restricted>` under `fields:`"),
                );
            }
        }
        for p in raw.keys() {
            if !schema_paths.contains(p) {
                self.error(
                    &format!("fields.{p}"),
                    format!("field '{p}' is not in the canonical envelope schema"),
                    "remove it or correct the path (nested fields are written `parent.child`)",
                );
            }
        }
        raw.clone()
    }

    fn destinations(
        &mut self,
        raw: &BTreeMap<String, raw::Destination>,
        topics: &BTreeMap<String, TopicSpec>,
    ) -> BTreeMap<String, Destination> {
        let mut out = BTreeMap::new();
        for (name, d) in raw {
            match topics.get(&d.topic) {
                None => self.error(
                    &format!("destinations.{name}.topic"),
                    format!(
                        "destination '{name}' writes to topic '{}', which is not defined",
                        d.topic
                    ),
                    "add the topic under `topics:` with `role: destination`, or correct the name",
                ),
                Some(t) if t.role != TopicRole::Destination => self.error(
                    &format!("destinations.{name}.topic"),
                    format!(
                        "destination '{name}' writes to topic '{}', whose role is {:?}",
                        d.topic, t.role
                    ),
                    "point it at a topic with `role: destination`",
                ),
                Some(_) => {}
            }
            out.insert(
                name.clone(),
                Destination {
                    name: name.clone(),
                    topic: d.topic.clone(),
                    system: d.system.clone(),
                },
            );
        }
        out
    }

    fn identity(&mut self, raw: raw::Identity) -> Identity {
        if raw.subject_system.trim().is_empty() {
            self.error(
                "identity.subject_system",
                "identity.subject_system is empty",
                "set the identifier system of the subject (the MRN system)",
            );
        }
        if !raw
            .hl7_authorities
            .values()
            .any(|s| s == &raw.subject_system)
        {
            self.error(
                "identity.hl7_authorities",
                "no HL7 assigning authority maps to identity.subject_system",
                "map the MRN's PID-3.4 assigning authority to the subject system",
            );
        }
        Identity {
            subject_system: raw.subject_system,
            hl7_authorities: raw.hl7_authorities,
        }
    }
}

impl Validator<'_> {
    fn normalize(&mut self, raw: raw::Normalize) -> NormalizeSpec {
        let mut spec = NormalizeSpec::default();
        for (i, p) in raw.allow_extra_paths.hl7v2.iter().enumerate() {
            if valid_hl7_path(p) {
                spec.allow_hl7v2.insert(p.clone());
            } else {
                self.error(
                    &format!("normalize.allow_extra_paths.hl7v2[{i}]"),
                    format!("'{p}' is not an HL7 v2 segment or field path"),
                    "write a segment id (`ZPD`) or a segment and field number (`PID-40`)",
                );
            }
        }
        for (i, p) in raw.allow_extra_paths.fhir.iter().enumerate() {
            if valid_fhir_path(p) {
                spec.allow_fhir.insert(p.clone());
            } else {
                self.error(
                    &format!("normalize.allow_extra_paths.fhir[{i}]"),
                    format!("'{p}' is not a FHIR element path"),
                    "write `Resource.element.child`, with `extension(<url>)` for an extension, e.g. `Patient.extension(http://example.org/fhir/vip)`",
                );
            }
        }
        if let Some(b) = raw.unresolved_hold_bytes {
            match usize::try_from(b) {
                Ok(b) if b <= 1 << 34 => spec.unresolved_hold_bytes = b,
                _ => self.error(
                    "normalize.unresolved_hold_bytes",
                    format!("unresolved_hold_bytes {b} is more than 16 GiB"),
                    "set a number of bytes up to 17179869184, or 0 to hold nothing",
                ),
            }
        }
        spec
    }
}

/// A token domain as `tok:<domain>:...` accepts it (the same rule as
/// `consentry_crypto::token::check_domain`, which this crate cannot use).
pub(super) fn valid_token_domain(d: &str) -> bool {
    let b = d.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(super) fn parse_retention(s: &str) -> Option<Retention> {
    if s == "unlimited" {
        return Some(Retention::Unlimited);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|v| *v > 0).map(Retention::Millis)
}
