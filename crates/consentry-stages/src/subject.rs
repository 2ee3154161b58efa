//! The subject's internal pseudonym (`subject_token`): the deterministic
//! token of its subject key in the reserved `subject` domain
//! (`tok:subject:v<N>:…`), under the ring's anchor version (its oldest
//! usable one), so a key rotation changes no pseudonym: the consent table
//! and route's record of disclosures stay keyed as they were, and a
//! revocation after a rotation still finds every destination that received
//! the subject's data. consent-gate gives it to every record; the
//! disclosure ledger and the consent table key on it, and `consentry audit
//! disclosures` computes it from an identifier to look a subject up without
//! the identifier ever being stored or searched for.

use consentry_core::envelope::Text;
use consentry_core::topology::SUBJECT_TOKEN_DOMAIN;
use consentry_crypto::token::TokenizerError;
use consentry_crypto::{KeyRing, Tokenizer};

/// The identifier system under which a subject key is tokenized.
const SUBJECT_KEY_SYSTEM: &str = "consentry:subject-key";

/// Makes subject pseudonyms: the domain's keys derived once.
pub struct SubjectPseudonyms {
    tokens: Tokenizer,
    anchor: u32,
}

impl SubjectPseudonyms {
    pub fn new(ring: &KeyRing) -> Result<SubjectPseudonyms, TokenizerError> {
        Tokenizer::new(ring, SUBJECT_TOKEN_DOMAIN).map(|tokens| SubjectPseudonyms {
            tokens,
            anchor: ring.anchor_version(),
        })
    }

    /// The pseudonym under the anchor key version.
    pub fn of(&self, subject_key: &str) -> Text {
        self.tokens
            .deterministic_with(self.anchor, SUBJECT_KEY_SYSTEM, subject_key)
            .map(Text::from)
            .unwrap_or_default()
    }

    /// The pseudonym under every usable key version of `ring` (records
    /// written before a rotation carry an older one).
    pub fn all_versions(&self, ring: &KeyRing, subject_key: &str) -> Vec<String> {
        ring.versions()
            .iter()
            .filter_map(|v| {
                self.tokens
                    .deterministic_with(v.version, SUBJECT_KEY_SYSTEM, subject_key)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consentry_crypto::Environment;

    #[test]
    fn one_pseudonym_per_usable_version_and_none_for_a_retired_one() {
        let mut ring = KeyRing::from_key(Environment::NonProduction, [3; 32]);
        let v1 = SubjectPseudonyms::new(&ring).unwrap().of("key-a");
        assert!(v1.starts_with("tok:subject:v1:"));
        ring.rotate().unwrap();
        let p = SubjectPseudonyms::new(&ring).unwrap();
        // A rotation keeps the pseudonym (the anchor version's).
        assert_eq!(p.of("key-a"), v1);
        let all = p.all_versions(&ring, "key-a");
        assert_eq!(all.len(), 2);
        assert!(all.contains(&v1.to_string()));
        assert_ne!(p.of("key-a"), p.of("key-b"));
        ring.retire(1).unwrap();
        let p = SubjectPseudonyms::new(&ring).unwrap();
        assert!(p.of("key-a").starts_with("tok:subject:v2:"));
        assert_eq!(p.all_versions(&ring, "key-a"), [p.of("key-a").to_string()]);
    }
}
