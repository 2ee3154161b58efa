//! Fixtures the stages' in-crate tests share: the shipped topology, an
//! in-memory token vault, and the services built over it.

use crate::Services;
use consentry_crypto::{
    random_token, Environment, KeyRing, TokenVault, VaultRefusal, VaultUnavailable,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The repository's `topology.yaml`, as shipped.
pub(crate) use consentry_core::topology::shipped::TEXT as SHIPPED_TOPOLOGY;

/// What a registered token stands for: (domain, subject, identity).
type Registration = (String, String, Vec<u8>);

/// A token vault in memory, for in-process tests (the real one, with its
/// stores, is tested in consentry-vault and through the binary).
#[derive(Default)]
pub(crate) struct MemoryVault {
    /// (subject, domain) to the random token issued for it.
    pub links: Mutex<HashMap<(String, String), String>>,
    /// Every token registered, to what it stands for.
    pub registered: Mutex<HashMap<String, Registration>>,
    /// Every (subject, domain) shredded, in order.
    pub shredded: Mutex<Vec<(String, String)>>,
    /// Every (subject, domain) reinstated, in order.
    pub reinstated: Mutex<Vec<(String, String)>>,
    /// Shredded and not reinstated since: nothing is created for them.
    pub tombstones: Mutex<std::collections::HashSet<(String, String)>>,
    pub down: std::sync::atomic::AtomicBool,
}

impl MemoryVault {
    fn refuse(&self, subject: &str, domain: &str) -> Result<(), VaultRefusal> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(VaultUnavailable("memory vault is down".into()).into());
        }
        if self
            .tombstones
            .lock()
            .unwrap()
            .contains(&(subject.into(), domain.into()))
        {
            return Err(VaultRefusal::Shredded);
        }
        Ok(())
    }
}

impl TokenVault for MemoryVault {
    fn subject_token(
        &self,
        domain: &str,
        subject: &str,
        _identity: &[u8],
    ) -> Result<String, VaultRefusal> {
        self.refuse(subject, domain)?;
        let mut links = self.links.lock().unwrap();
        Ok(links
            .entry((domain.into(), subject.into()))
            .or_insert_with(|| random_token(domain, 1).unwrap())
            .clone())
    }

    fn register(
        &self,
        token: &str,
        domain: &str,
        subject: &str,
        identity: &[u8],
    ) -> Result<(), VaultRefusal> {
        self.refuse(subject, domain)?;
        self.registered.lock().unwrap().insert(
            token.into(),
            (domain.into(), subject.into(), identity.to_vec()),
        );
        Ok(())
    }

    fn shred(&self, subject: &str, domain: &str) -> Result<usize, VaultUnavailable> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(VaultUnavailable("memory vault is down".into()));
        }
        let mut n = usize::from(
            self.links
                .lock()
                .unwrap()
                .remove(&(domain.into(), subject.into()))
                .is_some(),
        );
        let mut reg = self.registered.lock().unwrap();
        let before = reg.len();
        reg.retain(|_, (d, s, _)| !(d == domain && s == subject));
        n += before - reg.len();
        self.shredded
            .lock()
            .unwrap()
            .push((subject.into(), domain.into()));
        self.tombstones
            .lock()
            .unwrap()
            .insert((subject.into(), domain.into()));
        Ok(n)
    }

    fn reinstate(&self, subject: &str, domain: &str) -> Result<(), VaultUnavailable> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(VaultUnavailable("memory vault is down".into()));
        }
        self.tombstones
            .lock()
            .unwrap()
            .remove(&(subject.into(), domain.into()));
        self.reinstated
            .lock()
            .unwrap()
            .push((subject.into(), domain.into()));
        Ok(())
    }
}

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
