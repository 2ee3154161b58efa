//! The disclosure ledger's record (`schemas/disclosure.avsc`): what left,
//! for whom (as the subject's internal pseudonym), where, why and when.

use crate::envelope::Text;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosure {
    /// The idempotency key of the record written.
    pub disclosure_id: Text,
    pub subject_token: Text,
    pub purpose: Text,
    pub destination: Text,
    pub topic: Text,
    pub event_id: Option<Text>,
    pub event_type: Text,
    pub correlation_id: Text,
    pub event_time_ms: Option<i64>,
    pub policy_version: Text,
    pub profile: Text,
    pub phi: bool,
    pub consent_reference: Option<Text>,
    pub consent_version: Option<Text>,
    /// How the destination knows the subject: the record's `subject_key`
    /// as written (a token of the purpose's domain), if it carried one.
    pub subject_reference: Option<Text>,
    /// The allowlisted fields the record carried (those holding a value).
    pub fields: Vec<Text>,
    /// Set by the runtime as it writes the record.
    pub disclosed_at_ms: i64,
}
