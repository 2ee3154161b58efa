//! The audit record: one stage's decision about one input. Holds ids,
//! codes, field paths and method names; never a field value.

use crate::envelope::Text;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub audit_id: Text,
    pub stage: Text,
    pub policy_version: Text,
    pub correlation_id: Option<Text>,
    pub event_id: Option<Text>,
    pub idempotency_key: Text,
    pub decision: Text,
    pub reason_code: Text,
    pub placeholder: bool,
    pub purpose: Option<Text>,
    pub source_topic: Text,
    pub source_partition: i32,
    pub source_offset: i64,
    pub outputs: Vec<AuditOutput>,
    pub transformations: Vec<Transformation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOutput {
    pub topic: Text,
    pub idempotency_key: Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transformation {
    pub path: Text,
    pub method: Text,
}

/// Decisions an audit record can carry.
pub mod decision {
    pub const FORWARD: &str = "forward";
    pub const FAN_OUT: &str = "fan_out";
    pub const QUARANTINE: &str = "quarantine";
    /// A record held until its subject resolved, now sent on.
    pub const REDRIVE: &str = "redrive";
}
