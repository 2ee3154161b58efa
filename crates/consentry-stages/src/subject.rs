//! The subject's internal pseudonym (`subject_token`): the deterministic
//! token of its subject key in the reserved `subject` domain
//! (`tok:subject:v<N>:…`). consent-gate gives it to every record; the
//! disclosure ledger and the consent table key on it, and `consentry audit
//! disclosures` computes it from an identifier to look a subject up without
//! the identifier ever being stored or searched for.

use consentry_core::envelope::Text;
use consentry_core::topology::SUBJECT_TOKEN_DOMAIN;
use consentry_crypto::{KeyRing, Tokenizer};

/// The identifier system under which a subject key is tokenized.
const SUBJECT_KEY_SYSTEM: &str = "consentry:subject-key";

/// Makes subject pseudonyms: the domain's keys derived once.
pub struct SubjectPseudonyms(Tokenizer);

impl SubjectPseudonyms {
    pub fn new(ring: &KeyRing) -> Result<SubjectPseudonyms, String> {
        Tokenizer::new(ring, SUBJECT_TOKEN_DOMAIN)
            .map(SubjectPseudonyms)
            .map_err(|e| e.to_string())
    }

    /// The pseudonym under the active key version.
    pub fn of(&self, subject_key: &str) -> Text {
        Text::from(
            self.0
                .deterministic(SUBJECT_KEY_SYSTEM, subject_key)
                .as_str(),
        )
    }

    /// The pseudonym under every usable key version of `ring` (records
    /// written before a rotation carry an older one).
    pub fn all_versions(&self, ring: &KeyRing, subject_key: &str) -> Vec<String> {
        ring.versions()
            .iter()
            .filter_map(|v| {
                self.0
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
        let all = p.all_versions(&ring, "key-a");
        assert_eq!(all.len(), 2);
        assert!(all.contains(&v1.to_string()) && all.contains(&p.of("key-a").to_string()));
        assert_ne!(p.of("key-a"), p.of("key-b"));
        ring.retire(1).unwrap();
        let p = SubjectPseudonyms::new(&ring).unwrap();
        assert_eq!(p.all_versions(&ring, "key-a"), [p.of("key-a").to_string()]);
    }
}
