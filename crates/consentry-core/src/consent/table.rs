//! The consent table: its key layout, the states an entry can be in, what
//! an entry holds, and the capture events a portal or CRM sends.

use super::decide::provision_decision;
use crate::envelope::{ConsentProvision, Text};
use serde::{Deserialize, Serialize};

/// The channel of a consent that covers every channel.
pub const ANY_CHANNEL: &str = "*";

/// Key prefix of the consent table's entries.
pub const KEY_PREFIX: &str = "consent/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Captured,
    Validated,
    Active,
    Expired,
    Revoked,
    Superseded,
}

impl ConsentStatus {
    pub const ALL: [ConsentStatus; 6] = [
        ConsentStatus::Captured,
        ConsentStatus::Validated,
        ConsentStatus::Active,
        ConsentStatus::Expired,
        ConsentStatus::Revoked,
        ConsentStatus::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Captured => "captured",
            ConsentStatus::Validated => "validated",
            ConsentStatus::Active => "active",
            ConsentStatus::Expired => "expired",
            ConsentStatus::Revoked => "revoked",
            ConsentStatus::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<ConsentStatus> {
        ConsentStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The states a new version may start in.
    pub fn is_entry(self) -> bool {
        matches!(
            self,
            ConsentStatus::Captured | ConsentStatus::Validated | ConsentStatus::Active
        )
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ConsentStatus::Expired | ConsentStatus::Revoked | ConsentStatus::Superseded
        )
    }

    /// A FHIR Consent's `status`, most restrictive where R4 is vague:
    /// `inactive`, `rejected` and `entered-in-error` all stop the consent.
    pub fn from_fhir(status: &str) -> Option<ConsentStatus> {
        Some(match status {
            "draft" => ConsentStatus::Captured,
            "proposed" => ConsentStatus::Validated,
            "active" => ConsentStatus::Active,
            "inactive" | "rejected" | "entered-in-error" => ConsentStatus::Revoked,
            _ => return None,
        })
    }
}

/// A portal's or CRM's consent capture (`schemas/consent_event.avsc`).
/// Carries the subject's identifier: `consent.events` is an input of the
/// boundary, like the EHR feeds; the table holds only the pseudonym.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConsentEvent {
    pub consent_id: String,
    pub subject_system: String,
    pub subject_value: String,
    pub purpose: String,
    pub channel: String,
    /// A `ConsentStatus`, or `erased`.
    pub state: String,
    pub version: i64,
    pub effective_ms: i64,
    pub expires_ms: Option<i64>,
    pub source: String,
    pub captured_by: Option<String>,
    pub notice_version: Option<String>,
}

impl std::fmt::Debug for ConsentEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The subject's identifier never reaches a log or a test's output.
        f.debug_struct("ConsentEvent")
            .field("consent_id", &self.consent_id)
            .field("purpose", &self.purpose)
            .field("channel", &self.channel)
            .field("state", &self.state)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The state a capture asks for that removes the entry (a tombstone).
pub const ERASED: &str = "erased";

/// Whether one version may move from `from` to `to`.
pub fn same_version_step(from: ConsentStatus, to: ConsentStatus) -> bool {
    use ConsentStatus::*;
    matches!(
        (from, to),
        (Captured, Validated)
            | (Validated, Active)
            | (Captured | Validated, Revoked)
            | (Active, Expired | Revoked | Superseded)
            // Withdrawing a consent that has lapsed or been replaced still
            // withdraws it: keys shredded, destinations told.
            | (Expired | Superseded, Revoked)
    )
}

/// One key's value in the consent table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEntry {
    pub status: ConsentStatus,
    /// The document's own version (FHIR `meta.versionId`, a capture's
    /// version), where the source gives one.
    #[serde(default)]
    pub version: Option<i64>,
    /// When the document was last updated (FHIR `meta.lastUpdated`): its
    /// order among its own versions when they carry no version number.
    #[serde(default)]
    pub updated_ms: Option<i64>,
    /// When the document was issued (FHIR `dateTime`): the order among its
    /// own versions when they carry neither version nor update time.
    #[serde(default)]
    pub issued_ms: Option<i64>,
    /// The consent document or capture (`Consent/<id>`, a portal's id).
    pub reference: Text,
    /// The root decision: `false` for a consent that refuses the purpose.
    pub permit: bool,
    /// When the source says this state took effect (never after it
    /// arrived): the order among documents.
    pub effective_ms: i64,
    /// Whether `effective_ms` is the document's own (else its arrival).
    #[serde(default = "dated_by_default")]
    pub dated: bool,
    pub period_start_ms: Option<i64>,
    /// Expiry: no event processed after it is allowed.
    pub period_end_ms: Option<i64>,
    /// Nested provisions (FHIR), in document order with their depth.
    #[serde(default)]
    pub provisions: Vec<ConsentProvision>,
    pub source: Text,
    #[serde(default)]
    pub captured_by: Option<Text>,
    #[serde(default)]
    pub notice_version: Option<Text>,
    /// The revision this one replaced, if any (superseded or re-granted).
    #[serde(default)]
    pub previous_revision: Option<Text>,
    /// When the change was appended to `consent.events` (its broker time):
    /// the start of the revocation latency.
    pub received_ms: i64,
}

impl ConsentEntry {
    pub fn encode(&self) -> Vec<u8> {
        // A struct of plain fields: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<ConsentEntry> {
        serde_json::from_slice(bytes).ok()
    }

    /// `<reference>@<revision>/<channel>`, as audit and disclosure records
    /// name it, and as route's re-check compares it.
    pub fn basis(&self, channel: &str) -> Text {
        Text::from(format!(
            "{}@{}/{}",
            self.reference,
            self.revision(),
            channel
        ))
    }

    /// How this version is named: `v<version>`, else `t<updated ms>`,
    /// else `d<issued ms>`, else `e<effective ms>`.
    pub fn revision(&self) -> Text {
        revision_label(
            self.version,
            self.updated_ms,
            self.issued_ms,
            self.effective_ms,
        )
    }

    /// Whether this entry refuses outright: revoked, or a consent that
    /// denies at its root.
    pub fn is_refusal(&self) -> bool {
        self.status == ConsentStatus::Revoked || !self.permit
    }

    /// Whether this entry withdraws consent for `code` altogether: a
    /// refusal, or a provision that denies the purpose whatever the data
    /// (a class-limited deny narrows, it does not withdraw).
    pub fn refuses(&self, code: &str) -> bool {
        self.is_refusal() || !provision_decision(self.permit, &self.provisions, code, &[]).0
    }
}

fn dated_by_default() -> bool {
    true
}

pub(super) fn revision_label(
    version: Option<i64>,
    updated_ms: Option<i64>,
    issued_ms: Option<i64>,
    effective_ms: i64,
) -> Text {
    Text::from(match (version, updated_ms, issued_ms) {
        (Some(v), _, _) => format!("v{v}"),
        (None, Some(t), _) => format!("t{t}"),
        (None, None, Some(t)) => format!("d{t}"),
        (None, None, None) => format!("e{effective_ms}"),
    })
}

pub fn table_key(subject_token: &str, code: &str, channel: &str) -> String {
    format!("{KEY_PREFIX}{subject_token}/{code}/{channel}")
}

/// `(subject pseudonym, code, channel)` of a table key.
pub fn parse_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let mut it = rest.rsplitn(3, '/');
    let channel = it.next()?;
    let code = it.next()?;
    let subject = it.next()?;
    Some((subject, code, channel))
}
