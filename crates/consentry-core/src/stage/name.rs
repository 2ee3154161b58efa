//! The six stages by name, in pipeline order, with the contract each one
//! keeps with the topology: which topic roles it reads and writes, whether
//! it keeps a state table of its own, and whether it reads the consent
//! table. Topology validation, the runtime and the CLI ask this enum rather
//! than spelling stage names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::topology::TopicRole;

/// A stage, as named in topology.yaml, audit records and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageName {
    /// Consent captures and FHIR Consents -> the consent table.
    ConsentLedger,
    /// Source feeds (HL7 v2, FHIR) -> canonical envelopes.
    Normalize,
    /// One envelope per purpose the subject consented to.
    ConsentGate,
    /// The purpose's de-identification profile.
    DeIdentify,
    /// Identifiers replaced by vault tokens.
    Tokenize,
    /// To the purpose's destination, with a disclosure record.
    Route,
}

/// How a stage relates to a state table (`StageSpec::state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateNeed {
    /// The stage cannot work without its table (the topology must name it).
    Required,
    /// The topology may give the stage a table; it works without one.
    Optional,
}

impl StageName {
    /// Every stage, in pipeline order (the consent ledger first: its table
    /// is what the gate decides on).
    pub const ALL: [StageName; 6] = [
        StageName::ConsentLedger,
        StageName::Normalize,
        StageName::ConsentGate,
        StageName::DeIdentify,
        StageName::Tokenize,
        StageName::Route,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            StageName::ConsentLedger => "consent-ledger",
            StageName::Normalize => "normalize",
            StageName::ConsentGate => "consent-gate",
            StageName::DeIdentify => "de-identify",
            StageName::Tokenize => "tokenize",
            StageName::Route => "route",
        }
    }

    /// The stage named `name`, if there is one.
    pub fn parse(name: &str) -> Option<StageName> {
        StageName::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The names of every stage, in pipeline order, joined by `", "`.
    pub fn joined() -> String {
        StageName::ALL.map(StageName::as_str).join(", ")
    }

    /// The stages whose topics chain one into the next: every stage but the
    /// consent ledger, which feeds the gate through its table.
    pub fn topic_chain() -> &'static [StageName] {
        &StageName::ALL[1..]
    }

    /// The roles an input topic of this stage may have.
    pub fn input_roles(self) -> &'static [TopicRole] {
        match self {
            StageName::Normalize => &[TopicRole::Source],
            StageName::ConsentLedger => &[TopicRole::ConsentEvents],
            _ => &[TopicRole::Internal],
        }
    }

    /// The roles an output topic of this stage may have.
    pub fn output_roles(self) -> &'static [TopicRole] {
        match self {
            StageName::Route => &[TopicRole::Destination, TopicRole::Disclosures],
            _ => &[TopicRole::Internal],
        }
    }

    /// The role this stage's own state table must have: only the consent
    /// ledger writes the consent table.
    pub fn state_role(self) -> TopicRole {
        match self {
            StageName::ConsentLedger => TopicRole::ConsentState,
            _ => TopicRole::State,
        }
    }

    /// Whether the stage must have a state table of its own: normalize's
    /// patient index, the consent ledger's consent table.
    pub fn state_need(self) -> StateNeed {
        match self {
            StageName::ConsentLedger | StageName::Normalize => StateNeed::Required,
            _ => StateNeed::Optional,
        }
    }

    /// Whether the stage reads the consent table, and what it does with it
    /// (for messages: "stage 'x' does not read the consent table it ...").
    pub fn consent_table_use(self) -> Option<&'static str> {
        match self {
            StageName::ConsentGate => Some("decides on"),
            StageName::Route => Some("re-checks"),
            StageName::Tokenize => Some("invalidates its vault caches by"),
            _ => None,
        }
    }

    /// Whether the stage reads the consent table.
    pub fn reads_consent_table(self) -> bool {
        self.consent_table_use().is_some()
    }

    /// Whether the stage calls the token vault (the consent ledger to shred
    /// a withdrawn subject's tokens, de-identify and tokenize for tokens).
    pub fn uses_vault(self) -> bool {
        matches!(
            self,
            StageName::ConsentLedger | StageName::DeIdentify | StageName::Tokenize
        )
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: tables print these with widths.
        f.pad(self.as_str())
    }
}

/// A name that is not one of the six stages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage '{name}'; use one of: {}", StageName::joined())]
pub struct UnknownStage {
    pub name: String,
}

impl FromStr for StageName {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<StageName, UnknownStage> {
        StageName::parse(s).ok_or_else(|| UnknownStage {
            name: s.to_string(),
        })
    }
}

impl AsRef<str> for StageName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for StageName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StageName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for StageName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StageName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StageName, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "clap")]
impl clap::ValueEnum for StageName {
    fn value_variants<'a>() -> &'a [Self] {
        &StageName::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pad_in_tables_like_the_strings_they_replace() {
        use crate::audit::Decision;
        use crate::ReasonCode;
        assert_eq!(format!("{:<16}|", StageName::Route), "route           |");
        assert_eq!(format!("{:>8}|", Decision::Deny), "    deny|");
        assert_eq!(
            format!("{:<20}|", ReasonCode::SchemaDrift),
            "schema_drift        |"
        );
    }

    #[test]
    fn names_round_trip_in_pipeline_order() {
        let names: Vec<&str> = StageName::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "consent-ledger",
                "normalize",
                "consent-gate",
                "de-identify",
                "tokenize",
                "route"
            ]
        );
        for s in StageName::ALL {
            assert_eq!(s.to_string().parse::<StageName>(), Ok(s));
            let json = serde_json::to_string(&s).expect("a name serializes");
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<StageName>(&json).ok(), Some(s));
        }
    }

    #[test]
    fn an_unknown_name_is_refused_naming_the_valid_ones() {
        let e = "gate".parse::<StageName>().expect_err("not a stage");
        assert_eq!(
            e.to_string(),
            "unknown stage 'gate'; use one of: consent-ledger, normalize, \
             consent-gate, de-identify, tokenize, route"
        );
        assert!(serde_json::from_str::<StageName>("\"gate\"").is_err());
    }

    #[test]
    fn contracts_match_the_shipped_pipeline() {
        let reads: Vec<StageName> = StageName::ALL
            .into_iter()
            .filter(|s| s.reads_consent_table())
            .collect();
        assert_eq!(
            reads,
            [
                StageName::ConsentGate,
                StageName::Tokenize,
                StageName::Route
            ]
        );
        assert_eq!(
            StageName::ConsentLedger.state_role(),
            TopicRole::ConsentState
        );
        assert_eq!(StageName::Normalize.state_need(), StateNeed::Required);
        assert_eq!(StageName::Route.state_need(), StateNeed::Optional);
        assert_eq!(StageName::topic_chain()[0], StageName::Normalize);
    }
}
