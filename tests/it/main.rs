//! Consentry's integration tests, linked into one binary: each module is a
//! former `tests/<name>.rs` suite, run against the local stack (broker,
//! schema registry, PostgreSQL) and the `consentry` binary through
//! `consentry_testkit::Env`. Run one suite with `cargo test --test it --
//! <module>::`. Two suites have a binary of their own: the vault's network
//! abuse (`tests/vault_network/`) measures latency and needs the machine,
//! and the in-process runner's panics (`tests/panic/`) install a
//! process-wide panic hook that would silence the others' failures.

mod audit;
mod audit_checkpoints;
mod bad_input;
mod consent;
mod crash;
mod dashboards;
mod deidentify;
mod deploy;
mod keys_cli;
mod network_clients;
mod patient_index;
mod pg_recovery;
mod pipeline;
mod produce;
mod prometheus;
mod quarantine;
mod quarantine_bulk;
mod registry;
mod replay;
mod replay_apply;
mod replay_policies;
mod report;
mod shred;
mod stage_contract;
mod synth_cli;
mod table;
mod third_party_feed;
mod tidy;
mod topology_cli;
mod vault_api;
