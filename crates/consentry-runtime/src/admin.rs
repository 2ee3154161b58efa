//! `topics apply`: creates every topic of the topology through the Kafka
//! admin API and registers every Avro schema with the registry under
//! BACKWARD compatibility. Safe to run again: existing topics are checked,
//! identical schemas are not registered twice.

use consentry_core::topology::{Cleanup, Retention, Topology};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::registry::RegistryClient;
use crate::Connection;

pub const COMPATIBILITY: &str = "BACKWARD";

/// What `apply` did to each topic and subject, for the command's output.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub existing: Vec<String>,
    pub warnings: Vec<String>,
    pub schemas: Vec<(String, u32)>,
}

/// Creates the topology's topics. `replication` of -1 uses the broker's default.
pub fn create_topics(
    conn: &Connection,
    topology: &Topology,
    replication: i32,
    report: &mut ApplyReport,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = conn.admin().create()?;
    let names: Vec<String> = topology.topics.keys().map(|t| conn.physical(t)).collect();
    let retention: Vec<Option<String>> = topology
        .topics
        .values()
        .map(|t| match t.retention {
            Retention::Default => None,
            Retention::Unlimited => Some("-1".to_string()),
            Retention::Millis(ms) => Some(ms.to_string()),
        })
        .collect();
    let new_topics: Vec<NewTopic<'_>> = topology
        .topics
        .values()
        .zip(&names)
        .zip(&retention)
        .map(|((spec, name), retention)| {
            let mut t = NewTopic::new(name, spec.partitions, TopicReplication::Fixed(replication));
            t = t.set(
                "cleanup.policy",
                if spec.cleanup == Cleanup::Compact {
                    "compact"
                } else {
                    "delete"
                },
            );
            if let Some(r) = retention {
                t = t.set("retention.ms", r);
            }
            // The runtime's producers send up to 8 MiB; a broker's default
            // (about 1 MiB on Kafka) would refuse a quarantined record near
            // a stage's size limit once sealed, and fail its batch forever.
            t.set("max.message.bytes", crate::config::MAX_MESSAGE_BYTES)
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor::block_on(admin.create_topics(&new_topics, &opts))?;
    for r in results {
        match r {
            Ok(name) => report.created.push(name),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => report.existing.push(name),
            Err((name, code)) => anyhow::bail!("cannot create topic '{name}': {code}"),
        }
    }
    // An existing topic whose partitions or policies differ from the
    // topology would silently change how subjects spread or how long
    // evidence is kept; say so.
    for name in &report.existing {
        let logical = conn.logical(name).unwrap_or(name);
        let Some(spec) = topology.topic(logical) else {
            continue;
        };
        let configs = topic_configs(conn, name)?;
        let want_cleanup = if spec.cleanup == Cleanup::Compact {
            "compact"
        } else {
            "delete"
        };
        if configs
            .get("cleanup.policy")
            .is_some_and(|c| c != want_cleanup)
        {
            report.warnings.push(format!(
                "topic '{name}' has cleanup.policy={}; topology.yaml asks for {want_cleanup}",
                configs["cleanup.policy"]
            ));
        }
        let want_retention = match spec.retention {
            Retention::Default => None,
            Retention::Unlimited => Some("-1".to_string()),
            Retention::Millis(ms) => Some(ms.to_string()),
        };
        if let (Some(want), Some(have)) = (want_retention, configs.get("retention.ms")) {
            if &want != have {
                report.warnings.push(format!(
                    "topic '{name}' has retention.ms={have}; topology.yaml asks for {want}"
                ));
            }
        }
    }
    if !report.existing.is_empty() {
        let reader: BaseConsumer = conn.reader().create()?;
        let md = reader.fetch_metadata(None, Duration::from_secs(10))?;
        for t in md.topics() {
            if !report.existing.iter().any(|e| e == t.name()) {
                continue;
            }
            let logical = conn.logical(t.name()).unwrap_or(t.name());
            if let Some(spec) = topology.topic(logical) {
                if t.partitions().len() as i32 != spec.partitions {
                    report.warnings.push(format!(
                        "topic '{}' exists with {} partitions; topology.yaml asks for {}",
                        t.name(),
                        t.partitions().len(),
                        spec.partitions
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Registers each topic's schema under `<topic>-value` with BACKWARD
/// compatibility. An incompatible change fails naming subject and reason.
pub fn register_schemas(
    conn: &Connection,
    topology: &Topology,
    report: &mut ApplyReport,
) -> anyhow::Result<()> {
    let registry = RegistryClient::for_connection(conn)?;
    for topic in topology.topics.keys() {
        let Some(schema) = conn.schema_text(topology, topic) else {
            continue;
        };
        let subject = conn.subject(topic);
        if registry.subject_exists(&subject)? {
            registry.check_compatible(&subject, &schema, COMPATIBILITY)?;
        }
        registry.set_compatibility(&subject, COMPATIBILITY)?;
        let id = registry.register(&subject, &schema, COMPATIBILITY)?;
        report.schemas.push((subject, id));
    }
    Ok(())
}

/// A topic's configuration as the broker reports it (DescribeConfigs).
pub fn topic_configs(
    conn: &Connection,
    physical_topic: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let admin: AdminClient<DefaultClientContext> = conn.admin().create()?;
    let results = futures_executor::block_on(admin.describe_configs(
        &[ResourceSpecifier::Topic(physical_topic)],
        &AdminOptions::new(),
    ))?;
    let mut out = BTreeMap::new();
    for r in results {
        let resource =
            r.map_err(|e| anyhow::anyhow!("cannot describe topic '{physical_topic}': {e}"))?;
        for e in resource.entries {
            if let Some(v) = e.value {
                out.insert(e.name, v);
            }
        }
    }
    Ok(out)
}
