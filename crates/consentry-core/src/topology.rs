//! `topology.yaml`, format version 1: the single source of truth for topics,
//! stages, purposes, destinations, field disclosure classes and allowlists.
//!
//! Loading has two steps. Serde reads the file into `raw` structs with
//! `deny_unknown_fields`; then `validate` checks every cross-reference and
//! builds a `Topology` that cannot be invalid. Every error names the file,
//! the line and what to change; all errors are reported at once.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use crate::avro::SchemaRef;
use crate::stage::{StageName, StateNeed};

/// Envelope fields that no allowlist may name: they exist for the
/// boundary's own bookkeeping.
pub const INTERNAL_FIELDS: [&str; 2] = ["subject_token", "consent_basis"];

/// The token domain of the subject's internal pseudonym (`subject_token`),
/// and any other domain no purpose may use.
pub const SUBJECT_TOKEN_DOMAIN: &str = "subject";
/// The vault's scope domain for opening quarantined records: no purpose's
/// tokens may be of it, so no resolve can be scoped by it.
pub const QUARANTINE_SCOPE_DOMAIN: &str = "quarantine";
pub const RESERVED_TOKEN_DOMAINS: [&str; 2] = [SUBJECT_TOKEN_DOMAIN, QUARANTINE_SCOPE_DOMAIN];

mod raw {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Topology {
        pub version: u32,
        pub policy_version: String,
        pub topics: BTreeMap<String, Topic>,
        pub stages: BTreeMap<String, Stage>,
        pub destinations: BTreeMap<String, Destination>,
        pub purposes: BTreeMap<String, Purpose>,
        pub identity: Identity,
        pub fields: BTreeMap<String, super::FieldClass>,
        #[serde(default)]
        pub normalize: Normalize,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Normalize {
        #[serde(default)]
        pub allow_extra_paths: AllowExtraPaths,
        #[serde(default)]
        pub unresolved_hold_bytes: Option<u64>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct AllowExtraPaths {
        #[serde(default)]
        pub hl7v2: Vec<String>,
        #[serde(default)]
        pub fhir: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Topic {
        pub role: super::TopicRole,
        pub partitions: i32,
        #[serde(default)]
        pub cleanup: super::Cleanup,
        #[serde(default)]
        pub retention: Option<String>,
        #[serde(default)]
        pub schema: Option<String>,
        #[serde(default)]
        pub format: Option<super::SourceFormat>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Stage {
        pub inputs: Vec<String>,
        pub outputs: Vec<String>,
        pub consumer_group: String,
        pub ledger: String,
        #[serde(default)]
        pub state: Option<String>,
        #[serde(default)]
        pub reads: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Destination {
        pub topic: String,
        pub system: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Purpose {
        pub consent_code: String,
        pub destination: String,
        pub profile: super::Profile,
        pub allow: Vec<String>,
        #[serde(default)]
        pub token_domain: Option<String>,
        #[serde(default)]
        pub linkage: Option<super::Linkage>,
        #[serde(default)]
        pub deidentify: Deidentify,
        #[serde(default)]
        pub channel: Option<String>,
        #[serde(default)]
        pub on_missing_consent: Option<super::MissingConsent>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Deidentify {
        #[serde(default)]
        pub dates: Option<super::DateMode>,
        #[serde(default)]
        pub shift_max_days: Option<u32>,
        #[serde(default)]
        pub keep_text: bool,
        #[serde(default)]
        pub age: Option<String>,
        #[serde(default)]
        pub rollup_codes: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Identity {
        pub subject_system: String,
        pub hl7_authorities: BTreeMap<String, String>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicRole {
    /// A feed from the EHR (raw bytes).
    Source,
    /// Consent captures and FHIR Consent resources (raw bytes).
    ConsentEvents,
    /// The compacted consent table.
    ConsentState,
    /// Between two stages.
    Internal,
    /// A purpose's destination.
    Destination,
    /// The disclosure ledger: one record per record route writes.
    Disclosures,
    Audit,
    /// The audit writers' latest signed checkpoints, one per writer
    /// (compacted JSON): evidence outside each writer's own chain.
    AuditHeads,
    Quarantine,
    /// A stage's compacted record of the inputs it has handled.
    Ledger,
    /// A stage's compacted state table (normalize's patient index).
    State,
}

/// What a raw source topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// One HL7 v2.x message per record, raw or MLLP-framed.
    Hl7v2,
    /// One FHIR R4 JSON resource or Bundle per record.
    FhirJson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Cleanup {
    #[default]
    Delete,
    Compact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldClass {
    Operational,
    Limited,
    PhiRestricted,
    HighlyRestricted,
}

impl FieldClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldClass::Operational => "operational",
            FieldClass::Limited => "limited",
            FieldClass::PhiRestricted => "phi-restricted",
            FieldClass::HighlyRestricted => "highly-restricted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    SafeHarbor,
    LimitedDataSet,
    IdentifiedTokenized,
    AggregateOnly,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::SafeHarbor => "safe-harbor",
            Profile::LimitedDataSet => "limited-data-set",
            Profile::IdentifiedTokenized => "identified-tokenized",
            Profile::AggregateOnly => "aggregate-only",
        }
    }

    /// Whether the profile's outputs remain PHI (and say so in their
    /// headers): a limited data set, and identified-tokenized records.
    pub fn is_phi(self) -> bool {
        matches!(self, Profile::LimitedDataSet | Profile::IdentifiedTokenized)
    }
}

/// How a purpose's records are linked to their subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Linkage {
    /// No subject token at all.
    None,
    /// A random token per subject and domain, issued and kept by the vault
    /// (the only linkage a `safe-harbor` purpose may have: HIPAA
    /// 164.514(c) forbids codes derived from the individual's information).
    Random,
    /// A keyed HMAC of the subject (and identifiers) per domain: only for
    /// `limited-data-set` and `identified-tokenized`, whose outputs stay PHI.
    Deterministic,
}

impl Linkage {
    pub fn as_str(self) -> &'static str {
        match self {
            Linkage::None => "none",
            Linkage::Random => "random",
            Linkage::Deterministic => "deterministic",
        }
    }
}

/// How a de-identified record keeps its dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DateMode {
    /// Every date and instant to its year (Safe Harbor's default).
    #[default]
    Year,
    /// Shifted by a keyed, bounded, per-subject number of days, so
    /// intervals survive (`safe-harbor` only).
    Shift,
}

/// Whether and how a de-identified record states the subject's age at the
/// event (over 89 always as `90+`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgeMode {
    #[default]
    Omit,
    Years,
    /// Bands of this many years (`40-49`).
    Band(u32),
}

/// A purpose's de-identification settings beyond its profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeidentifySpec {
    pub dates: DateMode,
    /// Largest shift in days (for `dates: shift`).
    pub shift_max_days: u32,
    /// Keep free text after scrubbing (else it is dropped).
    pub keep_text: bool,
    pub age: AgeMode,
    /// ICD-10 codes starting with one of these (`*`: every code) are rolled
    /// up to their three-character category: rare diagnoses generalized.
    pub rollup_codes: Vec<String>,
}

/// A token domain as `tok:<domain>:...` accepts it (the same rule as
/// `consentry_crypto::token::check_domain`, which this crate cannot use).
fn valid_token_domain(d: &str) -> bool {
    let b = d.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The default largest date shift, in days.
pub const DEFAULT_SHIFT_MAX_DAYS: u32 = 180;

/// Retention of a topic in milliseconds; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Default,
    Unlimited,
    Millis(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub role: TopicRole,
    pub partitions: i32,
    pub cleanup: Cleanup,
    pub retention: Retention,
    /// `None` for raw topics, else the Avro schema records carry.
    pub schema: Option<SchemaRef>,
    /// For source and consent-event topics: what the raw bytes are.
    pub format: Option<SourceFormat>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub consumer_group: String,
    pub ledger: String,
    /// The stage's state table, if it keeps one.
    pub state: Option<String>,
    /// A table the stage reads but never writes (the consent table, for
    /// consent-gate and route). Its keys and the stage's own never overlap.
    pub reads: Option<String>,
}

/// normalize's settings beyond the shared ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizeSpec {
    /// HL7 v2 segments (`ZPD`) or fields (`PID-40`) the mapping does not
    /// know but this site sends on purpose: accepted, not carried.
    pub allow_hl7v2: BTreeSet<String>,
    /// FHIR element paths (`Patient.extension(<url>)`, `Encounter.length`)
    /// accepted and not carried.
    pub allow_fhir: BTreeSet<String>,
    /// Memory for records held until their subject resolves.
    pub unresolved_hold_bytes: usize,
}

/// 64 MiB of held records per normalize instance.
pub const DEFAULT_UNRESOLVED_HOLD_BYTES: usize = 64 * 1024 * 1024;

impl Default for NormalizeSpec {
    fn default() -> Self {
        NormalizeSpec {
            allow_hl7v2: BTreeSet::new(),
            allow_fhir: BTreeSet::new(),
            unresolved_hold_bytes: DEFAULT_UNRESOLVED_HOLD_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    pub name: String,
    pub consent_code: String,
    pub destination: String,
    /// The destination's topic.
    pub topic: String,
    pub profile: Profile,
    pub allow: BTreeSet<String>,
    /// The token domain of this purpose's tokens (`tok:<domain>:...`);
    /// every purpose has its own, so purposes never share a join key.
    pub token_domain: String,
    pub linkage: Linkage,
    pub deidentify: DeidentifySpec,
    /// The channel its records go out on, as consents name channels
    /// (`*`: any; a consent for `*` covers every channel).
    pub channel: String,
    /// What the gate does when there is no consent to act on.
    pub on_missing_consent: MissingConsent,
}

/// What consent-gate does for a purpose when the subject's consent is
/// unknown, pending or lapsed (never when it was refused or revoked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MissingConsent {
    /// Nothing goes out.
    #[default]
    Deny,
    /// A non-PHI "consent needed" notice goes out instead of the event.
    Notify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub topic: String,
    pub system: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identifier system whose value is the subject's identity.
    pub subject_system: String,
    /// HL7 PID-3.4 assigning authority -> identifier system.
    pub hl7_authorities: BTreeMap<String, String>,
}

/// A validated topology. Every cross-reference in it resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub policy_version: String,
    pub topics: BTreeMap<String, TopicSpec>,
    pub stages: BTreeMap<String, StageSpec>,
    pub destinations: BTreeMap<String, Destination>,
    pub purposes: BTreeMap<String, Purpose>,
    pub identity: Identity,
    pub fields: BTreeMap<String, FieldClass>,
    pub normalize: NormalizeSpec,
    pub audit_topic: String,
    /// Where every audit writer keeps its latest signed checkpoint.
    pub audit_heads_topic: String,
    pub quarantine_topic: String,
    /// The disclosure ledger (`role: disclosures`).
    pub disclosure_topic: String,
}

impl Topology {
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.get(name)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.get(name)
    }

    /// The purpose whose destination writes to `topic`.
    pub fn purpose_of_topic(&self, topic: &str) -> Option<&Purpose> {
        self.purposes.values().find(|p| p.topic == topic)
    }

    /// The Avro schema text records of `topic` are written with: a shipped
    /// schema, or a destination's own (derived from its allowlist).
    pub fn schema_text(&self, topic: &str) -> Option<String> {
        match self.topic(topic)?.schema? {
            SchemaRef::Destination => {
                let p = self.purpose_of_topic(topic)?;
                Some(crate::destination::schema_text(self, p))
            }
            shipped => Some(shipped.source().to_string()),
        }
    }

    /// Loads and validates a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TopologyErrors {
            errors: vec![TopologyError {
                file: file.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
                fix: "check the path, or pass one with `--topology FILE`".into(),
            }],
        })?;
        Topology::parse(&file, &text)
    }

    /// Parses and validates topology text; `file` is used in messages.
    pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyErrors> {
        let raw: raw::Topology = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            TopologyErrors {
                errors: vec![TopologyError {
                    file: file.to_string(),
                    line,
                    column,
                    message: strip_location(&e.to_string()),
                    fix: serde_fix(&e.to_string()),
                }],
            }
        })?;
        let index = PathIndex::build(text);
        Validator {
            file,
            index: &index,
            errors: Vec::new(),
        }
        .validate(raw)
    }
}

/// One problem in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyError {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}; fix: {}",
            self.file, self.line, self.column, self.message, self.fix
        )
    }
}

/// All problems found in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyErrors {
    pub errors: Vec<TopologyError>,
}

impl fmt::Display for TopologyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TopologyErrors {}

fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn serde_fix(msg: &str) -> String {
    if msg.contains("unknown field") {
        "remove the key or correct its spelling to one of the expected keys".into()
    } else if msg.contains("missing field") {
        "add the missing key".into()
    } else if msg.contains("unknown variant") {
        "use one of the expected values".into()
    } else {
        "correct the value's type or the YAML syntax".into()
    }
}

/// Maps dotted paths (`stages.normalize.inputs[0]`) to their line and column
/// in the YAML text, so that semantic errors can point at the right line.
struct PathIndex {
    marks: HashMap<String, (usize, usize)>,
}

impl PathIndex {
    fn build(text: &str) -> PathIndex {
        use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
        use yaml_rust2::scanner::Marker;

        enum Frame {
            Map { path: String, key: Option<String> },
            Seq { path: String, index: usize },
        }
        struct Sink {
            stack: Vec<Frame>,
            marks: HashMap<String, (usize, usize)>,
        }
        impl Sink {
            /// The path of the value that starts now, advancing the parent.
            fn next_value_path(&mut self) -> Option<String> {
                match self.stack.last_mut() {
                    None => Some(String::new()),
                    Some(Frame::Map { path, key }) => key.take().map(|k| join(path, &k)),
                    Some(Frame::Seq { path, index }) => {
                        let p = format!("{path}[{index}]");
                        *index += 1;
                        Some(p)
                    }
                }
            }
        }
        fn join(path: &str, key: &str) -> String {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        }
        impl MarkedEventReceiver for Sink {
            fn on_event(&mut self, ev: Event, mark: Marker) {
                let at = (mark.line(), mark.col() + 1);
                match ev {
                    Event::Scalar(value, ..) => {
                        if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                            if key.is_none() {
                                let p = join(path, &value);
                                self.marks.entry(p).or_insert(at);
                                *key = Some(value);
                                return;
                            }
                        }
                        if let Some(p) = self.next_value_path() {
                            self.marks.entry(p).or_insert(at);
                        }
                    }
                    Event::MappingStart(..) | Event::SequenceStart(..) => {
                        let p = self.next_value_path().unwrap_or_default();
                        self.marks.entry(p.clone()).or_insert(at);
                        if matches!(ev, Event::MappingStart(..)) {
                            self.stack.push(Frame::Map { path: p, key: None });
                        } else {
                            self.stack.push(Frame::Seq { path: p, index: 0 });
                        }
                    }
                    Event::MappingEnd | Event::SequenceEnd => {
                        self.stack.pop();
                    }
                    _ => {}
                }
            }
        }
        let mut sink = Sink {
            stack: Vec::new(),
            marks: HashMap::new(),
        };
        // The text already parsed with serde, so a scan error here is not
        // expected; an index without marks only costs line numbers.
        let _ = Parser::new_from_str(text).load(&mut sink, false);
        PathIndex { marks: sink.marks }
    }

    /// The line and column of `path`, or of its nearest ancestor.
    fn locate(&self, path: &str) -> (usize, usize) {
        let mut p = path.to_string();
        loop {
            if let Some(m) = self.marks.get(&p) {
                return *m;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return (0, 0),
            }
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    index: &'a PathIndex,
    errors: Vec<TopologyError>,
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

    fn validate(mut self, raw: raw::Topology) -> Result<Topology, TopologyErrors> {
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

    fn purposes(
        &mut self,
        raw: &BTreeMap<String, raw::Purpose>,
        destinations: &BTreeMap<String, Destination>,
        fields: &BTreeMap<String, FieldClass>,
    ) -> BTreeMap<String, Purpose> {
        let mut out = BTreeMap::new();
        let mut topic_owner: BTreeMap<String, String> = BTreeMap::new();
        let mut domain_owner: BTreeMap<String, String> = BTreeMap::new();
        if raw.is_empty() {
            self.error(
                "purposes",
                "no purposes are defined",
                "define at least one purpose",
            );
        }
        for (name, p) in raw {
            let path = format!("purposes.{name}");
            if p.consent_code.is_empty() || !p.consent_code.chars().all(|c| c.is_ascii_uppercase())
            {
                self.error(
                    &format!("{path}.consent_code"),
                    format!(
                        "purpose '{name}' has consent code '{}', which is not a v3 ActReason code",
                        p.consent_code
                    ),
                    "use an upper-case ActReason code such as CAREMGT, HRESCH, HOPERAT or HMARKT",
                );
            }
            let topic = match destinations.get(&p.destination) {
                Some(d) => d.topic.clone(),
                None => {
                    let known: Vec<_> = destinations.keys().cloned().collect();
                    self.error(
                        &format!("{path}.destination"),
                        format!(
                            "purpose '{name}' names destination '{}', which is not defined",
                            p.destination
                        ),
                        format!("use one of: {}", known.join(", ")),
                    );
                    String::new()
                }
            };
            if !topic.is_empty() {
                if let Some(other) = topic_owner.insert(topic.clone(), name.clone()) {
                    self.error(
                        &format!("{path}.destination"),
                        format!("purposes '{other}' and '{name}' share destination topic '{topic}'"),
                        "give each purpose its own destination topic, so revocation notices and allowlists stay per purpose",
                    );
                }
            }
            for (i, f) in p.allow.iter().enumerate() {
                if INTERNAL_FIELDS.contains(&f.as_str()) {
                    self.error(
                        &format!("{path}.allow[{i}]"),
                        format!("purpose '{name}' allows field '{f}', which never leaves the boundary"),
                        "remove it: it is the boundary's own bookkeeping (the subject's pseudonym, the consent basis)",
                    );
                } else if !fields.contains_key(f) {
                    self.error(
                        &format!("{path}.allow[{i}]"),
                        format!("purpose '{name}' allows field '{f}', which is not a classified envelope field"),
                        "use a path listed under `fields:`",
                    );
                }
            }
            let token_domain = p.token_domain.clone().unwrap_or_else(|| name.clone());
            if !valid_token_domain(&token_domain) {
                self.error(
                    &format!("{path}.token_domain"),
                    format!("purpose '{name}' has token domain '{token_domain}', which is not a valid domain"),
                    "use 1 to 32 lower-case letters, digits or '-', not starting with '-'",
                );
            } else if RESERVED_TOKEN_DOMAINS.contains(&token_domain.as_str()) {
                self.error(
                    &format!("{path}.token_domain"),
                    format!(
                        "purpose '{name}' has token domain '{token_domain}', which is reserved"
                    ),
                    "pick another domain: the reserved ones key Consentry's own tables",
                );
            } else if let Some(other) = domain_owner.insert(token_domain.clone(), name.clone()) {
                self.error(
                    &format!("{path}.token_domain"),
                    format!("purposes '{other}' and '{name}' share token domain '{token_domain}'"),
                    "give each purpose its own token domain: tokens of one domain join, across domains they never do",
                );
            }
            let linkage = self.linkage(&path, name, p);
            let deidentify = self.deidentify_spec(&path, name, p);
            out.insert(
                name.clone(),
                Purpose {
                    name: name.clone(),
                    consent_code: p.consent_code.clone(),
                    channel: p.channel.clone().unwrap_or_else(|| "*".to_string()),
                    on_missing_consent: p.on_missing_consent.unwrap_or_default(),
                    destination: p.destination.clone(),
                    topic,
                    profile: p.profile,
                    allow: p.allow.iter().cloned().collect(),
                    token_domain,
                    linkage,
                    deidentify,
                },
            );
        }
        out
    }

    fn linkage(&mut self, path: &str, name: &str, p: &raw::Purpose) -> Linkage {
        let default = if p.profile.is_phi() {
            Linkage::Deterministic
        } else {
            Linkage::None
        };
        let linkage = p.linkage.unwrap_or(default);
        match (p.profile, linkage) {
            (Profile::SafeHarbor | Profile::AggregateOnly, Linkage::Deterministic) => self.error(
                &format!("{path}.linkage"),
                format!(
                    "purpose '{name}' ({}) asks for deterministic tokens; HIPAA 164.514(c) forbids a re-identification code derived from the individual's information in de-identified data",
                    p.profile.as_str()
                ),
                "use `linkage: random` (a vaulted random token per subject) or `linkage: none`",
            ),
            (Profile::AggregateOnly, Linkage::Random) => self.error(
                &format!("{path}.linkage"),
                format!("purpose '{name}' is aggregate-only and cannot be linked to a subject"),
                "use `linkage: none`",
            ),
            _ => {}
        }
        linkage
    }

    fn deidentify_spec(&mut self, path: &str, name: &str, p: &raw::Purpose) -> DeidentifySpec {
        let d = &p.deidentify;
        let path = format!("{path}.deidentify");
        let dates = d.dates.unwrap_or_default();
        if dates == DateMode::Shift && p.profile != Profile::SafeHarbor {
            self.error(
                &format!("{path}.dates"),
                format!(
                    "purpose '{name}' shifts dates, but its profile {} keeps them",
                    p.profile.as_str()
                ),
                "remove `dates: shift`, or use the safe-harbor profile",
            );
        }
        let shift_max_days = d.shift_max_days.unwrap_or(DEFAULT_SHIFT_MAX_DAYS);
        if !(1..=3650).contains(&shift_max_days) {
            self.error(
                &format!("{path}.shift_max_days"),
                format!("purpose '{name}' has shift_max_days {shift_max_days}"),
                "use 1 to 3650 days",
            );
        }
        let age = match d.age.as_deref() {
            None | Some("omit") => AgeMode::Omit,
            Some("years") => AgeMode::Years,
            Some(band) => match band
                .strip_prefix("band-")
                .and_then(|w| w.parse::<u32>().ok())
            {
                Some(w) if (2..=50).contains(&w) => AgeMode::Band(w),
                _ => {
                    self.error(
                        &format!("{path}.age"),
                        format!("purpose '{name}' has age '{band}'"),
                        "use omit, years, or band-N with N from 2 to 50 (band-10: 40-49)",
                    );
                    AgeMode::Omit
                }
            },
        };
        for (i, c) in d.rollup_codes.iter().enumerate() {
            let ok = c == "*"
                || (!c.is_empty()
                    && c.len() <= 8
                    && c.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.'));
            if !ok {
                self.error(
                    &format!("{path}.rollup_codes[{i}]"),
                    format!(
                        "purpose '{name}' rolls up '{c}', which is not an ICD-10 code or prefix"
                    ),
                    "use an upper-case ICD-10 code or prefix (E75, Q87.4), or * for every code",
                );
            }
        }
        DeidentifySpec {
            dates,
            shift_max_days,
            keep_text: d.keep_text,
            age,
            rollup_codes: d.rollup_codes.clone(),
        }
    }

    fn stages(
        &mut self,
        raw: &BTreeMap<String, raw::Stage>,
        topics: &BTreeMap<String, TopicSpec>,
        purposes: &BTreeMap<String, Purpose>,
    ) -> BTreeMap<String, StageSpec> {
        let mut out = BTreeMap::new();
        for stage in StageName::ALL {
            if !raw.contains_key(stage.as_str()) {
                self.error(
                    "stages",
                    format!("stage '{stage}' is missing"),
                    format!("add `{stage}:` under `stages:`"),
                );
            }
        }
        let mut groups: BTreeMap<&str, &str> = BTreeMap::new();
        let mut ledgers: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, s) in raw {
            let path = format!("stages.{name}");
            let Some(stage) = StageName::parse(name) else {
                self.error(
                    &path,
                    format!("unknown stage '{name}'"),
                    format!("use one of: {}", StageName::joined()),
                );
                continue;
            };
            if s.inputs.is_empty() {
                self.error(
                    &format!("{path}.inputs"),
                    format!("stage '{name}' has no inputs"),
                    "list at least one input topic",
                );
            }
            for (i, t) in s.inputs.iter().enumerate() {
                self.stage_topic(
                    &format!("{path}.inputs[{i}]"),
                    name,
                    "input",
                    t,
                    topics,
                    stage.input_roles(),
                );
            }
            for (i, t) in s.outputs.iter().enumerate() {
                self.stage_topic(
                    &format!("{path}.outputs[{i}]"),
                    name,
                    "output",
                    t,
                    topics,
                    stage.output_roles(),
                );
            }
            self.stage_topic(
                &format!("{path}.ledger"),
                name,
                "ledger",
                &s.ledger,
                topics,
                &[TopicRole::Ledger],
            );
            if let Some(r) = &s.reads {
                self.stage_topic(
                    &format!("{path}.reads"),
                    name,
                    "table",
                    r,
                    topics,
                    &[TopicRole::ConsentState],
                );
            }
            match &s.state {
                Some(st) => {
                    self.stage_topic(
                        &format!("{path}.state"),
                        name,
                        "state",
                        st,
                        topics,
                        &[stage.state_role()],
                    );
                    if let Some(other) = ledgers.insert(st, name) {
                        self.error(
                            &format!("{path}.state"),
                            format!("stages '{other}' and '{name}' share table topic '{st}'"),
                            "give each stage its own ledger and state topics",
                        );
                    }
                }
                None => {
                    if let Some((what, fix)) = missing_state_fix(stage) {
                        self.error(
                            &path,
                            format!("stage '{name}' has no state topic for {what}"),
                            fix,
                        );
                    }
                }
            }
            if let Some(what) = stage.consent_table_use() {
                if s.reads.is_none() {
                    self.error(
                        &path,
                        format!("stage '{name}' does not read the consent table it {what}"),
                        "add `reads: consent.state`",
                    );
                }
            }
            if let Some(other) = ledgers.insert(&s.ledger, name) {
                self.error(
                    &format!("{path}.ledger"),
                    format!(
                        "stages '{other}' and '{name}' share ledger topic '{}'",
                        s.ledger
                    ),
                    "give each stage its own ledger topic",
                );
            }
            if s.consumer_group.trim().is_empty() {
                self.error(
                    &format!("{path}.consumer_group"),
                    format!("stage '{name}' has an empty consumer group"),
                    "set a consumer group name",
                );
            } else if let Some(other) = groups.insert(&s.consumer_group, name) {
                self.error(
                    &format!("{path}.consumer_group"),
                    format!(
                        "stages '{other}' and '{name}' share consumer group '{}'",
                        s.consumer_group
                    ),
                    "give each stage its own consumer group",
                );
            }
            if stage == StageName::Route {
                for p in purposes.values() {
                    if !p.topic.is_empty() && !s.outputs.contains(&p.topic) {
                        self.error(
                            &format!("{path}.outputs"),
                            format!(
                                "route does not write purpose '{}''s destination topic '{}'",
                                p.name, p.topic
                            ),
                            format!("add '{}' to route's outputs", p.topic),
                        );
                    }
                }
            }
            out.insert(
                name.clone(),
                StageSpec {
                    name: name.clone(),
                    inputs: s.inputs.clone(),
                    outputs: s.outputs.clone(),
                    consumer_group: s.consumer_group.clone(),
                    ledger: s.ledger.clone(),
                    state: s.state.clone(),
                    reads: s.reads.clone(),
                },
            );
        }
        // Each stage's output must be the next stage's input: a gap would
        // strand records in a topic nobody reads.
        // The consent ledger feeds the gate through its table, not a topic.
        let ledger = raw.get(StageName::ConsentLedger.as_str());
        let gate = raw.get(StageName::ConsentGate.as_str());
        if let (Some(l), Some(g)) = (ledger, gate) {
            if l.state.is_some() && g.reads != l.state {
                self.error(
                    &format!("stages.{}.reads", StageName::ConsentGate),
                    "consent-gate does not read the table the consent ledger writes",
                    format!("set `reads: {}`", l.state.as_deref().unwrap_or_default()),
                );
            }
        }
        for pair in StageName::topic_chain().windows(2) {
            if let (Some(a), Some(b)) = (raw.get(pair[0].as_str()), raw.get(pair[1].as_str())) {
                if !a.outputs.iter().any(|t| b.inputs.contains(t)) {
                    self.error(
                        &format!("stages.{}.inputs", pair[1]),
                        format!(
                            "stage '{}' reads none of the topics stage '{}' writes",
                            pair[1], pair[0]
                        ),
                        format!("make one of {:?} an input of '{}'", a.outputs, pair[1]),
                    );
                }
            }
        }
        out
    }

    fn stage_topic(
        &mut self,
        path: &str,
        stage: &str,
        what: &str,
        topic: &str,
        topics: &BTreeMap<String, TopicSpec>,
        roles: &[TopicRole],
    ) {
        match topics.get(topic) {
            None => {
                self.error(
                    path,
                    format!("stage '{stage}' {what} '{topic}' is not a defined topic"),
                    "add it under `topics:` or correct the name",
                );
            }
            Some(t) if !roles.contains(&t.role) => {
                self.error(
                    path,
                    format!("stage '{stage}' {what} '{topic}' has role {:?}", t.role),
                    format!("a {stage} {what} must have a role among {roles:?}"),
                );
            }
            Some(_) => {}
        }
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

/// `ZPD`, `PID-40`.
fn valid_hl7_path(p: &str) -> bool {
    let (seg, field) = match p.split_once('-') {
        Some((s, f)) => (s, Some(f)),
        None => (p, None),
    };
    seg.len() == 3
        && seg
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && seg.as_bytes()[0].is_ascii_uppercase()
        && field
            .is_none_or(|f| !f.is_empty() && f.len() <= 4 && f.bytes().all(|b| b.is_ascii_digit()))
}

/// `Patient.name.given`, `Patient.extension(http://x/y).valueCode`.
fn valid_fhir_path(p: &str) -> bool {
    let mut parts = split_fhir_path(p).into_iter();
    let Some(root) = parts.next() else {
        return false;
    };
    let element = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    root.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && root.chars().all(|c| c.is_ascii_alphanumeric())
        && parts.all(
            |s| match s.strip_suffix(')').and_then(|s| s.split_once('(')) {
                Some((name, url)) => {
                    matches!(name, "extension" | "modifierExtension")
                        && !url.is_empty()
                        && url
                            .chars()
                            .all(|c| c.is_ascii_graphic() && c != '(' && c != ')')
                }
                None => element(s),
            },
        )
}

/// Splits a FHIR path at dots outside parentheses (extension URLs hold dots).
pub fn split_fhir_path(p: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in p.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                out.push(&p[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&p[start..]);
    out
}

/// For a stage that cannot work without a state table: what the table is
/// for, and how to add it.
fn missing_state_fix(stage: StageName) -> Option<(&'static str, &'static str)> {
    if stage.state_need() == StateNeed::Optional {
        return None;
    }
    match stage {
        StageName::Normalize => Some((
            "its patient index",
            "add `state: normalize.patient-index` and define that topic with `role: state, cleanup: compact`",
        )),
        StageName::ConsentLedger => Some((
            "the consent table",
            "add `state: consent.state` and define that topic with `role: consent-state, cleanup: compact`",
        )),
        _ => None,
    }
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

fn parse_retention(s: &str) -> Option<Retention> {
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

/// The dotted paths of a record schema's leaf fields (`demographics.city`).
/// Arrays of records contribute their item fields (`codes.system`); arrays of
/// scalars are one path.
pub fn field_paths(schema: &apache_avro::Schema) -> BTreeSet<String> {
    use apache_avro::Schema;
    fn walk(s: &Schema, prefix: &str, out: &mut BTreeSet<String>) {
        match s {
            Schema::Record(r) => {
                for f in &r.fields {
                    let p = if prefix.is_empty() {
                        f.name.clone()
                    } else {
                        format!("{prefix}.{}", f.name)
                    };
                    walk(&f.schema, &p, out);
                }
            }
            Schema::Union(u) => {
                let records: Vec<_> = u
                    .variants()
                    .iter()
                    .filter(|v| !matches!(v, Schema::Null))
                    .collect();
                match records.as_slice() {
                    [one] => walk(one, prefix, out),
                    _ => {
                        out.insert(prefix.to_string());
                    }
                }
            }
            Schema::Array(a) if matches!(*a.items, Schema::Record(_)) => {
                walk(&a.items, prefix, out)
            }
            _ => {
                out.insert(prefix.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(schema, "", &mut out);
    out
}

#[cfg(test)]
mod tests;
