//! `topology.yaml`, format version 1: the single source of truth for topics,
//! stages, purposes, destinations, field disclosure classes and allowlists.
//!
//! Loading has two steps. Serde reads the file into `raw` structs with
//! `deny_unknown_fields`; then `validate` checks every cross-reference and
//! builds a `Topology` that cannot be invalid. Every error names the file,
//! the line and what to change; all errors are reported at once.
//!
//! `raw` holds the serde structs and the line index, `validate` the
//! checks, `model` the validated types, `error` what a failed load
//! reports, `paths` the element and field paths the checks and stages share.

use std::path::Path;

mod error;
mod model;
mod paths;
mod raw;
mod validate;

pub use error::{TopologyError, TopologyErrors};
pub use model::*;
pub use paths::{field_paths, split_fhir_path};

use error::{serde_fix, strip_location};
use raw::PathIndex;
use validate::Validator;

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

impl Topology {
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

#[cfg(test)]
mod tests;

/// The topology this repository ships (`topology.yaml`), for tests, benches
/// and fuzz targets: the one place that embeds it.
#[cfg(any(test, feature = "test-support"))]
pub mod shipped {
    use super::Topology;

    /// The file's text.
    pub const TEXT: &str = include_str!("../../../../topology.yaml");

    /// The file, validated.
    pub fn topology() -> Topology {
        Topology::parse("topology.yaml", TEXT)
            .unwrap_or_else(|e| panic!("the shipped topology.yaml does not load: {e}"))
    }
}
