//! The audit record: one stage's decision about one input. Holds ids,
//! codes, field paths and method names; never a field value.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub audit_id: String,
    pub stage: String,
    pub policy_version: String,
    pub correlation_id: Option<String>,
    pub event_id: Option<String>,
    pub idempotency_key: String,
    pub decision: String,
    pub reason_code: String,
    pub placeholder: bool,
    pub purpose: Option<String>,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub outputs: Vec<AuditOutput>,
    pub transformations: Vec<Transformation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOutput {
    pub topic: String,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transformation {
    pub path: String,
    pub method: String,
}

/// Decisions an audit record can carry.
pub mod decision {
    pub const FORWARD: &str = "forward";
    pub const FAN_OUT: &str = "fan_out";
    pub const QUARANTINE: &str = "quarantine";
    /// A record held until its subject resolved, now sent on.
    pub const REDRIVE: &str = "redrive";
}
