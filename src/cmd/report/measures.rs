//! The compliance report's measures, computed from what was read (pure:
//! no broker here). Every count is of distinct records: a batch retried
//! after an aborted transaction (which the local broker shows) writes
//! its audit records and disclosures again under the same ids.

use consentry_core::audit::{AuditRecord, Decision};
use consentry_core::consent::{ConsentEntry, ConsentReason};
use consentry_core::disclosure::Disclosure;
use consentry_core::stage::StageName;
use consentry_core::topology::{FieldClass, Profile, Topology};
use consentry_core::CanonicalEvent;
use consentry_stages::consent_gate::CONSENT_NEEDED;
use consentry_stages::replay::RECORD_RETRACTED;
use consentry_stages::route::CONSENT_REVOKED;
use consentry_stages::time::{civil_from_days, civil_to_epoch_ms};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What the report reads, already decoded.
pub struct Inputs {
    /// Audit records with whether each one's own hash verified under the
    /// key ring.
    pub audit: Vec<(AuditRecord, bool)>,
    pub disclosures: Vec<Disclosure>,
    /// `consent.state` as it still holds it (compacted: the latest entry
    /// per key at least), in log order: (table key, when it arrived, the
    /// entry or `None` for an erasure's tombstone).
    pub consent: Vec<(String, i64, Option<ConsentEntry>)>,
    /// Records at each Safe Harbor destination.
    pub released: Vec<ReleasedRecord>,
    /// Disclosure-ledger records that did not decode (counted as unbacked).
    pub undecodable_disclosures: u64,
    /// The verification of the whole trail (`audit verify`).
    pub trail: Trail,
}

/// One record at a Safe Harbor destination.
pub struct ReleasedRecord {
    pub purpose: String,
    pub at_ms: i64,
    /// The subject's pseudonym, from the ledger entry of the record (its
    /// idempotency key is the entry's `disclosure_id`).
    pub subject: Option<String>,
    pub event: CanonicalEvent,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Trail {
    pub intact: bool,
    pub records: usize,
    pub breaks: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at_ms: i64,
    /// Measures cover what happened from here on (`--since`).
    pub since_ms: i64,
    pub policy_version: String,
    pub consent: Vec<ConsentRow>,
    pub phi_footprint: Vec<Footprint>,
    pub detokenizations: Vec<Detokenizations>,
    pub revocation: Revocation,
    pub audit_completeness: Completeness,
    pub denials: Vec<Denials>,
    pub k_anonymity: Vec<KAnonymity>,
}

/// The consent gate's decisions for one purpose.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsentRow {
    pub purpose: String,
    pub events: u64,
    pub allowed: u64,
    pub denied: u64,
    /// Sent on only as a "consent needed" notice.
    pub consent_needed: u64,
    /// Events allowed on a validated, active consent, in percent.
    pub validated_pct: f64,
}

/// What one destination holds of the source's PHI.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Footprint {
    pub purpose: String,
    pub destination: String,
    pub profile: String,
    /// Whether its records remain PHI (limited data set, identified-tokenized).
    pub phi: bool,
    pub records: u64,
    /// Fields other than operational ones, each with the records carrying it.
    pub fields: Vec<FieldCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldCount {
    pub field: String,
    pub class: String,
    pub records: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Detokenizations {
    pub caller: String,
    /// ISO week, `2026-W49`.
    pub week: String,
    pub resolves: u64,
    pub break_glass: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Revocation {
    /// Revocation notices written to destinations.
    pub notices: u64,
    /// From the revocation's arrival on `consent.events` to its notice.
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub max_ms: Option<i64>,
    /// Disclosures made after their subject's consent for the purpose had
    /// been withdrawn (arrived on `consent.events`): must be 0.
    pub disclosures_after_revocation: u64,
    /// Vault resolves of tokens their subjects' revocation or erasure
    /// shredded (refused): recipients asking for revoked subjects.
    pub resolves_after_revocation: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Completeness {
    pub disclosures: u64,
    /// Disclosures whose record route's audit record names, that record's
    /// hash verified under the key ring.
    pub disclosures_backed: u64,
    pub disclosures_backed_pct: f64,
    /// Decisions that let data go on a consent (the gate's allows and
    /// route's forwards on an active consent; not "consent needed"
    /// notices).
    pub decisions: u64,
    /// Of those, naming the consent (reference and version) and the
    /// policy version they relied on.
    pub decisions_naming_consent_and_policy: u64,
    pub decisions_named_pct: f64,
    /// Records route's verified audit records say it wrote to a
    /// destination on a consent, with no ledger entry.
    pub forwards_without_disclosure: u64,
    pub undecodable_disclosures: u64,
    pub trail: Trail,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Denials {
    pub purpose: String,
    pub stage: String,
    pub reason: String,
    pub events: u64,
}

/// Group sizes over a Safe Harbor destination's quasi-identifiers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KAnonymity {
    pub purpose: String,
    pub destination: String,
    /// The configured k (`--k`).
    pub k: u64,
    pub records: u64,
    pub groups: u64,
    /// The smallest group's size in subjects (from the ledger; a record
    /// without a ledger entry counts as a subject of its own).
    pub smallest_group: u64,
    pub groups_under_k: u64,
    pub records_in_groups_under_k: u64,
    /// The quasi-identifiers the destination's records carry (the others
    /// count as suppressed).
    pub quasi_identifiers: Vec<String>,
}

/// The quasi-identifiers grouped on: age band, sex, state, year.
pub const QUASI_IDENTIFIERS: [&str; 4] = [
    "demographics.age",
    "demographics.sex",
    "demographics.state",
    "event_time_ms",
];

/// ISO 8601 week of a time, `YYYY-Www`.
pub fn iso_week(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    // 1970-01-01 was a Thursday; ISO weekday 1 = Monday.
    let weekday = (days + 3).rem_euclid(7) + 1;
    // The week's Thursday decides its year.
    let thursday = days - weekday + 4;
    let (year, _, _) = civil_from_days(thursday);
    // Outside years 1 to 9999 (a clock far off) there is no calendar.
    let Some(jan1) = civil_to_epoch_ms(year, 1, 1, 0, 0, 0).map(|ms| ms / 86_400_000) else {
        return format!("{year}-W??");
    };
    let week = (thursday - jan1) / 7 + 1;
    format!("{year:04}-W{week:02}")
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        (part as f64 * 10_000.0 / whole as f64).round() / 100.0
    }
}

pub(super) fn is_notice(event_type: &str) -> bool {
    matches!(
        event_type,
        CONSENT_NEEDED | CONSENT_REVOKED | RECORD_RETRACTED
    )
}

/// An age as a ten-year band (`30-39`), `90+` kept, `*` when absent.
fn age_band(age: Option<&str>) -> String {
    match age {
        None | Some("") => "*".into(),
        Some(a) if a.contains('-') || a.ends_with('+') => a.into(),
        Some(a) => match a.trim().parse::<u32>() {
            Ok(n) if n >= 90 => "90+".into(),
            Ok(n) => format!("{}-{}", n / 10 * 10, n / 10 * 10 + 9),
            Err(_) => "*".into(),
        },
    }
}

fn year(ms: Option<i64>) -> String {
    ms.map_or("*".into(), |ms| {
        civil_from_days(ms.div_euclid(86_400_000)).0.to_string()
    })
}

/// A record's quasi-identifier values, `*` where it carries none.
fn quasi_identifiers(ev: &CanonicalEvent) -> [String; 4] {
    let d = ev.demographics.as_ref();
    let text = |v: Option<&consentry_core::envelope::Text>| {
        v.map_or("*".to_string(), |t| {
            if t.is_empty() {
                "*".into()
            } else {
                t.to_string()
            }
        })
    };
    [
        age_band(d.and_then(|d| d.age.as_deref())),
        text(d.and_then(|d| d.sex.as_ref())),
        text(d.and_then(|d| d.state.as_ref())),
        year(ev.event_time_ms),
    ]
}

/// A consent table entry (or an erasure's tombstone) and when it arrived.
type Arrived<'a> = (i64, Option<&'a ConsentEntry>);

/// Every measure over what happened since `since_ms`.
pub fn compute(topology: &Topology, inputs: &Inputs, since_ms: i64, now_ms: i64, k: u64) -> Report {
    // Each audit record once (by id), a copy whose hash verifies first.
    let mut once: BTreeMap<&str, (&AuditRecord, bool)> = BTreeMap::new();
    for (a, ok) in inputs
        .audit
        .iter()
        .filter(|(a, _)| a.decision != Decision::Checkpoint)
    {
        let slot = once.entry(a.audit_id.as_str()).or_insert((a, *ok));
        if *ok && !slot.1 {
            *slot = (a, true);
        }
    }
    let all_audit: Vec<(&AuditRecord, bool)> = once.into_values().collect();
    let audit: Vec<(&AuditRecord, bool)> = all_audit
        .iter()
        .filter(|(a, _)| a.processing_time_ms >= since_ms)
        .copied()
        .collect();
    let stage = |a: &AuditRecord| StageName::parse(a.stage.as_str());
    let purpose_of = |a: &AuditRecord| a.purpose.as_deref().unwrap_or("").to_string();

    // Consent validated per purpose: the gate's decisions.
    let mut consent: BTreeMap<String, ConsentRow> = topology
        .purposes
        .keys()
        .map(|p| {
            (
                p.clone(),
                ConsentRow {
                    purpose: p.clone(),
                    events: 0,
                    allowed: 0,
                    denied: 0,
                    consent_needed: 0,
                    validated_pct: 0.0,
                },
            )
        })
        .collect();
    for (a, _) in audit
        .iter()
        .filter(|(a, _)| stage(a) == Some(StageName::ConsentGate))
    {
        let Some(row) = consent.get_mut(a.purpose.as_deref().unwrap_or("")) else {
            continue;
        };
        match a.decision {
            Decision::Allow => row.allowed += 1,
            Decision::Deny => row.denied += 1,
            Decision::Downgrade => row.consent_needed += 1,
            _ => continue,
        }
        row.events += 1;
    }
    for row in consent.values_mut() {
        row.validated_pct = if row.events == 0 {
            0.0
        } else {
            pct(row.allowed, row.events)
        };
    }

    // Disclosures, each once, within the period.
    let mut ids = BTreeSet::new();
    let disclosures: Vec<&Disclosure> = inputs
        .disclosures
        .iter()
        .filter(|d| d.disclosed_at_ms >= since_ms)
        .filter(|d| ids.insert(d.disclosure_id.as_str()))
        .collect();

    // PHI fields per destination.
    let mut footprint: BTreeMap<String, (Footprint, BTreeMap<String, u64>)> = BTreeMap::new();
    for d in disclosures.iter().filter(|d| !is_notice(&d.event_type)) {
        let (f, fields) = footprint.entry(d.purpose.to_string()).or_insert_with(|| {
            (
                Footprint {
                    purpose: d.purpose.to_string(),
                    destination: d.destination.to_string(),
                    profile: d.profile.to_string(),
                    phi: d.phi,
                    records: 0,
                    fields: Vec::new(),
                },
                BTreeMap::new(),
            )
        });
        f.records += 1;
        for field in &d.fields {
            if topology.fields.get(field.as_str()) != Some(&FieldClass::Operational) {
                *fields.entry(field.to_string()).or_default() += 1;
            }
        }
    }
    let phi_footprint = footprint
        .into_values()
        .map(|(mut f, fields)| {
            f.fields = fields
                .into_iter()
                .map(|(field, records)| FieldCount {
                    class: topology
                        .fields
                        .get(&field)
                        .map_or("unclassified", |c| c.as_str())
                        .to_string(),
                    field,
                    records,
                })
                .collect();
            f
        })
        .collect();

    // Detokenizations per caller per week (resolves; opening a
    // quarantined record is not a detokenization).
    let mut detok: BTreeMap<(String, String), Detokenizations> = BTreeMap::new();
    for (a, _) in audit.iter().filter(|(a, _)| {
        a.stage == "vault" && a.token.is_some() && a.quarantine_id.is_none() && a.actor.is_some()
    }) {
        let caller = a.actor.as_deref().unwrap_or_default().to_string();
        let week = iso_week(a.processing_time_ms);
        let row = detok
            .entry((caller.clone(), week.clone()))
            .or_insert(Detokenizations {
                caller,
                week,
                resolves: 0,
                break_glass: 0,
                refused: 0,
            });
        match a.decision {
            Decision::Allow => row.resolves += 1,
            Decision::BreakGlass => {
                row.resolves += 1;
                row.break_glass += 1;
            }
            _ => row.refused += 1,
        }
    }

    // Time to revoke: route's notices, from the revocation's arrival.
    let mut latencies: Vec<i64> = audit
        .iter()
        .filter(|(a, _)| a.decision == Decision::RevocationNotice)
        .filter_map(|(a, _)| Some((a.processing_time_ms - a.event_time_ms?).max(0)))
        .collect();
    latencies.sort_unstable();

    // Disclosures after a revocation: at the time of disclosure, the
    // latest entry to have arrived for the purpose's channel, or for every
    // channel (`*`), withdraws the purpose's consent (revoked, refused, a
    // provision denying it) or is an erasure's tombstone.
    let mut history: BTreeMap<(&str, &str, &str), Vec<Arrived<'_>>> = BTreeMap::new();
    for (key, at, e) in &inputs.consent {
        if let Some(k) = consentry_core::consent::parse_key(key) {
            history.entry(k).or_default().push((*at, e.as_ref()));
        }
    }
    for entries in history.values_mut() {
        entries.sort_by_key(|(at, _)| *at);
    }
    let withdrawn_at = |subject: &str, code: &str, channel: &str, t: i64| {
        [channel, "*"].iter().any(|ch| {
            history
                .get(&(subject, code, *ch))
                .and_then(|es| es.iter().rev().find(|(at, _)| *at <= t))
                .is_some_and(|(_, e)| e.is_none_or(|e| e.refuses(code)))
        })
    };
    let after_revocation = disclosures
        .iter()
        .filter(|d| !is_notice(&d.event_type) && d.consent_reference.is_some())
        .filter(|d| {
            topology.purposes.get(d.purpose.as_str()).is_some_and(|p| {
                withdrawn_at(
                    &d.subject_token,
                    &p.consent_code,
                    &p.channel,
                    d.disclosed_at_ms,
                )
            })
        })
        .count() as u64;

    // Audit completeness.
    // Backed by a verified route record from any time (a disclosure just
    // inside the period may rest on a record just before it).
    let backed: BTreeSet<&str> = all_audit
        .iter()
        .filter(|(a, ok)| *ok && stage(a) == Some(StageName::Route))
        .flat_map(|(a, _)| a.outputs.iter().map(|o| o.idempotency_key.as_str()))
        .collect();
    let disclosures_backed = disclosures
        .iter()
        .filter(|d| backed.contains(d.disclosure_id.as_str()))
        .count() as u64;
    // The other way: what route says it wrote on a consent is in the
    // ledger (any time: the ledger entry is written in the same
    // transaction).
    let ledger: BTreeSet<&str> = inputs
        .disclosures
        .iter()
        .map(|d| d.disclosure_id.as_str())
        .collect();
    let forwards_without_disclosure = audit
        .iter()
        .filter(|(a, ok)| {
            *ok && stage(a) == Some(StageName::Route) && a.decision == Decision::Forward
        })
        .flat_map(|(a, _)| a.outputs.iter())
        .filter(|o| !ledger.contains(o.idempotency_key.as_str()))
        .count() as u64;
    let decisions: Vec<&AuditRecord> = audit
        .iter()
        .filter(|(a, _)| {
            // A "consent needed" notice leaves on no consent: route's
            // forward of one names none.
            match (stage(a), a.decision) {
                (Some(StageName::ConsentGate), Decision::Allow) => true,
                (Some(StageName::Route), Decision::Forward) => {
                    a.reason_code == ConsentReason::Active.as_str()
                }
                _ => false,
            }
        })
        .map(|(a, _)| *a)
        .collect();
    let named = decisions
        .iter()
        .filter(|a| {
            a.consent_reference
                .as_deref()
                .is_some_and(|r| !r.is_empty())
                && a.consent_version.as_deref().is_some_and(|v| !v.is_empty())
                && !a.policy_version.is_empty()
        })
        .count() as u64;

    // Denials by purpose, stage and reason.
    let mut denials: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for (a, _) in audit
        .iter()
        .filter(|(a, _)| a.decision == Decision::Deny && a.stage != "vault")
    {
        *denials
            .entry((
                purpose_of(a),
                a.stage.to_string(),
                a.reason_code.to_string(),
            ))
            .or_default() += 1;
    }

    // k over each Safe Harbor destination's quasi-identifiers.
    let mut k_anonymity = Vec::new();
    for p in topology
        .purposes
        .values()
        .filter(|p| p.profile == Profile::SafeHarbor)
    {
        let carried: Vec<String> = QUASI_IDENTIFIERS
            .iter()
            .filter(|q| p.allow.contains(**q))
            .map(|q| q.to_string())
            .collect();
        // Per group: its subjects and its records.
        let mut groups: BTreeMap<[String; 4], (BTreeSet<String>, u64)> = BTreeMap::new();
        let mut records = 0;
        for (i, r) in inputs
            .released
            .iter()
            .enumerate()
            .filter(|(_, r)| r.purpose == p.name && r.at_ms >= since_ms)
        {
            records += 1;
            let g = groups.entry(quasi_identifiers(&r.event)).or_default();
            // Without a ledger entry, a record is a subject of its own.
            g.0.insert(r.subject.clone().unwrap_or_else(|| format!("#record{i}")));
            g.1 += 1;
        }
        let size = |(subjects, _): &(BTreeSet<String>, u64)| subjects.len() as u64;
        let small: Vec<&(BTreeSet<String>, u64)> =
            groups.values().filter(|g| size(g) < k).collect();
        k_anonymity.push(KAnonymity {
            purpose: p.name.clone(),
            destination: p.destination.clone(),
            k,
            records,
            groups: groups.len() as u64,
            smallest_group: groups.values().map(size).min().unwrap_or(0),
            groups_under_k: small.len() as u64,
            records_in_groups_under_k: small.iter().map(|g| g.1).sum(),
            quasi_identifiers: carried,
        });
    }

    Report {
        generated_at_ms: now_ms,
        since_ms,
        policy_version: topology.policy_version.clone(),
        consent: consent.into_values().collect(),
        phi_footprint,
        detokenizations: detok.into_values().collect(),
        revocation: Revocation {
            notices: latencies.len() as u64,
            p50_ms: percentile(&latencies, 50.0),
            p99_ms: percentile(&latencies, 99.0),
            max_ms: latencies.last().copied(),
            disclosures_after_revocation: after_revocation,
            resolves_after_revocation: audit
                .iter()
                .filter(|(a, _)| a.stage == "vault" && a.reason_code == "shredded")
                .count() as u64,
        },
        audit_completeness: Completeness {
            disclosures: disclosures.len() as u64 + inputs.undecodable_disclosures,
            disclosures_backed,
            disclosures_backed_pct: pct(
                disclosures_backed,
                disclosures.len() as u64 + inputs.undecodable_disclosures,
            ),
            decisions: decisions.len() as u64,
            decisions_naming_consent_and_policy: named,
            decisions_named_pct: pct(named, decisions.len() as u64),
            forwards_without_disclosure,
            undecodable_disclosures: inputs.undecodable_disclosures,
            trail: inputs.trail.clone(),
        },
        denials: denials
            .into_iter()
            .map(|((purpose, stage, reason), events)| Denials {
                purpose,
                stage,
                reason,
                events,
            })
            .collect(),
        k_anonymity,
    }
}

#[cfg(test)]
mod tests;
