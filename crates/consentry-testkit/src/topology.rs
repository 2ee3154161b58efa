//! The repository root and the topology it ships (`topology.yaml`), the one
//! most tests run under.

use consentry_core::topology::{shipped, Topology};
use std::path::PathBuf;

/// The workspace root: where `topology.yaml`, `schemas/` and `deploy/` are,
/// and the working directory of every spawned `consentry`.
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The text of the shipped `topology.yaml`, for tests that edit it.
pub fn shipped_topology_text() -> &'static str {
    shipped::TEXT
}

/// The shipped topology, parsed and validated.
pub fn shipped_topology() -> Topology {
    shipped::topology()
}
