//! The minimum-necessary matrix (purpose × field → class, allowed or not)
//! and what a policy change would newly release or withhold: the answers
//! behind `consentry topology matrix` and `consentry topology diff`.

use crate::topology::{FieldClass, Topology};
use serde::Serialize;
use std::collections::BTreeSet;

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub purpose: String,
    pub field: String,
    pub class: &'static str,
    pub allowed: bool,
}

/// Every purpose × every classified field, in name order.
pub fn matrix(t: &Topology) -> Vec<Cell> {
    t.purposes
        .values()
        .flat_map(|p| {
            t.fields.iter().map(move |(f, class)| Cell {
                purpose: p.name.clone(),
                field: f.clone(),
                class: class.as_str(),
                allowed: p.allow.contains(f),
            })
        })
        .collect()
}

/// One difference between two policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A field a purpose's destination will now receive.
    Released {
        purpose: String,
        field: String,
        class: &'static str,
    },
    /// A field a purpose's destination will no longer receive.
    Withheld {
        purpose: String,
        field: String,
    },
    PurposeAdded {
        purpose: String,
        fields: usize,
    },
    PurposeRemoved {
        purpose: String,
    },
    /// A purpose's de-identification profile changed.
    Profile {
        purpose: String,
        from: &'static str,
        to: &'static str,
    },
    /// A field's disclosure class changed.
    Class {
        field: String,
        from: &'static str,
        to: &'static str,
    },
}

impl Change {
    /// Changes that release more than before: an auditor's first look.
    pub fn releases(&self) -> bool {
        matches!(self, Change::Released { .. } | Change::PurposeAdded { .. })
            || matches!(self, Change::Class { from, to, .. } if rank(to) < rank(from))
    }
}

/// How restricted a class is (higher: more).
fn rank(class: &str) -> u8 {
    match class {
        "operational" => 0,
        "limited" => 1,
        "phi-restricted" => 2,
        _ => 3,
    }
}

fn class_of(t: &Topology, field: &str) -> &'static str {
    t.fields
        .get(field)
        .copied()
        .unwrap_or(FieldClass::HighlyRestricted)
        .as_str()
}

/// What changes from `old` to `new`.
pub fn diff(old: &Topology, new: &Topology) -> Vec<Change> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = old.purposes.keys().chain(new.purposes.keys()).collect();
    for name in names {
        match (old.purposes.get(name), new.purposes.get(name)) {
            (None, Some(p)) => out.push(Change::PurposeAdded {
                purpose: name.clone(),
                fields: p.allow.len(),
            }),
            (Some(_), None) => out.push(Change::PurposeRemoved {
                purpose: name.clone(),
            }),
            (Some(a), Some(b)) => {
                if a.profile != b.profile {
                    out.push(Change::Profile {
                        purpose: name.clone(),
                        from: a.profile.as_str(),
                        to: b.profile.as_str(),
                    });
                }
                for f in b.allow.difference(&a.allow) {
                    out.push(Change::Released {
                        purpose: name.clone(),
                        field: f.clone(),
                        class: class_of(new, f),
                    });
                }
                for f in a.allow.difference(&b.allow) {
                    out.push(Change::Withheld {
                        purpose: name.clone(),
                        field: f.clone(),
                    });
                }
            }
            (None, None) => {}
        }
    }
    for (f, class) in &new.fields {
        if let Some(before) = old.fields.get(f) {
            if before != class {
                out.push(Change::Class {
                    field: f.clone(),
                    from: before.as_str(),
                    to: class.as_str(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        crate::topology::shipped::TEXT.to_string()
    }

    fn load(text: &str) -> Topology {
        Topology::parse("topology.yaml", text).expect("valid")
    }

    #[test]
    fn the_matrix_has_every_purpose_and_field_and_follows_the_allowlists() {
        let t = load(&shipped());
        let m = matrix(&t);
        assert_eq!(m.len(), t.purposes.len() * t.fields.len());
        let allowed: usize = t.purposes.values().map(|p| p.allow.len()).sum();
        assert_eq!(m.iter().filter(|c| c.allowed).count(), allowed);
        let cell = m
            .iter()
            .find(|c| c.purpose == "patient-support" && c.field == "identifiers.value")
            .unwrap();
        assert_eq!((cell.class, cell.allowed), ("phi-restricted", true));
        assert!(m.iter().all(|c| !(c.field == "note" && c.allowed)));
    }

    #[test]
    fn a_diff_names_what_is_released_withheld_and_reclassified() {
        let old = load(&shipped());
        assert!(diff(&old, &old).is_empty());
        let text = shipped()
            .replace(
                "allow: [event_type, policy_version, purpose]",
                "allow: [event_type, purpose, demographics.state]",
            )
            .replace(
                "  demographics.county: limited",
                "  demographics.county: phi-restricted",
            )
            .replace("  consent.status: operational", "  consent.status: limited");
        let new = load(&text);
        let d = diff(&old, &new);
        assert_eq!(
            d,
            [
                Change::Released {
                    purpose: "marketing".into(),
                    field: "demographics.state".into(),
                    class: "limited"
                },
                Change::Withheld {
                    purpose: "marketing".into(),
                    field: "policy_version".into()
                },
                Change::Class {
                    field: "consent.status".into(),
                    from: "operational",
                    to: "limited"
                },
                Change::Class {
                    field: "demographics.county".into(),
                    from: "limited",
                    to: "phi-restricted"
                },
            ]
        );
        assert_eq!(d.iter().filter(|c| c.releases()).count(), 1);
    }
}
