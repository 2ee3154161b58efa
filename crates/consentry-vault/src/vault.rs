//! The vault's logic over its store: issue random tokens for identities,
//! resolve them, shred subjects. No transport and no authorization here
//! (the HTTP API, with scopes, purposes, rate limits and audit, wraps this).
//!
//! An identity is sealed under its subject's data key for the token's
//! domain; the data key is stored wrapped under a KEK of the key ring. The
//! store knows the subject only by its keyed reference
//! (`consentry_crypto::SubjectRefs`, under the ring's anchor version, so
//! every process names a subject alike across a rotation). The KEKs of
//! every usable key version are derived once, when the vault is built.
//! A vault refuses a key ring marked for another environment.
//!
//! A shred leaves a tombstone per (subject, domain); until `reinstate`
//! (a newer consent grants the domain's purpose again) nothing is created
//! for the subject in the domain: no data key, no linkage token, no
//! registered identity (`VaultError::Shredded`).

use crate::{StoreError, TokenEntry, VaultStore};
use consentry_crypto::keyring::{Environment, KeyError, KeyRing};
use consentry_crypto::quarantine::{OpenError, QuarantineContext, QuarantineKeys};
use consentry_crypto::sealed::{Binding, DataKey, Kek, SealError, Sealed, WrappedKey};
use consentry_crypto::token::{random_token, Token, TokenError, TokenKind};
use consentry_crypto::{SubjectRefs, VaultRefusal, VaultUnavailable};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    BadToken(#[from] TokenError),
    /// Unknown, or shredded: the two are not told apart to callers.
    #[error("token not found")]
    NotFound,
    /// Only a deterministic token of the domain it is registered under.
    #[error("only a deterministic token of its own domain can be registered")]
    NotRegistrable,
    /// The subject was shredded in the domain and not granted again since:
    /// nothing is created for it.
    #[error("the subject was shredded in this domain")]
    Shredded,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> VaultError {
        match e {
            StoreError::Shredded => VaultError::Shredded,
            other => VaultError::Store(other),
        }
    }
}

/// What the vault holds of one subject in one domain (counts only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holdings {
    pub data_keys: usize,
    /// Sealed identities (issued, registered and linkage tokens' entries).
    pub tokens: usize,
    pub linkage_tokens: usize,
    pub tombstoned: bool,
}

pub struct Vault {
    store: Box<dyn VaultStore>,
    active: u32,
    keks: BTreeMap<u32, Kek>,
    refs: SubjectRefs,
    quarantine: QuarantineKeys,
}

impl Vault {
    /// A vault over `store`, for `environment`: a ring marked otherwise is
    /// refused.
    pub fn new(
        ring: &KeyRing,
        environment: Environment,
        store: Box<dyn VaultStore>,
    ) -> Result<Vault, VaultError> {
        ring.require(environment)?;
        let keks = ring
            .versions()
            .into_iter()
            .filter(|v| !v.retired)
            .map(|v| Ok((v.version, Kek::of_version(ring, v.version)?)))
            .collect::<Result<_, KeyError>>()?;
        Ok(Vault {
            store,
            active: ring.active_version(),
            keks,
            refs: SubjectRefs::new(ring)?,
            quarantine: QuarantineKeys::new(ring)?,
        })
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Whether the store answers now (for health checks).
    pub fn ping_store(&self) -> bool {
        self.store.ping().is_ok()
    }

    /// The subject's data key for a domain, and the reference it is stored
    /// under: the stored one, or a new one wrapped under the active KEK (if
    /// two vaults race, both use the key the store kept first). Never a
    /// new one for a tombstoned subject (the store checks, atomically).
    fn data_key(
        &self,
        subject: &str,
        domain: &str,
        create: bool,
    ) -> Result<(String, DataKey), VaultError> {
        let r = self.refs.of(subject);
        if let Some(w) = self.store.subject_key(&r, domain)? {
            let key = self.unwrap_key(&w, &r)?;
            return Ok((r, key));
        }
        if !create {
            return Err(VaultError::NotFound);
        }
        let kek = self
            .keks
            .get(&self.active)
            .ok_or(KeyError::UnknownVersion(self.active))?;
        let fresh = kek.wrap(&DataKey::generate()?, &r).to_bytes();
        let stored = self.store.subject_key_or_insert(&r, domain, &fresh)?;
        let key = self.unwrap_key(&stored, &r)?;
        Ok((r, key))
    }

    fn unwrap_key(&self, wrapped: &[u8], subject_ref: &str) -> Result<DataKey, VaultError> {
        let wrapped = WrappedKey::from_bytes(wrapped)?;
        let kek = self
            .keks
            .get(&wrapped.kek_version)
            .ok_or(KeyError::Retired(wrapped.kek_version))?;
        Ok(kek.unwrap_key(&wrapped, subject_ref)?)
    }

    /// Issues a random token of `domain` standing for `identity` (the
    /// identifier as the caller will want it back), sealed and stored.
    pub fn issue(
        &self,
        domain: &str,
        subject: &str,
        identity: &[u8],
        now_ms: i64,
    ) -> Result<String, VaultError> {
        let token = random_token(domain, self.active)?;
        let entry = self.entry(&token, domain, subject, identity, now_ms)?;
        self.store.put_token(&token, &entry)?;
        Ok(token)
    }

    /// Seals `identity` for `token` under the subject's data key, as a
    /// stored entry (naming the subject by its reference).
    fn entry(
        &self,
        token: &str,
        domain: &str,
        subject: &str,
        identity: &[u8],
        now_ms: i64,
    ) -> Result<TokenEntry, VaultError> {
        let (subject_ref, key) = self.data_key(subject, domain, true)?;
        let sealed = key.seal(
            identity,
            Binding {
                token,
                domain,
                subject: &subject_ref,
            },
        );
        Ok(TokenEntry {
            domain: domain.to_string(),
            subject: subject_ref,
            sealed: sealed.to_bytes(),
            created_ms: now_ms,
        })
    }

    /// The subject's random linkage token in `domain`: the one issued
    /// first (by any vault on the same store), or a new one standing for
    /// `identity`.
    pub fn subject_token(
        &self,
        domain: &str,
        subject: &str,
        identity: &[u8],
        now_ms: i64,
    ) -> Result<String, VaultError> {
        if let Some(t) = self.store.subject_token(&self.refs.of(subject), domain)? {
            return Ok(t);
        }
        let token = random_token(domain, self.active)?;
        let entry = self.entry(&token, domain, subject, identity, now_ms)?;
        Ok(self
            .store
            .subject_token_or_insert(&entry.subject, domain, &token, &entry)?)
    }

    /// Makes a deterministic token resolvable: its identity sealed and
    /// stored, unless the token is already stored. The same token always
    /// stands for the same value, so an entry another subject registered
    /// (two patients sharing a phone number) already resolves it.
    pub fn register(
        &self,
        token: &str,
        domain: &str,
        subject: &str,
        identity: &[u8],
        now_ms: i64,
    ) -> Result<(), VaultError> {
        let parsed = Token::parse(token)?;
        if parsed.kind != TokenKind::Deterministic || parsed.domain != domain {
            return Err(VaultError::NotRegistrable);
        }
        let stored = |e: &TokenEntry| e.domain == domain;
        match self.store.token(token)? {
            Some(e) if stored(&e) => return Ok(()),
            Some(_) => return Err(StoreError::TokenConflict.into()),
            None => {}
        }
        let entry = self.entry(token, domain, subject, identity, now_ms)?;
        match self.store.put_token(token, &entry) {
            // Another instance registered it first (its own nonce).
            Err(StoreError::TokenConflict) => match self.store.token(token)? {
                Some(e) if stored(&e) => Ok(()),
                _ => Err(StoreError::TokenConflict.into()),
            },
            other => Ok(other?),
        }
    }

    /// The identity a token stands for: a random token the vault issued,
    /// or a deterministic one registered with it. A shredded subject's
    /// tokens are `NotFound`, and their sealed bytes open under no key
    /// there is.
    pub fn resolve(&self, token: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let parsed = Token::parse(token)?;
        let entry = self.store.token(token)?.ok_or(VaultError::NotFound)?;
        if entry.domain != parsed.domain {
            return Err(VaultError::NotFound);
        }
        let wrapped = self
            .store
            .subject_key(&entry.subject, &entry.domain)?
            .ok_or(VaultError::NotFound)?;
        let key = self.unwrap_key(&wrapped, &entry.subject)?;
        let sealed = Sealed::from_bytes(&entry.sealed)?;
        Ok(key.open(
            &sealed,
            Binding {
                token,
                domain: &entry.domain,
                subject: &entry.subject,
            },
        )?)
    }

    /// A quarantined payload, opened for the headers it was sealed with
    /// (the API decides who may ask, and audits it).
    pub fn open_quarantined(
        &self,
        context: &QuarantineContext<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.quarantine.open(context, sealed).map_err(|e| match e {
            OpenError::Seal(e) => VaultError::Seal(e),
            OpenError::Key(e) => VaultError::Key(e),
        })
    }

    /// Whether `token` was shredded (consent withdrawn, erasure): for the
    /// audit record and metric of a resolve that found nothing; callers
    /// get the same answer either way.
    pub fn was_shredded(&self, token: &str) -> Result<bool, VaultError> {
        Ok(self.store.was_shredded(token)?)
    }

    /// Crypto-shredding of a subject, for one domain or all; it leaves a
    /// tombstone. Returns how many data keys went.
    pub fn shred(&self, subject: &str, domain: Option<&str>) -> Result<usize, VaultError> {
        Ok(self.store.shred(&self.refs.of(subject), domain)?)
    }

    /// What the store holds of a subject in a domain, under every usable
    /// version's reference: for operators answering "is it gone?", and
    /// tests. Holds no value.
    pub fn holdings(&self, subject: &str, domain: &str) -> Result<Holdings, VaultError> {
        let r = self.refs.of(subject);
        Ok(Holdings {
            data_keys: usize::from(self.store.subject_key(&r, domain)?.is_some()),
            tokens: self.store.count_tokens(&r, domain)?,
            linkage_tokens: usize::from(self.store.subject_token(&r, domain)?.is_some()),
            tombstoned: self.store.is_shredded(&r, domain)?,
        })
    }

    /// Lifts the subject's tombstones in `domain` (a newer consent grants).
    pub fn reinstate(&self, subject: &str, domain: &str) -> Result<(), VaultError> {
        Ok(self.store.reinstate(&self.refs.of(subject), domain)?)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn refusal(e: VaultError) -> VaultRefusal {
    match e {
        VaultError::Shredded => VaultRefusal::Shredded,
        other => VaultRefusal::Unavailable(VaultUnavailable(other.to_string())),
    }
}

/// The stages' view of the vault. Errors are named by kind only.
impl consentry_crypto::TokenVault for Vault {
    fn subject_token(
        &self,
        domain: &str,
        subject: &str,
        identity: &[u8],
    ) -> Result<String, VaultRefusal> {
        Vault::subject_token(self, domain, subject, identity, now_ms()).map_err(refusal)
    }

    fn register(
        &self,
        token: &str,
        domain: &str,
        subject: &str,
        identity: &[u8],
    ) -> Result<(), VaultRefusal> {
        Vault::register(self, token, domain, subject, identity, now_ms()).map_err(refusal)
    }

    fn shred(&self, subject: &str, domain: &str) -> Result<usize, VaultUnavailable> {
        Vault::shred(self, subject, Some(domain)).map_err(|e| VaultUnavailable(e.to_string()))
    }

    fn reinstate(&self, subject: &str, domain: &str) -> Result<(), VaultUnavailable> {
        Vault::reinstate(self, subject, domain).map_err(|e| VaultUnavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileStore;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("consentry-vault-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn issue_resolve_restart_rotate_and_shred() {
        let dir = temp_dir("logic");
        let path = dir.join("vault.redb");
        let mut ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let open = |ring: &KeyRing| {
            Vault::new(
                ring,
                Environment::NonProduction,
                Box::new(FileStore::open(&path).unwrap()),
            )
            .unwrap()
        };
        let vault = open(&ring);
        let t1 = vault
            .issue("trial", "subj-1", b"MRN-SECRET-0001", 1)
            .unwrap();
        let t2 = vault
            .issue("trial", "subj-1", b"SSN-SECRET-0002", 2)
            .unwrap();
        assert_ne!(t1, t2);
        assert!(t1.starts_with("tok:trial:r1:"));
        assert_eq!(&vault.resolve(&t1).unwrap()[..], b"MRN-SECRET-0001");
        drop(vault);

        // No identity is stored in the clear, nor the subject key.
        let bytes = std::fs::read(&path).unwrap();
        for secret in [&b"MRN-SECRET-0001"[..], b"SSN-SECRET-0002", b"subj-1"] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret));
        }

        // A restart with a rotated ring: old tokens resolve, new ones are r2.
        ring.rotate().unwrap();
        let vault = open(&ring);
        assert_eq!(&vault.resolve(&t2).unwrap()[..], b"SSN-SECRET-0002");
        let t3 = vault.issue("crm", "subj-1", b"MRN-SECRET-0001", 3).unwrap();
        assert!(t3.starts_with("tok:crm:r2:"));

        // Bad and unknown tokens.
        assert!(matches!(
            vault.resolve("nope"),
            Err(VaultError::BadToken(_))
        ));
        let unknown = format!("tok:trial:r1:{}", "a".repeat(32));
        assert!(matches!(vault.resolve(&unknown), Err(VaultError::NotFound)));
        let det = format!("tok:trial:v1:{}", "a".repeat(32));
        assert!(matches!(vault.resolve(&det), Err(VaultError::NotFound)));

        // Shredding the trial domain: its tokens are gone, crm's stay.
        assert_eq!(vault.shred("subj-1", Some("trial")).unwrap(), 1);
        assert!(matches!(vault.resolve(&t1), Err(VaultError::NotFound)));
        assert_eq!(&vault.resolve(&t3).unwrap()[..], b"MRN-SECRET-0001");
        drop(vault);

        // A production ring is refused by a non-production vault.
        let prod = KeyRing::generate(Environment::Production).unwrap();
        assert!(matches!(
            Vault::new(
                &prod,
                Environment::NonProduction,
                Box::new(FileStore::open(&path).unwrap())
            ),
            Err(VaultError::Key(KeyError::EnvironmentMismatch { .. }))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn linkage_tokens_are_stable_and_registered_tokens_resolve_until_shredded() {
        let dir = temp_dir("link");
        let path = dir.join("v.redb");
        let ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let open = || {
            Vault::new(
                &ring,
                Environment::NonProduction,
                Box::new(FileStore::open(&path).unwrap()),
            )
            .unwrap()
        };
        let vault = open();
        let a = vault.subject_token("trial", "subj-1", b"ID-1", 1).unwrap();
        assert!(a.starts_with("tok:trial:r1:"));
        assert_eq!(
            vault.subject_token("trial", "subj-1", b"ID-1", 2).unwrap(),
            a
        );
        let b = vault.subject_token("trial", "subj-2", b"ID-2", 3).unwrap();
        assert_ne!(a, b);
        assert_eq!(&vault.resolve(&a).unwrap()[..], b"ID-1");

        let tokenizer = consentry_crypto::Tokenizer::new(&ring, "crm").unwrap();
        let det = tokenizer.deterministic("mrn", "ID-1");
        vault.register(&det, "crm", "subj-1", b"ID-1", 4).unwrap();
        vault.register(&det, "crm", "subj-1", b"ID-1", 5).unwrap();
        // Another subject with the same value (a shared phone number).
        vault.register(&det, "crm", "subj-2", b"ID-1", 6).unwrap();
        assert!(matches!(
            vault.register(&a, "trial", "subj-1", b"ID-1", 6),
            Err(VaultError::NotRegistrable)
        ));
        assert!(matches!(
            vault.register(&det, "trial", "subj-1", b"ID-1", 6),
            Err(VaultError::NotRegistrable)
        ));
        drop(vault);

        // After a restart: the same linkage token, the registration kept.
        let vault = open();
        assert_eq!(
            vault.subject_token("trial", "subj-1", b"ID-1", 7).unwrap(),
            a
        );
        assert_eq!(
            vault.holdings("subj-1", "trial").unwrap(),
            Holdings {
                data_keys: 1,
                tokens: 1,
                linkage_tokens: 1,
                tombstoned: false
            }
        );
        assert_eq!(&vault.resolve(&det).unwrap()[..], b"ID-1");
        vault.shred("subj-1", None).unwrap();
        assert!(matches!(vault.resolve(&det), Err(VaultError::NotFound)));
        assert!(matches!(vault.resolve(&a), Err(VaultError::NotFound)));
        assert_eq!(
            vault.holdings("subj-1", "trial").unwrap(),
            Holdings {
                tombstoned: true,
                ..Default::default()
            }
        );
        // Nothing of a shredded subject is created again (records in
        // flight) until a newer consent reinstates the domain ...
        assert!(matches!(
            vault.subject_token("trial", "subj-1", b"ID-1", 8),
            Err(VaultError::Shredded)
        ));
        assert!(matches!(
            vault.register(&det, "crm", "subj-1", b"ID-1", 8),
            Err(VaultError::Shredded)
        ));
        assert!(matches!(
            vault.issue("trial", "subj-1", b"ID-1", 8),
            Err(VaultError::Shredded)
        ));
        // ... and the subject that comes back then is a new subject.
        vault.reinstate("subj-1", "trial").unwrap();
        assert_ne!(
            vault.subject_token("trial", "subj-1", b"ID-1", 8).unwrap(),
            a
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stolen copy of the vault file, without the key ring, maps no token
    /// to an MRN: it holds every subject's tokens, but neither an MRN nor
    /// any subject key computed from one (the store knows subjects only by
    /// a keyed reference). Tried for every MRN the vault holds.
    #[test]
    fn a_copy_of_the_vault_file_maps_no_token_to_an_mrn() {
        let dir = temp_dir("copy");
        let path = dir.join("v.redb");
        let ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let vault = Vault::new(
            &ring,
            Environment::NonProduction,
            Box::new(FileStore::open(&path).unwrap()),
        )
        .unwrap();
        let mrns: Vec<String> = (0..200)
            .map(|i| format!("MRN{:07}", 4_000_000 + i))
            .collect();
        let subjects = crate::suite::fill_with_subjects(&vault, &mrns);
        drop(vault);
        let dump = std::fs::read(&path).unwrap();
        assert!(
            dump.windows(11).any(|w| w == b"tok:trial:r"),
            "the copy holds the tokens"
        );
        assert_eq!(crate::suite::findable(&dump, &mrns, &subjects), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shredded_ciphertext_opens_under_no_key_the_vault_can_make() {
        let dir = temp_dir("shred");
        let ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let vault = Vault::new(
            &ring,
            Environment::NonProduction,
            Box::new(FileStore::open(&dir.join("v.redb")).unwrap()),
        )
        .unwrap();
        let token = vault.issue("trial", "subj-9", b"IDENTITY-9", 1).unwrap();
        let entry = vault.store.token(&token).unwrap().unwrap();
        vault.shred("subj-9", None).unwrap();
        // The subject returns (granted again): a new data key, which cannot
        // open the old record.
        vault.reinstate("subj-9", "trial").unwrap();
        vault.issue("trial", "subj-9", b"IDENTITY-9b", 2).unwrap();
        let (subject_ref, key) = vault.data_key("subj-9", "trial", false).unwrap();
        assert_eq!(subject_ref, entry.subject);
        let sealed = Sealed::from_bytes(&entry.sealed).unwrap();
        let binding = Binding {
            token: &token,
            domain: "trial",
            subject: &subject_ref,
        };
        assert_eq!(key.open(&sealed, binding).unwrap_err(), SealError::Open);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
