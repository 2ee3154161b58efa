//! Turns Kafka payloads into stage inputs and stage outputs into payloads,
//! using the Confluent wire format and the registry's schema ids. The
//! encoding itself is `consentry_core::avro`; this module adds the I/O
//! (looking up ids and writer schemas in the registry).

use apache_avro::Schema;
use consentry_core::avro::{self, SchemaRef, WireError};
use consentry_core::disclosure::Disclosure;
use consentry_core::stage::Body;
use consentry_core::topology::{TopicRole, Topology};
use consentry_core::{AuditRecord, CanonicalEvent, ReasonCode};
use std::collections::HashMap;

use crate::registry::{RegistryClient, RegistryError};
use crate::Connection;

/// Why an input could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record is at fault: quarantine it.
    #[error("{reason}: {detail}")]
    Record { reason: ReasonCode, detail: String },
    /// The registry is at fault: retry the batch later, lose nothing.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Writer schemas by id, fetched from the registry once each.
pub struct SchemaCache {
    registry: RegistryClient,
    by_id: HashMap<u32, Schema>,
}

impl SchemaCache {
    /// A cache over a registry without credentials (tests, tools).
    pub fn new(registry_url: &str) -> SchemaCache {
        SchemaCache {
            registry: RegistryClient::new(registry_url),
            by_id: HashMap::new(),
        }
    }

    /// A cache over the deployment's registry, with its CA and credentials.
    pub fn for_connection(conn: &Connection) -> Result<SchemaCache, RegistryError> {
        Ok(SchemaCache {
            registry: RegistryClient::for_connection(conn)?,
            by_id: HashMap::new(),
        })
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// The writer schema with `id`.
    pub fn writer(&mut self, id: u32) -> Result<&Schema, DecodeError> {
        if !self.by_id.contains_key(&id) {
            let text = self.registry.schema_by_id(id).map_err(|e| match e {
                RegistryError::Unexpected { status: 404, .. } => DecodeError::Record {
                    reason: ReasonCode::SchemaMismatch,
                    detail: format!("schema id {id} is not in the registry"),
                },
                e => DecodeError::Registry(e),
            })?;
            let schema = Schema::parse_str(&text).map_err(|_| DecodeError::Record {
                reason: ReasonCode::SchemaMismatch,
                detail: format!("schema id {id} does not parse"),
            })?;
            self.by_id.insert(id, schema);
        }
        self.by_id.get(&id).ok_or(DecodeError::Record {
            reason: ReasonCode::SchemaMismatch,
            detail: format!("schema id {id}"),
        })
    }

    fn split(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
        avro::split_wire(payload).map_err(|e| DecodeError::Record {
            reason: ReasonCode::SchemaMismatch,
            detail: e.to_string(),
        })
    }

    pub fn decode_event(&mut self, payload: &[u8]) -> Result<CanonicalEvent, DecodeError> {
        let (id, body) = Self::split(payload)?;
        let writer = self.writer(id)?;
        avro::decode_event(body, writer).map_err(|e| DecodeError::Record {
            reason: ReasonCode::Malformed,
            detail: e.to_string(),
        })
    }

    pub fn decode_audit(&mut self, payload: &[u8]) -> Result<AuditRecord, DecodeError> {
        let (id, body) = Self::split(payload)?;
        let writer = self.writer(id)?;
        avro::decode_audit(body, writer).map_err(|e| DecodeError::Record {
            reason: ReasonCode::Malformed,
            detail: e.to_string(),
        })
    }

    /// A disclosure-ledger record, read with its writer schema.
    pub fn decode_disclosure(
        &mut self,
        payload: &[u8],
    ) -> Result<consentry_core::disclosure::Disclosure, DecodeError> {
        let (id, body) = Self::split(payload)?;
        let writer = self.writer(id)?;
        avro::decode_disclosure(body, writer).map_err(|e| DecodeError::Record {
            reason: ReasonCode::Malformed,
            detail: e.to_string(),
        })
    }
}

/// A stage's view of its topics' formats.
pub struct Codec {
    cache: SchemaCache,
    /// Schema id to write with, per logical output topic.
    output_ids: HashMap<String, u32>,
    /// Destination topics' own schemas (the allowlist as a schema).
    destination_schemas: HashMap<String, Schema>,
    /// Schema per logical input topic (`None` = raw bytes).
    input_formats: HashMap<String, Option<SchemaRef>>,
    audit_topic: String,
}

impl Codec {
    /// Looks up the ids of every schema the stage writes. Fails (closed) if
    /// a subject has not been registered by `consentry topics apply`.
    pub fn for_stage(
        conn: &Connection,
        topology: &Topology,
        outputs: &[String],
        inputs: &[String],
    ) -> Result<Codec, RegistryError> {
        Self::for_stage_with(conn, topology, outputs, inputs, &HashMap::new())
    }

    /// [`Codec::for_stage`], with the ids of schemas the caller has just
    /// registered (logical topic → id): the registry said which id each
    /// has, and a lookup may not find a version the registry deduplicated
    /// across subjects (rivven-schema does).
    pub fn for_stage_with(
        conn: &Connection,
        topology: &Topology,
        outputs: &[String],
        inputs: &[String],
        registered: &HashMap<String, u32>,
    ) -> Result<Codec, RegistryError> {
        let cache = SchemaCache::for_connection(conn)?;
        let mut output_ids = HashMap::new();
        let mut destination_schemas = HashMap::new();
        for topic in outputs.iter().chain(std::iter::once(&topology.audit_topic)) {
            let Some(text) = conn.schema_text(topology, topic) else {
                continue;
            };
            let id = match registered.get(topic) {
                Some(id) => *id,
                None => cache.registry().lookup(&conn.subject(topic), &text)?,
            };
            output_ids.insert(topic.clone(), id);
            if topology.topic(topic).and_then(|t| t.schema) == Some(SchemaRef::Destination) {
                let schema = Schema::parse_str(&text).map_err(|e| RegistryError::Unexpected {
                    what: format!("destination schema of {topic}"),
                    status: 0,
                    body: e.to_string(),
                })?;
                destination_schemas.insert(topic.clone(), schema);
            }
        }
        let input_formats = inputs
            .iter()
            .map(|t| (t.clone(), topology.topic(t).and_then(|s| s.schema)))
            .collect();
        Ok(Codec {
            cache,
            output_ids,
            destination_schemas,
            input_formats,
            audit_topic: topology.audit_topic.clone(),
        })
    }

    /// All output topics of the stage's codec, for a sanity check.
    pub fn output_topics(&self) -> impl Iterator<Item = &String> {
        self.output_ids.keys()
    }

    pub fn decode(&mut self, topic: &str, payload: Option<&[u8]>) -> Result<Body, DecodeError> {
        let payload = payload.unwrap_or_default();
        match self.input_formats.get(topic).copied().flatten() {
            None => Ok(Body::Raw(payload.to_vec())),
            // FHIR Consent JSON or an Avro ConsentEvent: the consent
            // ledger tells them apart by the wire format's magic byte.
            Some(SchemaRef::ConsentEvent) => Ok(Body::Raw(payload.to_vec())),
            Some(SchemaRef::CanonicalEvent) => self
                .cache
                .decode_event(payload)
                .map(|e| Body::Event(Box::new(e))),
            Some(other) => Err(DecodeError::Record {
                reason: ReasonCode::SchemaMismatch,
                detail: format!("stages do not read {} records", other.name()),
            }),
        }
    }

    pub fn encode_event(&self, topic: &str, ev: &CanonicalEvent) -> Result<Vec<u8>, WireError> {
        let id = self
            .output_ids
            .get(topic)
            .copied()
            .ok_or(WireError::Encode(format!(
                "topic '{topic}' has no registered event schema"
            )))?;
        match self.destination_schemas.get(topic) {
            Some(schema) => avro::encode_event_as(ev, schema, id),
            None => avro::encode_event(ev, id),
        }
    }

    pub fn encode_disclosure(&self, topic: &str, d: &Disclosure) -> Result<Vec<u8>, WireError> {
        let id = self
            .output_ids
            .get(topic)
            .copied()
            .ok_or(WireError::Encode(format!(
                "topic '{topic}' has no registered disclosure schema"
            )))?;
        avro::encode_disclosure(d, id)
    }

    /// The registry id audit records are written with.
    pub fn audit_schema_id(&self) -> Option<u32> {
        self.output_ids.get(&self.audit_topic).copied()
    }

    pub fn encode_audit(&self, rec: &AuditRecord) -> Result<Vec<u8>, WireError> {
        let id = self
            .output_ids
            .get(&self.audit_topic)
            .copied()
            .ok_or(WireError::Encode(
                "audit topic has no registered schema".into(),
            ))?;
        avro::encode_audit(rec, id)
    }
}

/// True for topics whose records are raw bytes.
pub fn is_raw(role: TopicRole) -> bool {
    matches!(
        role,
        TopicRole::Source
            | TopicRole::ConsentEvents
            | TopicRole::ConsentState
            | TopicRole::Quarantine
            | TopicRole::Ledger
            | TopicRole::State
    )
}
