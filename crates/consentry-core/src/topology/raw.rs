//! What serde reads from topology.yaml before any check (`deny_unknown_fields`
//! everywhere), and the index from a dotted path to its line and column, so
//! that the checks can point at the right line.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

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

/// Maps dotted paths (`stages.normalize.inputs[0]`) to their line and column
/// in the YAML text, so that semantic errors can point at the right line.
pub(super) struct PathIndex {
    marks: HashMap<String, (usize, usize)>,
}

impl PathIndex {
    pub(super) fn build(text: &str) -> PathIndex {
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
    pub(super) fn locate(&self, path: &str) -> (usize, usize) {
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
