//! The history a replay reads, whole: what normalize wrote (within the
//! selection), today's consent table, the disclosure ledger, the audit
//! trail's lineage and what each destination holds.

use super::READ_TIMEOUT;
use consentry_core::headers;
use consentry_core::stage::{Body, InputMeta, StageInput, StageName};
use consentry_core::topology::Topology;
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::kafka::{compacted, log_ends, read_all, Record};
use consentry_runtime::Connection;
use consentry_stages::replay::{fields_of, values_of, HistoryFrom, Lineage};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Which history to replay.
pub struct Selection {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// (identifier value, system).
    pub subject: Option<(String, String)>,
    /// The raw source topics rather than the normalized topic.
    pub from_source: bool,
}

impl Selection {
    /// Whether a record was written within the window. A record without
    /// a timestamp is kept: the window cannot say.
    fn admits_time(&self, r: &Record) -> bool {
        let at = r.timestamp_ms;
        self.from_ms.is_none_or(|f| at.is_none_or(|t| t >= f))
            && self.to_ms.is_none_or(|e| at.is_none_or(|t| t < e))
    }

    fn admits(&self, r: &Record, ev: &consentry_core::envelope::CanonicalEvent) -> bool {
        let in_window = self.admits_time(r);
        let of_subject = self.subject.as_ref().is_none_or(|(value, system)| {
            ev.identifiers
                .iter()
                .any(|i| i.system == system.as_str() && i.value == value.as_str())
        });
        in_window && of_subject
    }

    pub fn history_from(&self) -> HistoryFrom {
        if self.from_source {
            HistoryFrom::Source
        } else {
            HistoryFrom::Normalized
        }
    }

    /// What the history's records are, for people.
    pub fn history_name(&self) -> &'static str {
        if self.from_source {
            "source records"
        } else {
            "normalized events"
        }
    }

    /// The selection as the replay id covers it: the window, and the
    /// subject under `keyed` (a keyed fingerprint: the replay id leaves
    /// with every record, and a bare digest of an MRN can be guessed).
    pub fn describe(&self, keyed: impl Fn(&[u8]) -> String) -> String {
        let subject = self.subject.as_ref().map(|(value, system)| {
            let mut bytes = system.as_bytes().to_vec();
            bytes.push(0);
            bytes.extend_from_slice(value.as_bytes());
            keyed(&bytes)
        });
        format!(
            "from={:?} to={:?} subject={subject:?}",
            self.from_ms, self.to_ms
        )
    }
}

/// A record a destination holds, as it received it: what a retraction
/// notice needs to name it.
pub struct HeldRef {
    /// The record's Kafka key.
    pub key: String,
    /// The correlation id as the destination knows it (keyed; from the
    /// record's header, which carries it whatever the allowlist).
    pub correlation_id: String,
}

/// What the current deployment holds, read whole.
pub struct History {
    /// What normalize wrote: the input of consent-gate.
    pub events: Vec<StageInput>,
    pub consent_table: BTreeMap<String, Vec<u8>>,
    pub disclosures: Vec<consentry_core::disclosure::Disclosure>,
    pub lineage: Lineage,
    /// Disclosure id → the fields its destination record carries.
    pub fields: HashMap<String, BTreeSet<String>>,
    /// Disclosure id → a fingerprint of its destination record's values.
    pub values: HashMap<String, [u8; 32]>,
    /// Disclosure id → how the destination received the record.
    pub held: HashMap<String, HeldRef>,
    /// The keys of route's table of what each destination holds of whom.
    pub route_state: std::collections::HashSet<String>,
    /// Where the consent table's partitions ended before it was read: a
    /// consent change since shows as a moved end.
    pub consent_ends: Vec<i64>,
}

impl History {
    pub fn read(
        conn: &Connection,
        t: &Topology,
        purposes: &BTreeSet<String>,
        selection: &Selection,
    ) -> anyhow::Result<History> {
        let mut cache = SchemaCache::for_connection(conn)?;
        let gate = t
            .stage(StageName::ConsentGate.as_str())
            .ok_or_else(|| anyhow::anyhow!("the topology has no consent-gate stage"))?;
        let history_topics: &[String] = if selection.from_source {
            &t.stage(StageName::Normalize.as_str())
                .ok_or_else(|| anyhow::anyhow!("the topology has no normalize stage"))?
                .inputs
        } else {
            &gate.inputs
        };
        // Every topic the plan needs, read at once: each read waits mostly
        // on the broker (metadata, watermarks, fetches per partition).
        let mut wanted: Vec<&str> = history_topics.iter().map(String::as_str).collect();
        wanted.extend(gate.reads.as_deref());
        let route_state = t
            .stage(StageName::Route.as_str())
            .and_then(|s| s.state.as_deref());
        wanted.extend(route_state);
        // Before the table is read: a change while it is read shows too.
        let consent_ends = match &gate.reads {
            Some(table) => log_ends(conn, &conn.physical(table))?,
            None => Vec::new(),
        };
        wanted.extend([t.disclosure_topic.as_str(), t.audit_topic.as_str()]);
        wanted.extend(
            purposes
                .iter()
                .filter_map(|p| t.purposes.get(p))
                .map(|p| p.topic.as_str()),
        );
        wanted.sort_unstable();
        wanted.dedup();
        let topics: HashMap<&str, Vec<Record>> = std::thread::scope(|s| {
            let reads: Vec<_> = wanted
                .iter()
                .map(|topic| {
                    (
                        *topic,
                        s.spawn(move || read_all(conn, &conn.physical(topic), READ_TIMEOUT)),
                    )
                })
                .collect();
            reads
                .into_iter()
                .map(|(topic, h)| {
                    let records = h
                        .join()
                        .map_err(|_| anyhow::anyhow!("reading {topic} panicked"))??;
                    Ok((topic, records))
                })
                .collect::<anyhow::Result<_>>()
        })?;
        let read = |logical: &str| -> anyhow::Result<&[Record]> {
            Ok(topics.get(logical).map_or(&[][..], Vec::as_slice))
        };
        let mut events = Vec::new();
        for topic in history_topics {
            for r in read(topic)? {
                let Some(payload) = r.payload() else { continue };
                let body = if selection.from_source {
                    if !selection.admits_time(r) {
                        continue;
                    }
                    Body::Raw(payload.to_vec())
                } else {
                    let ev = cache.decode_event(payload).map_err(|e| {
                        anyhow::anyhow!("{topic}[{}]@{}: {e}", r.partition, r.offset)
                    })?;
                    if !selection.admits(r, &ev) {
                        continue;
                    }
                    Body::Event(Box::new(ev))
                };
                events.push(StageInput {
                    meta: meta(topic, r),
                    body,
                });
            }
        }
        let mut consent_table = BTreeMap::new();
        if let Some(table) = &gate.reads {
            for (key, value) in compacted(read(table)?) {
                // Table keys are text; a record without one is no entry.
                if let Ok(key) = std::str::from_utf8(key).map(String::from) {
                    if !key.is_empty() {
                        consent_table.insert(key, value.to_vec());
                    }
                }
            }
        }
        // Every record of the ledger, the trail and the destinations is
        // read, or there is no plan: one left out could be planned as new.
        let unreadable = |topic: &str, r: &Record, e: &dyn std::fmt::Display| {
            anyhow::anyhow!("{topic}[{}]@{}: {e}; no plan", r.partition, r.offset)
        };
        let mut disclosures = Vec::new();
        for r in read(&t.disclosure_topic)? {
            let Some(payload) = r.payload() else { continue };
            let d = cache
                .decode_disclosure(payload)
                .map_err(|e| unreadable(&t.disclosure_topic, r, &e))?;
            if purposes.contains(d.purpose.as_str()) {
                disclosures.push(d);
            }
        }
        let mut lineage = Lineage::default();
        for r in read(&t.audit_topic)? {
            let Some(payload) = r.payload() else { continue };
            let a = cache
                .decode_audit(payload)
                .map_err(|e| unreadable(&t.audit_topic, r, &e))?;
            lineage.add(&a);
        }
        let mut fields = HashMap::new();
        let mut values = HashMap::new();
        let mut held = HashMap::new();
        for p in purposes.iter().filter_map(|p| t.purposes.get(p)) {
            for r in read(&p.topic)? {
                let (Some(id), Some(payload)) = (r.header(headers::IDEMPOTENCY_KEY), r.payload())
                else {
                    continue;
                };
                let ev = cache
                    .decode_event(payload)
                    .map_err(|e| unreadable(&p.topic, r, &e))?;
                fields.insert(id.to_string(), fields_of(&ev));
                values.insert(id.to_string(), values_of(&ev));
                held.insert(
                    id.to_string(),
                    HeldRef {
                        key: r
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                            .unwrap_or_default(),
                        correlation_id: r
                            .header(headers::CORRELATION_ID)
                            .unwrap_or_default()
                            .to_string(),
                    },
                );
            }
        }
        Ok(History {
            events,
            consent_table,
            disclosures,
            lineage,
            fields,
            values,
            held,
            route_state: match route_state {
                Some(topic) => compacted(read(topic)?)
                    .into_keys()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect(),
                None => Default::default(),
            },
            consent_ends,
        })
    }
}

fn meta(topic: &str, r: &Record) -> InputMeta {
    InputMeta {
        topic: topic.to_string(),
        partition: r.partition,
        offset: r.offset,
        key: r
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(String::from),
        idempotency_key: r.header(headers::IDEMPOTENCY_KEY).map(String::from),
        correlation_id: r.header(headers::CORRELATION_ID).map(String::from),
        ..Default::default()
    }
}
