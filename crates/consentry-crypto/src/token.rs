//! Tokens: `tok:<domain>:<kind><version>:<body>`.
//!
//! - `domain`: the token domain (`crm`, `trial`, ...): lower-case letters,
//!   digits and `-`, at most 32. Tokens of different domains are derived
//!   under different keys and never join.
//! - `kind`: `v` deterministic (the same identifier always gives the same
//!   token in a domain and key version: joins), `r` random (issued by the
//!   vault; no joins).
//! - `version`: the key version it was made under (rotation starts a new one).
//! - `body`: 20 bytes in lower-case base32 (32 characters).
//!
//! A deterministic token is HMAC-SHA256 over the identifier's system and
//! value, under a key derived with HKDF-SHA256 from the master key of its
//! version, per domain. The derived keys are made once, when a
//! [`Tokenizer`] is built; tokenizing a record clones a keyed HMAC state and
//! derives nothing.

use crate::base32;
use crate::keyring::{KeyError, KeyRing, Secret};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;

pub const PREFIX: &str = "tok";
/// Bytes of a token body.
pub const BODY_BYTES: usize = 20;
/// Characters of a token body (base32 of `BODY_BYTES`).
pub const BODY_CHARS: usize = 32;
pub const MAX_DOMAIN: usize = 32;

/// HKDF salt and info labels: a change here changes every token, so the
/// labels are versioned with the format.
const HKDF_SALT: &[u8] = b"consentry/token-key/v1";
const HMAC_LABEL: &[u8] = b"consentry/token/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `v`: HMAC of the identifier; the same identifier, the same token.
    Deterministic,
    /// `r`: random, issued and resolved by the vault.
    Random,
}

impl TokenKind {
    fn letter(self) -> char {
        match self {
            TokenKind::Deterministic => 'v',
            TokenKind::Random => 'r',
        }
    }
}

/// Why a string is not a token. Names the part, never quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token: expected tok:<domain>:<kind><version>:<body>")]
    Shape,
    #[error("token domain must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit")]
    Domain,
    #[error("token kind must be v (deterministic) or r (random)")]
    Kind,
    #[error("token key version must be a number from 1")]
    Version,
    #[error("token body must be {BODY_CHARS} characters of lower-case base32")]
    Body,
}

/// A parsed token, borrowing from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub domain: &'a str,
    pub kind: TokenKind,
    pub version: u32,
    pub body: &'a str,
}

impl<'a> Token<'a> {
    /// Parses and validates every part.
    pub fn parse(text: &'a str) -> Result<Token<'a>, TokenError> {
        let mut parts = text.split(':');
        let (Some(PREFIX), Some(domain), Some(kv), Some(body), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Shape);
        };
        check_domain(domain)?;
        let kind = match kv.as_bytes().first() {
            Some(b'v') => TokenKind::Deterministic,
            Some(b'r') => TokenKind::Random,
            _ => return Err(TokenError::Kind),
        };
        let digits = &kv[1..];
        if digits.is_empty()
            || digits.len() > 9
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(TokenError::Version);
        }
        let version = digits.parse().map_err(|_| TokenError::Version)?;
        if body.len() != BODY_CHARS || base32::decode(body).is_none() {
            return Err(TokenError::Body);
        }
        Ok(Token {
            domain,
            kind,
            version,
            body,
        })
    }
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}:{}:{}{}:{}",
            self.domain,
            self.kind.letter(),
            self.version,
            self.body
        )
    }
}

/// Checks a token domain name.
pub fn check_domain(domain: &str) -> Result<(), TokenError> {
    let b = domain.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_DOMAIN
        && b[0] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    ok.then_some(()).ok_or(TokenError::Domain)
}

/// Makes the tokens of one domain: keys derived once per usable version.
pub struct Tokenizer {
    domain: String,
    active: u32,
    /// A keyed HMAC state per usable version, cloned for each token.
    keys: BTreeMap<u32, Hmac<Sha256>>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("domain", &self.domain)
            .field("active", &self.active)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Errors building a tokenizer: a bad domain or an unusable key ring.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl Tokenizer {
    /// Derives the domain's key for every version of the ring that is not
    /// retired.
    pub fn new(ring: &KeyRing, domain: &str) -> Result<Tokenizer, TokenizerError> {
        check_domain(domain)?;
        // The active version must be usable; older ones are optional.
        ring.secret(ring.active_version())?;
        let keys = ring
            .usable()
            .map(|(version, secret)| (version, derive(secret, domain, version)))
            .collect();
        Ok(Tokenizer {
            domain: domain.to_string(),
            active: ring.active_version(),
            keys,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn active_version(&self) -> u32 {
        self.active
    }

    /// The deterministic token of an identifier under the active version.
    pub fn deterministic(&self, system: &str, value: &str) -> String {
        // `keys` always holds the active version (checked in `new`).
        self.deterministic_with(self.active, system, value)
            .unwrap_or_default()
    }

    /// The deterministic token under a given version (to recognise tokens
    /// made before a rotation); `None` for a version that is not usable.
    pub fn deterministic_with(&self, version: u32, system: &str, value: &str) -> Option<String> {
        let mut mac = self.keys.get(&version)?.clone();
        for part in [HMAC_LABEL, system.as_bytes(), value.as_bytes()] {
            // Length-prefixed, so ("ab","c") and ("a","bc") differ.
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        Some(format_token(
            &self.domain,
            TokenKind::Deterministic,
            version,
            &digest[..BODY_BYTES],
        ))
    }

    /// A fresh random token under the active version (the vault records
    /// what it stands for).
    pub fn random(&self) -> String {
        random_unchecked(&self.domain, self.active)
    }
}

/// What the stages need from the token vault. The vault
/// (`consentry_vault::Vault`) implements it; stages hold a `dyn TokenVault`
/// and never a store. `Unavailable` says only that the vault could not
/// answer: the runtime retries the batch, nothing is written for it.
pub trait TokenVault: Send + Sync {
    /// The subject's random linkage token in `domain`: the one issued
    /// before, or a new one standing for `identity`. `Shredded` once the
    /// subject's consent was withdrawn for the domain, until it is granted
    /// again (`reinstate`): a record still in flight cannot bring the
    /// subject back.
    fn subject_token(
        &self,
        domain: &str,
        subject: &str,
        identity: &[u8],
    ) -> Result<String, VaultRefusal>;

    /// Makes a deterministic token resolvable through the vault: stores
    /// `identity` sealed under the subject's data key, unless it already
    /// is. `Shredded` as above.
    fn register(
        &self,
        token: &str,
        domain: &str,
        subject: &str,
        identity: &[u8],
    ) -> Result<(), VaultRefusal>;

    /// Crypto-shreds what the vault holds for `subject` in `domain` (its
    /// data key, sealed entries and linkage token), so none of the
    /// subject's tokens of that domain resolves again, and leaves a
    /// tombstone so nothing is created for it again until `reinstate`.
    /// Idempotent: returns how many keys went, 0 the second time.
    fn shred(&self, subject: &str, domain: &str) -> Result<usize, VaultUnavailable>;

    /// Lifts the tombstone of `subject` in `domain`: a newer consent grants
    /// the domain's purpose again. Idempotent.
    fn reinstate(&self, subject: &str, domain: &str) -> Result<(), VaultUnavailable>;
}

/// The vault did not answer (its store is down, a key is missing). The
/// detail names the backend and the failure, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token vault unavailable: {0}")]
pub struct VaultUnavailable(pub String);

/// Why the vault did not issue or register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultRefusal {
    #[error(transparent)]
    Unavailable(#[from] VaultUnavailable),
    /// The subject was shredded in the domain and not granted again since.
    #[error("the subject was shredded in this domain")]
    Shredded,
}

/// A fresh random token of a domain under a key version. Random tokens need
/// no derived key: the vault, which issues them, keeps what they stand for.
pub fn random_token(domain: &str, version: u32) -> Result<String, TokenError> {
    check_domain(domain)?;
    if version == 0 {
        return Err(TokenError::Version);
    }
    Ok(random_unchecked(domain, version))
}

fn random_unchecked(domain: &str, version: u32) -> String {
    let mut body = [0u8; BODY_BYTES];
    rand::rng().fill_bytes(&mut body);
    format_token(domain, TokenKind::Random, version, &body)
}

fn format_token(domain: &str, kind: TokenKind, version: u32, body: &[u8]) -> String {
    let mut t = String::with_capacity(8 + domain.len() + 11 + BODY_CHARS);
    t.push_str(PREFIX);
    t.push(':');
    t.push_str(domain);
    t.push(':');
    t.push(kind.letter());
    t.push_str(&version.to_string());
    t.push(':');
    t.push_str(&base32::encode(body));
    t
}

/// One domain's HMAC key for one version, derived from its master key.
fn derive(master: &Secret, domain: &str, version: u32) -> Hmac<Sha256> {
    let info = [
        b"deterministic:".as_slice(),
        domain.as_bytes(),
        b":",
        &version.to_be_bytes(),
    ]
    .concat();
    let key = master.derive(HKDF_SALT, &info);
    <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("HMAC takes keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{Environment, KeyFile, KeyProvider};
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::from_key(Environment::NonProduction, [7; 32])
    }

    #[test]
    fn deterministic_tokens_have_the_published_form_and_value() {
        let t = Tokenizer::new(&ring(), "crm").unwrap();
        let tok = t.deterministic("urn:oid:2.16.840.1.113883.3.7777.1", "CS1000003");
        // The value is pinned: a change would break every join downstream.
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"consentry/token-key/v1"), &[7; 32]);
        let mut okm = [0u8; 32];
        hk.expand(b"deterministic:crm:\0\0\0\x01", &mut okm)
            .unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&okm).unwrap();
        mac.update(&18u32.to_be_bytes());
        mac.update(b"consentry/token/v1");
        mac.update(&34u32.to_be_bytes());
        mac.update(b"urn:oid:2.16.840.1.113883.3.7777.1");
        mac.update(&9u32.to_be_bytes());
        mac.update(b"CS1000003");
        let want = base32::encode(&mac.finalize().into_bytes()[..20]);
        assert_eq!(tok, format!("tok:crm:v1:{want}"));
        let parsed = Token::parse(&tok).unwrap();
        assert_eq!(
            (parsed.domain, parsed.kind, parsed.version),
            ("crm", TokenKind::Deterministic, 1)
        );
        assert_eq!(parsed.to_string(), tok);
    }

    #[test]
    fn domains_never_join_and_parts_are_separated() {
        let r = ring();
        let crm = Tokenizer::new(&r, "crm").unwrap();
        let trial = Tokenizer::new(&r, "trial").unwrap();
        let (a, b) = (crm.deterministic("s", "v"), trial.deterministic("s", "v"));
        assert_ne!(
            Token::parse(&a).unwrap().body,
            Token::parse(&b).unwrap().body
        );
        assert_ne!(crm.deterministic("ab", "c"), crm.deterministic("a", "bc"));
        assert_ne!(crm.deterministic("s", "v"), crm.deterministic("s", "w"));
    }

    #[test]
    fn tokens_survive_a_restart_and_rotation_keeps_old_versions_resolving() {
        let dir = std::env::temp_dir().join(format!("consentry-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = KeyFile::new(dir.join("keys.json"));
        let mut ring = KeyRing::generate(Environment::NonProduction).unwrap();
        file.save(&ring).unwrap();
        let before = Tokenizer::new(&ring, "crm")
            .unwrap()
            .deterministic("s", "v");
        // A restart: the ring read back from its file gives the same token.
        let reread = file.key_ring().unwrap();
        assert_eq!(
            Tokenizer::new(&reread, "crm")
                .unwrap()
                .deterministic("s", "v"),
            before
        );
        // Rotation: new tokens use v2; v1 tokens are still recognised.
        ring.rotate().unwrap();
        let t = Tokenizer::new(&ring, "crm").unwrap();
        let after = t.deterministic("s", "v");
        assert!(after.starts_with("tok:crm:v2:"), "{after}");
        assert_ne!(after, before);
        assert_eq!(t.deterministic_with(1, "s", "v"), Some(before.clone()));
        // Retired: v1 derives nothing any more.
        ring.retire(1).unwrap();
        let t = Tokenizer::new(&ring, "crm").unwrap();
        assert_eq!(t.deterministic_with(1, "s", "v"), None);
        assert_eq!(
            format!("{t:?}"),
            "Tokenizer { domain: \"crm\", active: 2, versions: [2] }"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_tokens_are_fresh_and_well_formed() {
        let t = Tokenizer::new(&ring(), "trial").unwrap();
        let (a, b) = (t.random(), t.random());
        assert_ne!(a, b);
        for tok in [a, b] {
            let p = Token::parse(&tok).unwrap();
            assert_eq!(
                (p.domain, p.kind, p.version),
                ("trial", TokenKind::Random, 1)
            );
        }
    }

    #[test]
    fn bad_tokens_and_domains_are_named() {
        let body = "a".repeat(32);
        for (text, err) in [
            ("", TokenError::Shape),
            ("tok:crm:v1", TokenError::Shape),
            (&format!("tok:crm:v1:{body}:x")[..], TokenError::Shape),
            (&format!("tik:crm:v1:{body}")[..], TokenError::Shape),
            (&format!("tok:CRM:v1:{body}")[..], TokenError::Domain),
            (&format!("tok::v1:{body}")[..], TokenError::Domain),
            (&format!("tok:-x:v1:{body}")[..], TokenError::Domain),
            (&format!("tok:crm:x1:{body}")[..], TokenError::Kind),
            (&format!("tok:crm::{body}")[..], TokenError::Kind),
            (&format!("tok:crm:v0:{body}")[..], TokenError::Version),
            (&format!("tok:crm:v01:{body}")[..], TokenError::Version),
            (&format!("tok:crm:v:{body}")[..], TokenError::Version),
            (
                &format!("tok:crm:v9999999999:{body}")[..],
                TokenError::Version,
            ),
            ("tok:crm:v1:short", TokenError::Body),
            (
                &format!("tok:crm:v1:{}", "A".repeat(32))[..],
                TokenError::Body,
            ),
        ] {
            assert_eq!(Token::parse(text), Err(err.clone()), "{text}");
        }
        assert!(Tokenizer::new(&ring(), "Bad Domain").is_err());
        assert!(Tokenizer::new(&ring(), &"d".repeat(33)).is_err());
    }

    proptest! {
        #[test]
        fn made_tokens_parse_back(system in "\\PC{0,40}", value in "\\PC{0,40}", domain in "[a-z0-9][a-z0-9-]{0,31}") {
            let t = Tokenizer::new(&ring(), &domain).unwrap();
            let tok = t.deterministic(&system, &value);
            let p = Token::parse(&tok).unwrap();
            prop_assert_eq!(p.domain, domain.as_str());
            prop_assert_eq!(p.to_string(), tok.clone());
            prop_assert_eq!(t.deterministic(&system, &value), tok);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            if let Ok(p) = Token::parse(&text) {
                prop_assert_eq!(p.to_string(), text);
            }
        }
    }
}
