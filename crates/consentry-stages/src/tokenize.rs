//! The tokenize stage: what de-identify left of a subject's identity
//! leaves as tokens of the purpose's domain, or not at all.
//!
//! By the purpose's `linkage`:
//! - `deterministic` (`limited-data-set`, `identified-tokenized` only; their
//!   outputs remain PHI): the subject key, every identifier, merge link,
//!   direct demographic (names, street, phone, fax, e-mail, web address)
//!   and contact becomes `tok:<domain>:v<version>:…`, an HMAC under the
//!   domain's key derived once at start-up. For `identified-tokenized`
//!   each token is also registered with the vault, so a caller with the
//!   right scope can resolve it (patient support must reach the patient);
//!   a limited data set's tokens are never resolvable.
//! - `random` (`safe-harbor`): the subject key becomes the subject's
//!   random linkage token in the domain, issued and kept by the vault (the
//!   same token for the same subject, so records join within the purpose
//!   and never outside it); the identity it stands for is the subject's
//!   own identifier, sealed in the vault.
//! - `none`: no subject key, no identifiers.
//!
//! Whatever the linkage, nothing that is not a token of the domain leaves
//! in an identifier, link, contact or direct demographic field (fail
//! closed: a field de-identify should have removed is removed here too).
//! Vault answers are cached per process (bounded), so the vault sees each
//! subject once per domain, not once per record; a change of the subject's
//! consent (this stage tails the consent table, before every batch) drops
//! the subject's cached answers in the domains of that consent's purposes,
//! so once the change has reached this stage the next record asks the
//! vault, which refuses: the record is denied (`subject_shredded`). In the
//! moment between the shred and that, a cached token may still go out on a
//! record, which route's re-check of the same table then stops; nothing is
//! ever re-created in the vault. A vault that does not answer makes the
//! batch abort and retry; nothing is written for it.

use crate::deidentify::direct_demographics;
use crate::forward::{event_id, Forwarder};
use crate::BuildError;
use consentry_core::audit::Transformation;
use consentry_core::consent;
use consentry_core::consent::ConsentReason;
use consentry_core::envelope::Text;
use consentry_core::stage::StageName;
use consentry_core::stage::{Outcome, Owns, Stage, StageInput, StateView};
use consentry_core::topology::{Linkage, Profile, Topology};
use consentry_core::{CanonicalEvent, ReasonCode};
use consentry_crypto::{KeyRing, TokenVault, Tokenizer, VaultRefusal, VaultUnavailable};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub const NAME: StageName = StageName::Tokenize;

/// Entries per cache before it is cleared (about 100 bytes each).
const CACHE_LIMIT: usize = 1 << 18;

/// The identifier "system" of a subject key's deterministic token.
pub const SUBJECT_SYSTEM: &str = "consentry:subject";

/// One purpose's tokenization, prepared once.
struct Policy {
    domain: String,
    linkage: Linkage,
    tokenizer: Option<Tokenizer>,
    /// Register deterministic tokens with the vault (identified-tokenized).
    register: bool,
    params: String,
}

pub struct Tokenize {
    fwd: Forwarder,
    policies: HashMap<String, Policy>,
    vault: Option<Arc<dyn TokenVault>>,
    subject_system: Text,
    /// Consent code -> the token domains of its purposes: what a change of
    /// a subject's consent invalidates.
    domains_of_code: HashMap<String, Vec<String>>,
    /// (domain, subject pseudonym) -> linkage token.
    links: Mutex<HashMap<(String, Text), String>>,
    /// Deterministic tokens already registered with the vault, with the
    /// (domain, subject pseudonym) they were registered for.
    registered: Mutex<HashMap<String, (String, Text)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A cache: whatever a panicking holder left is still a valid cache.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key a subject's cached answers are kept under: its pseudonym (what
/// the consent table names it by), else its subject key.
fn cache_subject(ev: &CanonicalEvent) -> Text {
    ev.subject_token
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| ev.subject_key.clone())
}

impl Tokenize {
    /// Fails when a purpose needs the key ring or the vault and it is not
    /// given.
    pub fn new(
        topology: &Topology,
        keys: Option<&KeyRing>,
        vault: Option<Arc<dyn TokenVault>>,
    ) -> Result<Tokenize, BuildError> {
        let mut policies = HashMap::new();
        for p in topology.purposes.values() {
            let register = p.profile == Profile::IdentifiedTokenized;
            let tokenizer = match p.linkage {
                Linkage::Deterministic => {
                    let ring = keys.ok_or_else(|| BuildError::DeterministicTokensNeedKeys {
                        purpose: p.name.clone(),
                    })?;
                    Some(Tokenizer::new(ring, &p.token_domain).map_err(|source| {
                        BuildError::PurposeTokenizer {
                            purpose: p.name.clone(),
                            source,
                        }
                    })?)
                }
                _ => None,
            };
            if (register || p.linkage == Linkage::Random) && vault.is_none() {
                return Err(BuildError::PurposeNeedsVault {
                    purpose: p.name.clone(),
                });
            }
            let params = match &tokenizer {
                Some(t) => format!("domain={},version={}", p.token_domain, t.active_version()),
                None => format!("domain={}", p.token_domain),
            };
            policies.insert(
                p.name.clone(),
                Policy {
                    domain: p.token_domain.clone(),
                    linkage: p.linkage,
                    tokenizer,
                    register,
                    params,
                },
            );
        }
        let mut domains_of_code: HashMap<String, Vec<String>> = HashMap::new();
        for p in topology.purposes.values() {
            domains_of_code
                .entry(p.consent_code.clone())
                .or_default()
                .push(p.token_domain.clone());
        }
        Ok(Tokenize {
            fwd: Forwarder::new(NAME, topology),
            policies,
            vault,
            subject_system: topology.identity.subject_system.as_str().into(),
            domains_of_code,
            links: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
        })
    }

    fn vault(&self) -> Result<&dyn TokenVault, VaultRefusal> {
        self.vault
            .as_deref()
            .ok_or_else(|| VaultUnavailable("no vault configured".into()).into())
    }

    /// The subject's random linkage token in the policy's domain.
    fn linkage_token(&self, policy: &Policy, ev: &CanonicalEvent) -> Result<String, VaultRefusal> {
        let cache_key = (policy.domain.clone(), cache_subject(ev));
        if let Some(t) = lock(&self.links).get(&cache_key) {
            return Ok(t.clone());
        }
        // What the token stands for: the subject's own identifier.
        let identity = ev
            .identifiers
            .iter()
            .find(|i| i.system == self.subject_system)
            .map_or_else(
                || format!("{SUBJECT_SYSTEM}|{}", ev.subject_key),
                |i| format!("{}|{}", i.system, i.value),
            );
        let token =
            self.vault()?
                .subject_token(&policy.domain, &ev.subject_key, identity.as_bytes())?;
        let mut links = lock(&self.links);
        if links.len() >= CACHE_LIMIT {
            links.clear();
        }
        links.insert(cache_key, token.clone());
        Ok(token)
    }

    /// Registers `token` for the identity `system|value` with the vault,
    /// once per process.
    fn register(
        &self,
        policy: &Policy,
        ev: &CanonicalEvent,
        token: &str,
        system: &str,
        value: &str,
    ) -> Result<(), VaultRefusal> {
        if lock(&self.registered).contains_key(token) {
            return Ok(());
        }
        let identity = format!("{system}|{value}");
        self.vault()?
            .register(token, &policy.domain, &ev.subject_key, identity.as_bytes())?;
        let mut registered = lock(&self.registered);
        if registered.len() >= CACHE_LIMIT {
            registered.clear();
        }
        registered.insert(
            token.to_string(),
            (policy.domain.clone(), cache_subject(ev)),
        );
        Ok(())
    }

    /// Drops what is cached of `subject` in the domains of `code`'s purposes.
    fn forget(&self, subject: &str, code: &str) {
        let Some(domains) = self.domains_of_code.get(code) else {
            return;
        };
        let mut links = lock(&self.links);
        for d in domains {
            links.remove(&(d.clone(), Text::from(subject)));
        }
        drop(links);
        lock(&self.registered).retain(|_, (d, s)| !(s.as_str() == subject && domains.contains(d)));
    }

    /// `ev` with every identity field tokenized or removed, and the steps.
    fn apply(
        &self,
        ev: &CanonicalEvent,
        policy: &Policy,
    ) -> Result<(CanonicalEvent, Vec<Transformation>), VaultRefusal> {
        let mut out = ev.clone();
        let mut steps = Vec::new();
        match (policy.linkage, &policy.tokenizer) {
            (Linkage::Deterministic, Some(t)) => {
                // Each value becomes its token; registered when the
                // purpose may resolve it.
                let tokenize = |system: &str, value: &mut Text| -> Result<(), VaultRefusal> {
                    if value.is_empty() {
                        return Ok(());
                    }
                    let token = t.deterministic(system, value);
                    if policy.register {
                        self.register(policy, ev, &token, system, value)?;
                    }
                    *value = token.as_str().into();
                    Ok(())
                };
                if !out.subject_key.is_empty() {
                    let mut key = out.subject_key.clone();
                    tokenize(SUBJECT_SYSTEM, &mut key)?;
                    out.subject_key = key;
                    steps.push(("subject_key", "deterministic_token"));
                }
                for i in out.identifiers.iter_mut() {
                    let system = i.system.clone();
                    tokenize(&system, &mut i.value)?;
                }
                for l in out.links.iter_mut() {
                    let system = l.system.clone();
                    tokenize(&system, &mut l.value)?;
                }
                for c in out.contacts.iter_mut() {
                    for (path, v) in [
                        ("contacts.family_name", &mut c.family_name),
                        ("contacts.given_name", &mut c.given_name),
                        ("contacts.phone", &mut c.phone),
                    ] {
                        if let Some(v) = v.as_mut() {
                            tokenize(path, v)?;
                        }
                    }
                }
                if let Some(d) = out.demographics.as_mut() {
                    for (path, v) in direct_demographics(d) {
                        if let Some(v) = v.as_mut() {
                            tokenize(path, v)?;
                        }
                    }
                }
                for p in [
                    "identifiers.value",
                    "links.value",
                    "contacts",
                    "demographics.direct",
                ] {
                    steps.push((p, "deterministic_token"));
                }
            }
            (Linkage::Random, _) if !ev.subject_key.is_empty() => {
                out.subject_key = self.linkage_token(policy, ev)?.as_str().into();
                steps.push(("subject_key", "random_token"));
                remove_identity(&mut out);
                steps.push(("identifiers", "suppress"));
            }
            _ => {
                out.subject_key = Text::default();
                remove_identity(&mut out);
                steps.push(("subject_key", "suppress"));
                steps.push(("identifiers", "suppress"));
            }
        }
        let steps = steps
            .into_iter()
            .map(|(path, method)| {
                let params = if method == "suppress" {
                    ""
                } else {
                    &policy.params
                };
                Transformation::new(path, method, params)
            })
            .collect();
        Ok((out, steps))
    }
}

/// Removes every identifier, link, contact and direct demographic.
fn remove_identity(ev: &mut CanonicalEvent) {
    ev.identifiers.clear();
    ev.links.clear();
    ev.contacts.clear();
    if let Some(d) = ev.demographics.as_mut() {
        for (_, v) in direct_demographics(d) {
            *v = None;
        }
    }
}

impl Stage for Tokenize {
    fn name(&self) -> StageName {
        NAME
    }

    fn process(&self, input: &StageInput, _: &dyn StateView) -> Vec<Outcome> {
        let (ev, dedup, policy) = match self.fwd.accept_for_purpose(input, |p| self.policies.get(p))
        {
            Ok(v) => v,
            Err(q) => return vec![*q],
        };
        match self.apply(ev, policy) {
            Ok((out, steps)) => vec![self.fwd.forward(input, ev, dedup, out, steps)],
            Err(VaultRefusal::Unavailable(VaultUnavailable(detail))) => {
                vec![self
                    .fwd
                    .quarantine(input, event_id(ev), ReasonCode::Unavailable, &detail)]
            }
            // Consent was withdrawn and the subject shredded while this
            // record was on its way: it goes no further (route would stop
            // it too), audited.
            Err(VaultRefusal::Shredded) => {
                vec![self.fwd.deny(input, ev, dedup, ConsentReason::Shredded)]
            }
        }
    }

    /// A change in the consent table: the subject's cached vault answers in
    /// the domains of that consent's purposes go (a shred may have
    /// followed). No work of its own.
    fn on_state_change(
        &self,
        changed: Option<&[String]>,
        _: &dyn StateView,
        _: Owns<'_>,
    ) -> Vec<Outcome> {
        match changed {
            Some(keys) => {
                for (subject, code, _) in keys.iter().filter_map(|k| consent::parse_key(k)) {
                    self.forget(subject, code);
                }
            }
            None => {
                lock(&self.links).clear();
                lock(&self.registered).clear();
            }
        }
        Vec::new()
    }
}
