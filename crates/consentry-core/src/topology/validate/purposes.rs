//! Checks of `purposes:`: each purpose's consent code, destination,
//! profile, allowlist, token domain, linkage and de-identification settings.

use std::collections::BTreeMap;

use super::{raw, valid_token_domain, Validator};
use crate::topology::model::*;
use crate::topology::{INTERNAL_FIELDS, RESERVED_TOKEN_DOMAINS};

impl Validator<'_> {
    pub(super) fn purposes(
        &mut self,
        raw: &BTreeMap<String, raw::Purpose>,
        destinations: &BTreeMap<String, Destination>,
        fields: &BTreeMap<String, FieldClass>,
    ) -> BTreeMap<String, Purpose> {
        let mut out = BTreeMap::new();
        let mut topic_owner: BTreeMap<String, String> = BTreeMap::new();
        let mut domain_owner: BTreeMap<String, String> = BTreeMap::new();
        if raw.is_empty() {
            self.error(
                "purposes",
                "no purposes are defined",
                "define at least one purpose",
            );
        }
        for (name, p) in raw {
            let path = format!("purposes.{name}");
            if p.consent_code.is_empty() || !p.consent_code.chars().all(|c| c.is_ascii_uppercase())
            {
                self.error(
                    &format!("{path}.consent_code"),
                    format!(
                        "purpose '{name}' has consent code '{}', which is not a v3 ActReason code",
                        p.consent_code
                    ),
                    "use an upper-case ActReason code such as CAREMGT, HRESCH, HOPERAT or HMARKT",
                );
            }
            let topic = match destinations.get(&p.destination) {
                Some(d) => d.topic.clone(),
                None => {
                    let known: Vec<_> = destinations.keys().cloned().collect();
                    self.error(
                        &format!("{path}.destination"),
                        format!(
                            "purpose '{name}' names destination '{}', which is not defined",
                            p.destination
                        ),
                        format!("use one of: {}", known.join(", ")),
                    );
                    String::new()
                }
            };
            if !topic.is_empty() {
                if let Some(other) = topic_owner.insert(topic.clone(), name.clone()) {
                    self.error(
                        &format!("{path}.destination"),
                        format!("purposes '{other}' and '{name}' share destination topic '{topic}'"),
                        "give each purpose its own destination topic, so revocation notices and allowlists stay per purpose",
                    );
                }
            }
            for (i, f) in p.allow.iter().enumerate() {
                if INTERNAL_FIELDS.contains(&f.as_str()) {
                    self.error(
                        &format!("{path}.allow[{i}]"),
                        format!("purpose '{name}' allows field '{f}', which never leaves the boundary"),
                        "remove it: it is the boundary's own bookkeeping (the subject's pseudonym, the consent basis)",
                    );
                } else if !fields.contains_key(f) {
                    self.error(
                        &format!("{path}.allow[{i}]"),
                        format!("purpose '{name}' allows field '{f}', which is not a classified envelope field"),
                        "use a path listed under `fields:`",
                    );
                }
            }
            let token_domain = p.token_domain.clone().unwrap_or_else(|| name.clone());
            if !valid_token_domain(&token_domain) {
                self.error(
                    &format!("{path}.token_domain"),
                    format!("purpose '{name}' has token domain '{token_domain}', which is not a valid domain"),
                    "use 1 to 32 lower-case letters, digits or '-', not starting with '-'",
                );
            } else if RESERVED_TOKEN_DOMAINS.contains(&token_domain.as_str()) {
                self.error(
                    &format!("{path}.token_domain"),
                    format!(
                        "purpose '{name}' has token domain '{token_domain}', which is reserved"
                    ),
                    "pick another domain: the reserved ones key Consentry's own tables",
                );
            } else if let Some(other) = domain_owner.insert(token_domain.clone(), name.clone()) {
                self.error(
                    &format!("{path}.token_domain"),
                    format!("purposes '{other}' and '{name}' share token domain '{token_domain}'"),
                    "give each purpose its own token domain: tokens of one domain join, across domains they never do",
                );
            }
            let linkage = self.linkage(&path, name, p);
            let deidentify = self.deidentify_spec(&path, name, p);
            out.insert(
                name.clone(),
                Purpose {
                    name: name.clone(),
                    consent_code: p.consent_code.clone(),
                    channel: p.channel.clone().unwrap_or_else(|| "*".to_string()),
                    on_missing_consent: p.on_missing_consent.unwrap_or_default(),
                    destination: p.destination.clone(),
                    topic,
                    profile: p.profile,
                    allow: p.allow.iter().cloned().collect(),
                    token_domain,
                    linkage,
                    deidentify,
                },
            );
        }
        out
    }

    fn linkage(&mut self, path: &str, name: &str, p: &raw::Purpose) -> Linkage {
        let default = if p.profile.is_phi() {
            Linkage::Deterministic
        } else {
            Linkage::None
        };
        let linkage = p.linkage.unwrap_or(default);
        match (p.profile, linkage) {
            (Profile::SafeHarbor | Profile::AggregateOnly, Linkage::Deterministic) => self.error(
                &format!("{path}.linkage"),
                format!(
                    "purpose '{name}' ({}) asks for deterministic tokens; HIPAA 164.514(c) forbids a re-identification code derived from the individual's information in de-identified data",
                    p.profile.as_str()
                ),
                "use `linkage: random` (a vaulted random token per subject) or `linkage: none`",
            ),
            (Profile::AggregateOnly, Linkage::Random) => self.error(
                &format!("{path}.linkage"),
                format!("purpose '{name}' is aggregate-only and cannot be linked to a subject"),
                "use `linkage: none`",
            ),
            _ => {}
        }
        linkage
    }

    fn deidentify_spec(&mut self, path: &str, name: &str, p: &raw::Purpose) -> DeidentifySpec {
        let d = &p.deidentify;
        let path = format!("{path}.deidentify");
        let dates = d.dates.unwrap_or_default();
        if dates == DateMode::Shift && p.profile != Profile::SafeHarbor {
            self.error(
                &format!("{path}.dates"),
                format!(
                    "purpose '{name}' shifts dates, but its profile {} keeps them",
                    p.profile.as_str()
                ),
                "remove `dates: shift`, or use the safe-harbor profile",
            );
        }
        let shift_max_days = d.shift_max_days.unwrap_or(DEFAULT_SHIFT_MAX_DAYS);
        if !(1..=3650).contains(&shift_max_days) {
            self.error(
                &format!("{path}.shift_max_days"),
                format!("purpose '{name}' has shift_max_days {shift_max_days}"),
                "use 1 to 3650 days",
            );
        }
        let age = match d.age.as_deref() {
            None | Some("omit") => AgeMode::Omit,
            Some("years") => AgeMode::Years,
            Some(band) => match band
                .strip_prefix("band-")
                .and_then(|w| w.parse::<u32>().ok())
            {
                Some(w) if (2..=50).contains(&w) => AgeMode::Band(w),
                _ => {
                    self.error(
                        &format!("{path}.age"),
                        format!("purpose '{name}' has age '{band}'"),
                        "use omit, years, or band-N with N from 2 to 50 (band-10: 40-49)",
                    );
                    AgeMode::Omit
                }
            },
        };
        for (i, c) in d.rollup_codes.iter().enumerate() {
            let ok = c == "*"
                || (!c.is_empty()
                    && c.len() <= 8
                    && c.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.'));
            if !ok {
                self.error(
                    &format!("{path}.rollup_codes[{i}]"),
                    format!(
                        "purpose '{name}' rolls up '{c}', which is not an ICD-10 code or prefix"
                    ),
                    "use an upper-case ICD-10 code or prefix (E75, Q87.4), or * for every code",
                );
            }
        }
        DeidentifySpec {
            dates,
            shift_max_days,
            keep_text: d.keep_text,
            age,
            rollup_codes: d.rollup_codes.clone(),
        }
    }
}
