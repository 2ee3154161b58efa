//! What Consentry's tests share, so each suite states only what it checks:
//! the test environment on the local stack ([`Env`]: a topic prefix of its
//! own, `consentry` children with their logs in files), the shipped
//! topology, `StageInput` builders, an in-memory token vault, certificates
//! for TLS tests, leak scanning, and [`assert_stage_contract`], the checks
//! every stage's outcomes must pass. Nothing here starts a server.

pub mod assets;
pub mod consent_feed;
mod contract;
mod env;
pub mod inputs;
mod kafka;
pub mod leak;
pub mod pki;
mod process;
mod topology;
mod vault;

pub use assets::test_asset_dir;
pub use consentry_crypto::memory_vault::MemoryVault;
pub use contract::{assert_stage_contract, ContractInput};
pub use env::{Env, SESSION_TIMEOUT_MS};
pub use leak::{find_leak, mask_ids, record_bytes};
pub use process::{free_port, metric_value, scrape, signal, stage_row, wait_exit, Children};
pub use topology::{root, shipped_topology, shipped_topology_text};
pub use vault::{expected_outputs, VaultServer};
