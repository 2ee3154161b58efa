//! A token vault in memory, for in-process tests (the real one, with its
//! stores, is tested in consentry-vault and through the binary): linkage
//! tokens, registrations, shredding with tombstones, reinstating, and a
//! switch that makes it unreachable.

use crate::{random_token, TokenVault, VaultRefusal, VaultUnavailable};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What a registered token stands for: (domain, subject, identity).
type Registration = (String, String, Vec<u8>);

/// A token vault in memory, for in-process tests (the real one, with its
/// stores, is tested in consentry-vault and through the binary).
#[derive(Default)]
pub struct MemoryVault {
    /// (subject, domain) to the random token issued for it.
    pub links: Mutex<HashMap<(String, String), String>>,
    /// Every token registered, to what it stands for.
    pub registered: Mutex<HashMap<String, Registration>>,
    /// Every (subject, domain) shredded, in order.
    pub shredded: Mutex<Vec<(String, String)>>,
    /// Every (subject, domain) reinstated, in order.
    pub reinstated: Mutex<Vec<(String, String)>>,
    /// Shredded and not reinstated since: nothing is created for them.
    pub tombstones: Mutex<HashSet<(String, String)>>,
    /// While set, every call fails as an unreachable vault would.
    pub down: AtomicBool,
}

impl MemoryVault {
    fn refuse(&self, subject: &str, domain: &str) -> Result<(), VaultRefusal> {
        if self.down.load(Ordering::SeqCst) {
            return Err(VaultUnavailable("memory vault is down".into()).into());
        }
        if self
            .tombstones
            .lock()
            .expect("memory vault lock")
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
        let mut links = self.links.lock().expect("memory vault lock");
        Ok(links
            .entry((domain.into(), subject.into()))
            .or_insert_with(|| random_token(domain, 1).expect("random token"))
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
        self.registered.lock().expect("memory vault lock").insert(
            token.into(),
            (domain.into(), subject.into(), identity.to_vec()),
        );
        Ok(())
    }

    fn shred(&self, subject: &str, domain: &str) -> Result<usize, VaultUnavailable> {
        if self.down.load(Ordering::SeqCst) {
            return Err(VaultUnavailable("memory vault is down".into()));
        }
        let mut n = usize::from(
            self.links
                .lock()
                .expect("memory vault lock")
                .remove(&(domain.into(), subject.into()))
                .is_some(),
        );
        let mut reg = self.registered.lock().expect("memory vault lock");
        let before = reg.len();
        reg.retain(|_, (d, s, _)| !(d == domain && s == subject));
        n += before - reg.len();
        self.shredded
            .lock()
            .expect("memory vault lock")
            .push((subject.into(), domain.into()));
        self.tombstones
            .lock()
            .expect("memory vault lock")
            .insert((subject.into(), domain.into()));
        Ok(n)
    }

    fn reinstate(&self, subject: &str, domain: &str) -> Result<(), VaultUnavailable> {
        if self.down.load(Ordering::SeqCst) {
            return Err(VaultUnavailable("memory vault is down".into()));
        }
        self.tombstones
            .lock()
            .expect("memory vault lock")
            .remove(&(subject.into(), domain.into()));
        self.reinstated
            .lock()
            .expect("memory vault lock")
            .push((subject.into(), domain.into()));
        Ok(())
    }
}
