//! Fixtures the stages' in-crate tests share: the shipped topology, an
//! in-memory token vault, and the services built over it.

use crate::Services;
use consentry_crypto::{Environment, KeyRing};
use std::sync::Arc;

/// The repository's `topology.yaml`, as shipped.
pub(crate) use consentry_core::topology::shipped::TEXT as SHIPPED_TOPOLOGY;

pub(crate) use consentry_crypto::memory_vault::MemoryVault;

pub(crate) use consentry_core::topology::shipped::topology;

pub(crate) fn services(vault: Arc<MemoryVault>) -> Services {
    Services {
        keys: Some(Arc::new(KeyRing::from_key(
            Environment::NonProduction,
            [5; 32],
        ))),
        vault: Some(vault),
    }
}
