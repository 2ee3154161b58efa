//! Where the broker and registry are, how topics are named in this
//! deployment, and the librdkafka settings each client kind uses.

use crate::security::{KafkaSecurity, RegistryAccess};
use rdkafka::config::ClientConfig;

/// The largest record the runtime sends (and topics it creates accept).
pub const MAX_MESSAGE_BYTES: &str = "8388608";

pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";
pub const DEFAULT_REGISTRY: &str = "http://127.0.0.1:8081";

/// A deployment's connection settings. `topic_prefix` is prepended to every
/// topic, consumer group, transactional id and registry subject, so that
/// tests (or tenants) can share one broker without coupling.
#[derive(Debug, Clone)]
pub struct Connection {
    pub bootstrap: String,
    pub registry_url: String,
    pub topic_prefix: String,
    /// Consumer session timeout; group joins take about half of it on tansu.
    pub session_timeout_ms: u32,
    /// TLS and SASL for every Kafka client.
    pub kafka_security: KafkaSecurity,
    /// The registry's CA and credentials.
    pub registry_access: RegistryAccess,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            bootstrap: DEFAULT_BOOTSTRAP.into(),
            registry_url: DEFAULT_REGISTRY.into(),
            topic_prefix: String::new(),
            session_timeout_ms: 10_000,
            kafka_security: KafkaSecurity::default(),
            registry_access: RegistryAccess::default(),
        }
    }
}

impl Connection {
    /// The physical name of a logical topic (or group, or transactional id).
    pub fn physical(&self, logical: &str) -> String {
        format!("{}{}", self.topic_prefix, logical)
    }

    /// The logical name of a physical topic, if it carries this prefix.
    pub fn logical<'a>(&self, physical: &'a str) -> Option<&'a str> {
        physical.strip_prefix(&self.topic_prefix)
    }

    /// The registry subject of a logical topic's values (TopicNameStrategy).
    pub fn subject(&self, logical_topic: &str) -> String {
        format!("{}-value", self.physical(logical_topic))
    }

    /// The schema a logical topic's records are written with, as it is
    /// registered under [`Connection::subject`]. A destination's schema
    /// (made from the policy) names its subject in an attribute: two
    /// deployments, or two destinations, whose policies make the same
    /// schema would otherwise register identical texts, and a registry
    /// that keeps one copy per text (rivven-schema does) then adds no
    /// version to the second subject on a policy change, and stages could
    /// not find their schema there.
    pub fn schema_text(
        &self,
        topology: &consentry_core::topology::Topology,
        logical_topic: &str,
    ) -> Option<String> {
        let text = topology.schema_text(logical_topic)?;
        let destination = topology.topic(logical_topic).and_then(|t| t.schema)
            == Some(consentry_core::avro::SchemaRef::Destination);
        if !destination {
            return Some(text);
        }
        // The schema is a JSON object (`destination::schema_text`): the
        // attribute goes first, the rest stays as it is.
        let subject = serde_json::Value::String(self.subject(logical_topic));
        let body = text.trim_start().strip_prefix('{')?;
        Some(format!("{{\"consentry.subject\":{subject},{body}"))
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "consentry")
            // librdkafka logs would otherwise go to stderr unformatted.
            .set("log_level", "4");
        // Every consumer, producer and admin client comes from here.
        self.kafka_security.apply(&mut c);
        c
    }

    /// A consumer in `group` that reads only committed data and commits
    /// offsets only through transactions.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", self.physical(group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout_ms / 4).max(500).to_string(),
            )
            .set("statistics.interval.ms", "5000")
            // A fetch with nothing to return comes back after this long
            // (librdkafka's default is 500 ms): the wait a lone record on a
            // quiet input pays, such as a revocation on consent.events.
            .set("fetch.wait.max.ms", STAGE_FETCH_WAIT_MS)
            // Eager strategies only: the runner drops a partial batch on any
            // rebalance and relies on every partition restarting from its
            // committed offset (cooperative rebalancing would not).
            .set("partition.assignment.strategy", "range,roundrobin");
        c
    }

    /// A group-less reader (topics are assigned, not subscribed).
    pub fn reader(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", self.physical("consentry-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true");
        c
    }

    /// A transactional producer. One transactional id per stage instance:
    /// a restarted instance fences its predecessor's open transaction.
    pub fn transactional_producer(&self, transactional_id: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("transactional.id", self.physical(transactional_id))
            .set("enable.idempotence", "true")
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", "5")
            .set("message.max.bytes", MAX_MESSAGE_BYTES)
            // A stage writes only topics `topics apply` made: writing must
            // never create one (a deleted audit topic is an error, and the
            // stage stops, rather than a new, empty trail).
            .set("allow.auto.create.topics", "false")
            .set("topic.metadata.propagation.max.ms", "2000");
        c
    }

    /// A plain idempotent producer (synthetic feed, tools).
    pub fn producer(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.max.bytes", MAX_MESSAGE_BYTES);
        c
    }

    pub fn admin(&self) -> ClientConfig {
        self.base()
    }
}

/// Context for group-less readers: end-of-partition is how they know they
/// are done, so it is not an error worth logging.
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// A group-less reader consumer (see `Connection::reader`).
pub type Reader = rdkafka::consumer::BaseConsumer<ReaderContext>;

/// Whether a consumer error is the connection's, which librdkafka
/// recovers from by itself (a broker restarting, a dropped connection):
/// a reader goes on polling until its deadline instead of failing.
pub(crate) fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};
    matches!(
        e,
        KafkaError::MessageConsumption(code) | KafkaError::Global(code)
            if matches!(
                code,
                C::AllBrokersDown
                    | C::BrokerTransportFailure
                    | C::NetworkException
                    | C::RequestTimedOut
                    | C::OperationTimedOut
                    | C::BrokerNotAvailable
                    | C::LeaderNotAvailable
                    | C::NotLeaderForPartition
            )
    )
}

impl Connection {
    pub fn create_reader(&self) -> rdkafka::error::KafkaResult<Reader> {
        self.reader().create_with_context(ReaderContext)
    }

    /// A reader that tails a table (state, consent, ledger) for as long as
    /// a stage runs: a change to it (a revocation in `consent.state`) is
    /// seen within `TABLE_FETCH_WAIT_MS` of its commit, not 500 ms.
    pub fn create_table_reader(&self) -> rdkafka::error::KafkaResult<Reader> {
        self.reader()
            .set("fetch.wait.max.ms", TABLE_FETCH_WAIT_MS)
            .create_with_context(ReaderContext)
    }
}

/// `fetch.wait.max.ms` of a stage's input consumer.
const STAGE_FETCH_WAIT_MS: &str = "100";
/// `fetch.wait.max.ms` of a table reader: lower, since a table is quiet
/// and a change to it is what a revocation waits on.
const TABLE_FETCH_WAIT_MS: &str = "50";

#[cfg(test)]
mod tests {
    use super::Connection;

    #[test]
    fn connection_errors_are_transient_and_others_are_not() {
        use super::is_transient;
        use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};
        assert!(is_transient(&KafkaError::MessageConsumption(
            C::AllBrokersDown
        )));
        assert!(is_transient(&KafkaError::Global(C::BrokerTransportFailure)));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            C::TopicAuthorizationFailed
        )));
        assert!(!is_transient(&KafkaError::MessageConsumption(
            C::UnknownTopicOrPartition
        )));
    }

    #[test]
    fn a_destination_schema_names_its_subject_and_the_others_are_as_shipped() {
        let t = consentry_core::topology::shipped::topology();
        let conn = |prefix: &str| Connection {
            topic_prefix: prefix.into(),
            ..Connection::default()
        };
        let (a, b) = (conn("a."), conn("b."));
        let text = a.schema_text(&t, "out.marketing").expect("a schema");
        let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(json["consentry.subject"], "a.out.marketing-value");
        assert_eq!(json["type"], "record");
        apache_avro::Schema::parse_str(&text).expect("still Avro");
        // Two deployments, two texts: a registry that keeps one copy per
        // text still versions each subject.
        assert_ne!(Some(text), b.schema_text(&t, "out.marketing"));
        assert_eq!(a.schema_text(&t, "audit"), t.schema_text("audit"));
    }
}
