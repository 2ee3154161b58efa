//! The token vault: what it stores, behind one interface with two
//! backends, the logic of issuing, resolving and shredding (`vault`), who
//! may resolve what (`access`: bearer credentials, scopes, break-glass,
//! rate limits), and the HTTP API's request handling (`api`; the server
//! and the audit records of its calls are `consentry vault serve`).
//!
//! The vault keeps, per subject and token domain, the subject's data key
//! wrapped under a key-encryption key (`consentry_crypto::sealed`), and per
//! token the sealed identity it stands for. A store knows subjects only by
//! a keyed reference (an HMAC of the subject key under a vault key of the
//! key ring, `vault::Vault`), never by an identifier nor by the unkeyed
//! subject key: a copy of the store alone cannot be searched by trying
//! MRNs. Shredding deletes a subject's wrapped keys (and the token entries
//! they sealed): without the key nothing sealed under it can be opened,
//! wherever a copy lies. It also leaves a tombstone, checked in the same
//! transaction as every creation, so a record still in flight cannot bring
//! the subject back until a newer consent reinstates it.

pub mod access;
pub mod api;
pub mod file;
pub mod pg;
pub mod vault;

pub use file::FileStore;
pub use pg::{PgOptions, PgStore};
pub use vault::{Holdings, Vault, VaultError};

/// What the vault keeps about one token. `sealed` is the identity sealed
/// under the subject's data key for this domain; the rest is not PHI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub domain: String,
    pub subject: String,
    pub sealed: Vec<u8>,
    pub created_ms: i64,
}

/// Store failures. Never carries key material or a sealed value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vault store ({backend}): {detail}")]
    Backend {
        backend: &'static str,
        detail: String,
    },
    #[error("token already stored with other content")]
    TokenConflict,
    /// The subject is shredded in the domain (a tombstone): nothing is
    /// created for it.
    #[error("the subject was shredded in this domain")]
    Shredded,
    #[error("stored token entry is malformed")]
    Malformed,
}

/// The vault's storage. Every method is one atomic step.
pub trait VaultStore: Send + Sync {
    /// `file` or `postgres`, for logs and metric labels.
    fn backend(&self) -> &'static str;

    /// Whether the store answers now (a health check: one round trip, no
    /// retry).
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores the wrapped data key of (subject, domain) unless one exists,
    /// and returns the one stored: concurrent first uses agree on one key.
    /// `Shredded` if the subject has a tombstone for the domain (or for
    /// every domain), checked atomically with the insert.
    fn subject_key_or_insert(
        &self,
        subject: &str,
        domain: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, StoreError>;

    fn subject_key(&self, subject: &str, domain: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a token entry. The same entry again is accepted (replays);
    /// another entry under the same token is a conflict; an entry of a
    /// tombstoned (subject, domain) is `Shredded`.
    fn put_token(&self, token: &str, entry: &TokenEntry) -> Result<(), StoreError>;

    fn token(&self, token: &str) -> Result<Option<TokenEntry>, StoreError>;

    /// The subject's linkage token in `domain`, if one was issued.
    fn subject_token(&self, subject: &str, domain: &str) -> Result<Option<String>, StoreError>;

    /// Stores `token` (with its entry) as the subject's linkage token in
    /// `domain` unless one exists, and returns the one stored: concurrent
    /// first uses agree on one token.
    fn subject_token_or_insert(
        &self,
        subject: &str,
        domain: &str,
        token: &str,
        entry: &TokenEntry,
    ) -> Result<String, StoreError>;

    /// Crypto-shredding: deletes the subject's wrapped keys for `domain`
    /// (every domain when `None`), the token entries sealed under them and
    /// its linkage tokens, and leaves a tombstone for the domain (`*` for
    /// every domain) in the same transaction. Returns how many keys were
    /// deleted.
    fn shred(&self, subject: &str, domain: Option<&str>) -> Result<usize, StoreError>;

    /// Whether `token` was deleted by a shred: the store keeps a digest
    /// (`shredded_token_digest`) of every token it shreds, so a resolve of
    /// one can be told from a resolve of a token that never existed (in
    /// the audit record and a metric, never in the answer).
    fn was_shredded(&self, token: &str) -> Result<bool, StoreError>;

    /// How many token entries the store holds for (subject, domain).
    fn count_tokens(&self, subject: &str, domain: &str) -> Result<usize, StoreError>;

    /// Whether (subject, domain) has a tombstone, its own or `*`.
    fn is_shredded(&self, subject: &str, domain: &str) -> Result<bool, StoreError>;

    /// Lifts the tombstone of (subject, domain) (a newer consent grants
    /// again); a subject shredded in every domain stays shredded in the
    /// others. Idempotent.
    fn reinstate(&self, subject: &str, domain: &str) -> Result<(), StoreError>;
}

/// The domain of a tombstone that covers every domain.
pub const EVERY_DOMAIN: &str = "*";

/// What a store keeps of a shredded token: a SHA-256 under a label of its
/// own. Tokens are random (or keyed) and unguessable, so the digest tells
/// a copy of the store nothing without the token; with it, only that the
/// token was shredded, which its holder was told by a revocation notice.
/// Someone holding the key ring could make a deterministic token from an
/// MRN and look it up, but could as well make the subject's keyed
/// reference and read its tombstone: the digests add nothing to that.
pub fn shredded_token_digest(token: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"consentry/shredded-token/v1\0");
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
pub(crate) mod suite {
    //! One behaviour suite, run against both backends.
    use super::*;

    /// Fills `vault` the way the stages do, for subjects whose subject keys
    /// are the digests of `mrns` (computed as `consentry_core::keys` does:
    /// unkeyed, so anyone holding the MRNs could compute them too), and
    /// returns those subject keys.
    pub fn fill_with_subjects(vault: &crate::Vault, mrns: &[String]) -> Vec<String> {
        use sha2::Digest;
        let ring_free_subject_key = |mrn: &str| {
            let mut h = sha2::Sha256::new();
            h.update(b"subject-key/v1");
            h.update(mrn.as_bytes());
            hex::encode(&h.finalize()[..16])
        };
        mrns.iter()
            .map(|mrn| {
                let subject = ring_free_subject_key(mrn);
                let identity = format!("urn:mrn|{mrn}");
                vault
                    .subject_token("trial", &subject, identity.as_bytes(), 1)
                    .expect("linkage token");
                vault
                    .issue("crm", &subject, identity.as_bytes(), 2)
                    .expect("random token");
                subject
            })
            .collect()
    }

    /// The MRNs and subject keys found in `dump` (a copy of the store).
    pub fn findable(dump: &[u8], mrns: &[String], subjects: &[String]) -> usize {
        mrns.iter()
            .chain(subjects)
            .filter(|n| dump.windows(n.len()).any(|w| w == n.as_bytes()))
            .count()
    }

    fn entry(domain: &str, subject: &str, sealed: &[u8]) -> TokenEntry {
        TokenEntry {
            domain: domain.into(),
            subject: subject.into(),
            sealed: sealed.to_vec(),
            created_ms: 1_790_000_000_000,
        }
    }

    /// `reopen` gives a fresh handle on the same storage (a restart).
    pub fn exercise(store: &dyn VaultStore, reopen: &dyn Fn() -> Box<dyn VaultStore>) {
        // Subject keys: first writer wins, later ones get the stored key.
        assert_eq!(store.subject_key("s1", "crm").unwrap(), None);
        assert_eq!(
            store
                .subject_key_or_insert("s1", "crm", b"wrapped-1")
                .unwrap(),
            b"wrapped-1"
        );
        assert_eq!(
            store
                .subject_key_or_insert("s1", "crm", b"wrapped-2")
                .unwrap(),
            b"wrapped-1"
        );
        store
            .subject_key_or_insert("s1", "trial", b"wrapped-t")
            .unwrap();
        store
            .subject_key_or_insert("s2", "crm", b"wrapped-s2")
            .unwrap();

        // Tokens: idempotent puts, conflicts refused.
        let t1 = entry("crm", "s1", b"sealed-1");
        store.put_token("tok:crm:r1:a", &t1).unwrap();
        store.put_token("tok:crm:r1:a", &t1).unwrap();
        assert!(matches!(
            store.put_token("tok:crm:r1:a", &entry("crm", "s1", b"other")),
            Err(StoreError::TokenConflict)
        ));
        store
            .put_token("tok:trial:r1:b", &entry("trial", "s1", b"sealed-t"))
            .unwrap();
        store
            .put_token("tok:crm:r1:c", &entry("crm", "s2", b"sealed-2"))
            .unwrap();
        assert_eq!(store.token("tok:crm:r1:a").unwrap(), Some(t1.clone()));
        assert_eq!(store.token("tok:crm:r1:zz").unwrap(), None);
        assert_eq!(store.count_tokens("s1", "crm").unwrap(), 1);
        assert_eq!(store.count_tokens("s1", "trial").unwrap(), 1);
        assert_eq!(store.count_tokens("s9", "crm").unwrap(), 0);

        // Linkage tokens: one per subject and domain, the first one wins.
        assert_eq!(store.subject_token("s1", "trial").unwrap(), None);
        let link = entry("trial", "s1", b"sealed-link");
        assert_eq!(
            store
                .subject_token_or_insert("s1", "trial", "tok:trial:r1:l1", &link)
                .unwrap(),
            "tok:trial:r1:l1"
        );
        assert_eq!(
            store
                .subject_token_or_insert("s1", "trial", "tok:trial:r1:l2", &link)
                .unwrap(),
            "tok:trial:r1:l1"
        );
        assert_eq!(
            store.token("tok:trial:r1:l2").unwrap(),
            None,
            "the loser is not stored"
        );
        assert_eq!(store.token("tok:trial:r1:l1").unwrap(), Some(link.clone()));
        assert_eq!(
            store.subject_token("s1", "trial").unwrap().as_deref(),
            Some("tok:trial:r1:l1")
        );
        assert_eq!(store.subject_token("s2", "trial").unwrap(), None);

        // A restart sees everything.
        let again = reopen();
        assert_eq!(again.token("tok:crm:r1:a").unwrap(), Some(t1));
        assert_eq!(
            again.subject_key("s1", "trial").unwrap().as_deref(),
            Some(&b"wrapped-t"[..])
        );
        drop(again);

        // Shredding one domain of one subject touches nothing else.
        assert!(!store.was_shredded("tok:crm:r1:a").unwrap());
        assert_eq!(store.shred("s1", Some("crm")).unwrap(), 1);
        assert_eq!(store.subject_key("s1", "crm").unwrap(), None);
        assert_eq!(store.token("tok:crm:r1:a").unwrap(), None);
        // It remembers which tokens it shredded, and only those.
        assert!(store.was_shredded("tok:crm:r1:a").unwrap());
        assert!(!store.was_shredded("tok:trial:r1:b").unwrap());
        assert!(!store.was_shredded("tok:crm:r1:never").unwrap());
        assert!(store.subject_key("s1", "trial").unwrap().is_some());
        assert!(store.token("tok:trial:r1:b").unwrap().is_some());
        assert!(store.token("tok:crm:r1:c").unwrap().is_some());
        assert!(store.subject_token("s1", "trial").unwrap().is_some());
        // The whole subject.
        assert_eq!(store.shred("s1", None).unwrap(), 1);
        assert_eq!(store.token("tok:trial:r1:b").unwrap(), None);
        assert_eq!(store.token("tok:trial:r1:l1").unwrap(), None);
        assert_eq!(store.subject_token("s1", "trial").unwrap(), None);
        for gone in ["tok:trial:r1:b", "tok:trial:r1:l1"] {
            assert!(store.was_shredded(gone).unwrap(), "{gone}");
        }
        assert_eq!(store.shred("s1", None).unwrap(), 0);
        assert!(store.subject_key("s2", "crm").unwrap().is_some());
        // A shredded subject that comes back (granted again) gets a new
        // key, not the old one.
        assert!(matches!(
            store.subject_key_or_insert("s1", "crm", b"wrapped-new"),
            Err(StoreError::Shredded)
        ));
        store.reinstate("s1", "crm").unwrap();
        assert_eq!(
            store
                .subject_key_or_insert("s1", "crm", b"wrapped-new")
                .unwrap(),
            b"wrapped-new"
        );
        // And the shredding survives a restart.
        let again = reopen();
        assert_eq!(again.token("tok:crm:r1:a").unwrap(), None);
        assert!(again.was_shredded("tok:crm:r1:a").unwrap());
        assert_eq!(again.subject_key("s1", "trial").unwrap(), None);
        drop(again);

        // Tombstones: after a shred, nothing of the subject is created in
        // the domain (a record in flight cannot bring it back) ...
        store.subject_key_or_insert("s3", "crm", b"k3").unwrap();
        assert!(!store.is_shredded("s3", "crm").unwrap());
        assert_eq!(store.shred("s3", Some("crm")).unwrap(), 1);
        assert!(store.is_shredded("s3", "crm").unwrap());
        assert!(!store.is_shredded("s3", "trial").unwrap());
        assert!(
            reopen().is_shredded("s3", "crm").unwrap(),
            "after a restart"
        );
        assert_eq!(store.count_tokens("s3", "crm").unwrap(), 0);
        assert!(matches!(
            store.subject_key_or_insert("s3", "crm", b"k3-again"),
            Err(StoreError::Shredded)
        ));
        assert!(matches!(
            store.put_token("tok:crm:r1:s3", &entry("crm", "s3", b"x")),
            Err(StoreError::Shredded)
        ));
        assert!(matches!(
            store.subject_token_or_insert("s3", "crm", "tok:crm:r1:l3", &entry("crm", "s3", b"x")),
            Err(StoreError::Shredded)
        ));
        assert_eq!(store.subject_key("s3", "crm").unwrap(), None);
        assert_eq!(store.token("tok:crm:r1:s3").unwrap(), None);
        assert_eq!(store.subject_token("s3", "crm").unwrap(), None);
        // ... other domains go on ...
        store.subject_key_or_insert("s3", "trial", b"k3t").unwrap();
        // ... and a re-grant lifts it.
        store.reinstate("s3", "crm").unwrap();
        store.reinstate("s3", "crm").unwrap();
        assert!(!store.is_shredded("s3", "crm").unwrap());
        assert_eq!(
            store.subject_key_or_insert("s3", "crm", b"k3-new").unwrap(),
            b"k3-new"
        );
        // Shredding every domain tombstones every domain, until reinstated.
        store.shred("s3", None).unwrap();
        assert!(store.is_shredded("s3", "anything").unwrap());
        assert!(matches!(
            store.subject_key_or_insert("s3", "trial", b"k"),
            Err(StoreError::Shredded)
        ));
        store.reinstate("s3", "trial").unwrap();
        assert!(!store.is_shredded("s3", "trial").unwrap());
        // ... the subject's other domains stay shredded ...
        assert!(store.is_shredded("s3", "crm").unwrap());
        assert!(store.is_shredded("s3", "anything").unwrap());
        store.subject_key_or_insert("s3", "trial", b"k").unwrap();
        // ... until shredded again, one domain or all.
        store.shred("s3", Some("trial")).unwrap();
        assert!(store.is_shredded("s3", "trial").unwrap());
        store.reinstate("s3", "trial").unwrap();
        store.shred("s3", None).unwrap();
        assert!(store.is_shredded("s3", "trial").unwrap());
    }
}
