//! Consentry's runtime: the one crate that owns Kafka.
//!
//! It consumes, calls a pure stage, produces the stage's outputs, audit
//! records and quarantine records, records handled inputs in the stage's
//! ledger, and commits input offsets — in one transaction per batch. It
//! also creates topics, registers schemas, serves metrics and handles
//! shutdown. Stages plug in through `consentry_core::stage::Stage`.
//!
//! Architecture invariant: no stage logic here; no record content in logs,
//! errors or metric labels.
//!
//! Errors: `anyhow` here as in the binary, not a typed error. What fails in
//! the runtime is operational (a broker, the registry, a file, a socket);
//! no caller branches on which: a failed batch is aborted and retried the
//! same way whatever the cause, and anything else ends the command with its
//! message. The closed vocabularies callers do act on are typed where they
//! arise: `codec::DecodeError` (a record's fault or the registry's),
//! `http::Refusal`, `http::HttpError`, `dedup::Seen`.

pub mod admin;
pub mod codec;
pub mod config;
pub mod dedup;
pub mod http;
pub mod inspect;
pub mod job;
pub mod kafka;
pub mod metrics;
pub mod panics;
pub mod produce;
pub mod registry;
pub mod runner;
pub mod security;
pub mod shutdown;
pub mod state;
pub mod table;

pub use config::Connection;
pub use metrics::Metrics;
/// The Kafka client, for tests and benches that drive a broker directly
/// (the binary and the other crates use this crate's API instead).
pub use rdkafka;
