//! The callers file (`consentry vault caller add` writes it): who may call
//! the vault, with which scope and rate, the credential only as its
//! SHA-256 digest.

use crate::access::{Caller, Credentials};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One caller as the callers file lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CallerEntry {
    pub id: String,
    pub credential_sha256: String,
    pub domains: BTreeSet<String>,
    pub purposes: BTreeSet<String>,
    #[serde(default)]
    pub break_glass: bool,
    pub rate_per_minute: u32,
}

/// The callers file: `{"callers": [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CallersFile {
    pub callers: Vec<CallerEntry>,
}

impl CallersFile {
    /// The credentials it defines; an entry whose digest is not 64 hex
    /// characters is an error naming the caller.
    pub fn credentials(&self) -> Result<Credentials, String> {
        let mut creds = Credentials::default();
        for c in &self.callers {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&c.credential_sha256, &mut digest).map_err(|_| {
                format!(
                    "caller '{}': credential_sha256 is not 64 hex characters",
                    c.id
                )
            })?;
            creds.insert_digest(
                digest,
                Caller {
                    id: c.id.clone(),
                    domains: c.domains.clone(),
                    purposes: c.purposes.clone(),
                    break_glass: c.break_glass,
                    rate_per_minute: c.rate_per_minute,
                },
            );
        }
        Ok(creds)
    }
}
