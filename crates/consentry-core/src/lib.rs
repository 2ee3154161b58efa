//! Consentry's shared vocabulary, with no I/O: the validated topology, the
//! canonical envelope and audit record with their Avro encodings, the
//! idempotency and correlation keys, the reason codes, and the contract a
//! pure stage implements.
//!
//! Architecture invariant: this crate never talks to Kafka, a registry, a
//! clock or a file other than what its caller hands it.

pub mod audit;
pub mod avro;
pub mod chain;
pub mod consent;
pub mod destination;
pub mod disclosure;
pub mod envelope;
pub mod headers;
pub mod keys;
pub mod policy;
pub mod reason;
pub mod stage;
pub mod topology;

pub use audit::{AuditRecord, Decision};
pub use envelope::CanonicalEvent;
pub use reason::ReasonCode;
pub use stage::StageName;
