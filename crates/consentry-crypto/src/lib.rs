//! Key material and tokens.
//!
//! - [`keyring`]: master keys by version, marked for one environment
//!   (production or not), and the providers they come from (a key file, an
//!   environment variable in development; a KMS implements [`KeyProvider`]).
//! - [`sealed`]: AES-256-GCM sealing of vault records: a data key per
//!   subject wrapped by a key-encryption key, records bound to their
//!   token, domain and subject (shredding = deleting the wrapped key).
//! - [`audit`]: the audit chain key (HMAC of each audit record) and the
//!   fingerprint key (keyed digests of records, never their content).
//! - [`destination`]: keyed ids (HMAC per purpose and key version) for
//!   everything id-like that leaves the boundary.
//! - [`quarantine`]: AES-256-GCM sealing of quarantined payloads under a
//!   quarantine key per key version, bound to the quarantine record.
//! - [`shift`]: keyed, bounded, per-subject date shifts.
//! - [`subject_ref`]: the keyed name the vault's store knows a subject by.
//! - [`token`]: the token format `tok:<domain>:<kind><version>:<body>`,
//!   deterministic tokens (HMAC-SHA256 under a key derived with HKDF per
//!   domain and key version, derived once, not per record) and random ones.
//!
//! Secrets never reach `Debug`, `Display` or an error message, and are
//! zeroed when dropped.

pub mod audit;
pub mod base32;
pub mod destination;
pub mod keyring;
#[cfg(any(test, feature = "test-support"))]
pub mod memory_vault;
pub mod quarantine;
pub mod sealed;
pub mod shift;
pub mod subject_ref;
pub mod token;

pub use audit::{AuditKeys, CheckpointKeys, SignatureCheck};
pub use destination::{DestinationIds, IdKind};
pub use keyring::{Environment, KeyError, KeyFile, KeyProvider, KeyRing};
pub use quarantine::{QuarantineContext, QuarantineKeys};
pub use shift::DateShifter;
pub use subject_ref::SubjectRefs;
pub use token::{
    random_token, Token, TokenError, TokenKind, TokenVault, Tokenizer, VaultRefusal,
    VaultUnavailable,
};
