//! Why a stage refuses to build: a service it needs and was not given
//! (saying which stage or purpose needs it, and why), or a key it cannot
//! derive. The messages are what `consentry run` prints, so they name the
//! flag that supplies what is missing.

use consentry_core::stage::StageName;
use consentry_crypto::token::TokenizerError;
use consentry_crypto::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A stage keys its own state or output with the key ring.
    #[error("{stage} needs the key ring ({why})")]
    StageNeedsKeys { stage: StageName, why: &'static str },
    /// A stage calls the token vault whatever the purposes.
    #[error("{stage} needs the token vault ({why})")]
    StageNeedsVault { stage: StageName, why: &'static str },
    /// A Safe Harbor purpose shifts dates with a keyed per-subject shift.
    #[error("purpose '{purpose}' shifts dates, which needs the key ring: pass --key-file (or CONSENTRY_MASTER_KEY in development)")]
    DateShiftNeedsKeys { purpose: String },
    /// A purpose's tokens are deterministic, keyed per token domain.
    #[error("purpose '{purpose}' has deterministic tokens, which need the key ring: pass --key-file (or CONSENTRY_MASTER_KEY in development)")]
    DeterministicTokensNeedKeys { purpose: String },
    /// A purpose's tokens are random (vaulted) or registered with the vault.
    #[error("purpose '{purpose}' needs the token vault: pass --vault (a vault file, or a PostgreSQL connection string)")]
    PurposeNeedsVault { purpose: String },
    /// A purpose's key cannot be derived from the ring.
    #[error("purpose '{purpose}': {source}")]
    PurposeKey { purpose: String, source: KeyError },
    /// A purpose's tokenizer cannot be built from the ring.
    #[error("purpose '{purpose}': {source}")]
    PurposeTokenizer {
        purpose: String,
        source: TokenizerError,
    },
    /// A stage-wide key cannot be derived from the ring.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The subject pseudonyms' tokenizer cannot be built from the ring.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}
