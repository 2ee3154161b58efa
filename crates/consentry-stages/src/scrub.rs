//! Free-text scrubbing (issue 4, in progress): for the purposes that may
//! keep free text at all (the default drops it). Two passes:
//!
//! 1. the record's own values (names, identifiers, address parts: whatever
//!    the caller passes), found case-insensitively as whole words;
//! 2. patterns for the identifier kinds that have a shape: URLs, e-mail
//!    and IP addresses, SSNs, telephone and fax numbers, dates, street
//!    addresses, and any token with five or more digits (record, account,
//!    plan, licence, device, vehicle and biometric numbers, ZIP codes).
//!
//! Names have no shape; besides the record's own, only names after a
//! title (`Pt`, `Patient`, `Mr`, `Mrs`, `Ms`, `Dr`, ...) are found. Each
//! finding becomes `[kind]`. Other names cannot be found; that is why
//! scrubbed text is still classed highly restricted, why de-identify drops
//! a note whose record does not carry the subject's names, and why text is
//! only kept where a purpose says so.

use regex::{Captures, Regex};

pub struct Scrubber {
    patterns: Regex,
}

impl Default for Scrubber {
    fn default() -> Self {
        Scrubber::new()
    }
}

/// The patterns, most specific first (the leftmost match wins, and among
/// matches at one place the first alternative).
const PATTERNS: &str = r#"(?x)
  (?P<url>(?i:\b(?:https?://|www\.))[^\s<>"]+)
| (?P<email>[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,})
| (?P<ip>\b(?:\d{1,3}\.){3}\d{1,3}\b)
| (?P<ssn>\b\d{3}-\d{2}-\d{4}\b)
| (?P<date>\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b
    |(?i:\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2},?\s+\d{4}\b))
| (?P<phone>(?:\+?1[-.\s]?)?(?:\(\d{3}\)\s?|\b\d{3}[-.\s])?\b\d{3}[-.]\d{4}\b)
| (?P<name>\b(?:Pt|Patient|Mr|Mrs|Ms|Miss|Mx|Dr)\.?[\ \t]+[A-Z][a-z]+(?:[\ \t]+[A-Z][a-z'\-]+){0,2})
| (?P<address>\b\d{1,6}\s+(?:[A-Z][a-z]+\s+){1,3}(?:St|Street|Rd|Road|Ave|Avenue|Blvd|Dr|Drive|Ln|Lane|Way|Ct|Court|Pl|Place|Hwy)\b\.?)
| (?P<token>[A-Za-z0-9()_\-]*\d[A-Za-z0-9()_\-]*)
"#;

impl Scrubber {
    pub fn new() -> Scrubber {
        Scrubber {
            // A constant pattern, covered by the tests: it compiles.
            patterns: Regex::new(PATTERNS).expect("the scrub patterns compile"),
        }
    }

    /// `text` with the record's `known` values and every shaped identifier
    /// replaced, and the kinds found (sorted, each once) for the recipe.
    pub fn scrub(&self, text: &str, known: &[&str]) -> (String, Vec<&'static str>) {
        let mut found = Vec::new();
        let text = replace_known(text, known, &mut found);
        let out = self.patterns.replace_all(&text, |c: &Captures<'_>| {
            let (kind, whole) = [
                ("url", "[url]"),
                ("email", "[email]"),
                ("ip", "[ip]"),
                ("ssn", "[ssn]"),
                ("date", "[date]"),
                ("phone", "[phone]"),
                ("address", "[address]"),
                ("name", "[name]"),
            ]
            .iter()
            .find(|(name, _)| c.name(name).is_some())
            .copied()
            .unwrap_or(("token", "[id]"));
            let matched = c.get(0).map_or("", |m| m.as_str());
            if kind == "token" && matched.bytes().filter(u8::is_ascii_digit).count() < 5 {
                return matched.to_string();
            }
            found.push(whole);
            whole.to_string()
        });
        let mut kinds = found;
        kinds.sort();
        kinds.dedup();
        (out.into_owned(), kinds)
    }
}

/// Replaces each known value (at least two characters) wherever it occurs
/// as a whole word, ignoring ASCII case; longest values first, so a full
/// name goes before its parts.
fn replace_known(text: &str, known: &[&str], found: &mut Vec<&'static str>) -> String {
    let mut values: Vec<&str> = known
        .iter()
        .map(|v| v.trim())
        .filter(|v| v.chars().count() >= 2)
        .collect();
    // Longest first; equal values end up adjacent, so dedup drops them.
    values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    values.dedup();
    let mut out = text.to_string();
    for v in values {
        let lower = out.to_ascii_lowercase();
        let needle = v.to_ascii_lowercase();
        let mut result = String::with_capacity(out.len());
        let mut last = 0;
        let mut from = 0;
        while let Some(i) = lower[from..].find(&needle).map(|i| i + from) {
            let end = i + needle.len();
            let before = out[..i].chars().next_back();
            let after = out[end..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
            if !word(before) && !word(after) {
                result.push_str(&out[last..i]);
                result.push_str("[value]");
                found.push("[value]");
                last = end;
            }
            from = end;
        }
        result.push_str(&out[last..]);
        out = result;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use consentry_synth::{patients, SynthConfig};
    use proptest::prelude::*;

    #[test]
    fn every_shaped_identifier_of_a_synthetic_note_is_removed() {
        let cfg = SynthConfig::new(7, 20);
        let s = Scrubber::new();
        for p in patients(&cfg) {
            let note = format!(
                "Pt {} {} (MRN {}) seen {}. Called back on {}, fax {}, email {}. Lives at {}, {} {} {}. \
                 Pacemaker device {}; drives vehicle VIN {}. Portal {} accessed from {}. \
                 Biometric enrolment {}. Insurance member {}, licence {}, SSN {}, account {}.",
                p.given, p.family, p.mrn, p.birth_date, p.phone, p.fax, p.email, p.street,
                p.city, p.state, p.zip, p.device_id, p.vehicle_id, p.portal_url, p.ip,
                p.biometric_id, p.plan_beneficiary, p.drivers_license, p.ssn, p.account
            );
            // Patterns alone: everything with a shape goes.
            let (by_shape, kinds) = s.scrub(&note, &[]);
            for v in [
                &p.mrn,
                &p.birth_date,
                &p.phone,
                &p.fax,
                &p.email,
                &p.street,
                &p.zip,
                &p.device_id,
                &p.vehicle_id,
                &p.portal_url,
                &p.ip,
                &p.biometric_id,
                &p.plan_beneficiary,
                &p.drivers_license,
                &p.ssn,
                &p.account,
            ] {
                assert!(!by_shape.contains(v.as_str()), "{v} survived in {by_shape}");
            }
            for k in [
                "[url]",
                "[email]",
                "[ip]",
                "[ssn]",
                "[phone]",
                "[address]",
                "[id]",
            ] {
                assert!(kinds.contains(&k), "{k} not reported: {kinds:?}");
            }
            // With the record's own values, names and places go too.
            let (scrubbed, _) = s.scrub(&note, &[&p.given, &p.family, p.city]);
            for v in [&p.given, &p.family] {
                assert!(!scrubbed.contains(v.as_str()), "{v} survived in {scrubbed}");
            }
            assert!(
                scrubbed.starts_with("Pt [value] [value] (MRN [id]"),
                "{scrubbed}"
            );
        }
    }

    #[test]
    fn ordinary_words_and_small_numbers_stay() {
        let s = Scrubber::new();
        let (out, kinds) = s.scrub("BP 120/80 after 2 doses; Alison saw Al.", &["Al"]);
        assert_eq!(out, "BP 120/80 after 2 doses; Alison saw [value].");
        assert_eq!(kinds, ["[value]"]);
        let (out, _) = s.scrub("Seen on March 12, 1964 and 03/12/1964 and 1964-03-12.", &[]);
        assert_eq!(out, "Seen on [date] and [date] and [date].");
        let (out, _) = s.scrub("Call (217) 555-0122 or +1 217.555.0199.", &[]);
        assert_eq!(out, "Call [phone] or [phone].");
    }

    proptest! {
        #[test]
        fn never_panics_and_known_values_never_survive(
            text in "\\PC{0,120}", known in proptest::collection::vec("[A-Za-z]{2,8}", 0..4),
        ) {
            let refs: Vec<&str> = known.iter().map(String::as_str).collect();
            let (out, _) = Scrubber::new().scrub(&text, &refs);
            let lower = out.to_ascii_lowercase();
            for k in &known {
                let k = k.to_ascii_lowercase();
                // A survivor may only sit inside a longer word.
                for (i, _) in lower.match_indices(&k) {
                    let before = lower[..i].chars().next_back();
                    let after = lower[i + k.len()..].chars().next();
                    prop_assert!(
                        before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric),
                        "{k} survived as a word in {out:?}"
                    );
                }
            }
        }
    }
}
