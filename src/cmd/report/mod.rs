//! `consentry report`: the measures a privacy programme reports, computed
//! from the trail itself: the audit topic (verified with the key ring),
//! the disclosure ledger, the consent table's history, the vault's audit
//! records and what each Safe Harbor destination holds. Text, JSON (the
//! same numbers) or one self-contained HTML page.
//!
//! `mod.rs` reads; `measures` computes (pure, unit-tested); `render`
//! writes text and HTML.

mod measures;
mod render;

use clap::{Args, ValueEnum};
use consentry_core::avro::{self, split_wire};
use consentry_core::chain::HashCheck;
use consentry_core::consent::ConsentEntry;
use consentry_core::disclosure::Disclosure;
use consentry_core::headers;
use consentry_core::topology::Profile;
use consentry_crypto::AuditKeys;
use consentry_runtime::codec::SchemaCache;
use consentry_runtime::kafka::read_all;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::services::ServiceArgs;
use super::{now_ms, Global};

const READ_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Html,
}

#[derive(Args)]
pub struct ReportArgs {
    /// The period covered, back from now: `30m`, `24h`, `7d`, `4w`.
    #[arg(long, default_value = "7d", value_parser = parse_period)]
    pub since: Duration,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// The smallest group size wanted over a Safe Harbor destination's
    /// quasi-identifiers.
    #[arg(long, default_value_t = 5)]
    pub k: u64,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub services: ServiceArgs,
}

/// `30m`, `24h`, `7d`, `4w` (a bare number is days).
fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}': a number followed by m, h, d or w"))?;
    let unit_s = match unit {
        "m" => 60,
        "h" => 3_600,
        "" | "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("'{s}': the unit is m, h, d or w")),
    };
    n.checked_mul(unit_s)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{s}' is too long a period"))
}

pub fn execute(global: &Global, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let topology = global.load_topology()?;
    let conn = global.connection()?;
    let now = now_ms();
    let since = now.saturating_sub(i64::try_from(args.since.as_millis()).unwrap_or(i64::MAX));

    // The trail, verified with the key ring: a disclosure counts as backed
    // only by a record whose own hash verifies.
    let ring = args.services.required_key_ring()?;
    let keys = AuditKeys::new(&ring)?;
    let public = keys.checkpoint_public_keys();
    let (verification, records) = super::audit::check_trail(
        &conn,
        &topology,
        &topology.audit_topic,
        Some(&keys),
        &public,
    )?;
    let trail = measures::Trail {
        intact: verification.is_clean(),
        records: verification.records,
        breaks: verification.all_breaks().count(),
    };
    let audit = records
        .into_iter()
        .map(|r| (r.record, r.check == HashCheck::Valid))
        .collect();

    let mut cache = SchemaCache::for_connection(&conn)?;
    let mut undecodable_disclosures = 0;
    let mut disclosures = Vec::new();
    for m in read_all(
        &conn,
        &conn.physical(&topology.disclosure_topic),
        READ_TIMEOUT,
    )? {
        let decoded = m.payload().and_then(|p| {
            let (id, body) = split_wire(p).ok()?;
            avro::decode_disclosure(body, cache.writer(id).ok()?).ok()
        });
        match decoded {
            Some(d) => disclosures.push(d),
            None => undecodable_disclosures += 1,
        }
    }
    let subject_of: HashMap<&str, &str> = disclosures
        .iter()
        .map(|d: &Disclosure| (d.disclosure_id.as_str(), d.subject_token.as_str()))
        .collect();

    // The consent table as the topic still holds it (compacted), in log
    // order; a tombstone is an erasure, dated by the broker.
    let consent_topic = topology
        .stage("consent-ledger")
        .and_then(|s| s.state.clone())
        .ok_or_else(|| anyhow::anyhow!("the topology has no consent table"))?;
    let consent = read_all(&conn, &conn.physical(&consent_topic), READ_TIMEOUT)?
        .iter()
        .filter_map(|m| {
            let key = std::str::from_utf8(m.key()?).ok()?.to_string();
            match m.payload() {
                None => Some((key, m.timestamp_ms.unwrap_or(0), None)),
                Some(p) => {
                    let e = ConsentEntry::decode(p)?;
                    Some((key, e.received_ms, Some(e)))
                }
            }
        })
        .collect();

    // What each Safe Harbor destination holds, each record once, with its
    // subject from the ledger.
    let mut released = Vec::new();
    for p in topology
        .purposes
        .values()
        .filter(|p| p.profile == Profile::SafeHarbor)
    {
        let mut seen = BTreeSet::new();
        for m in read_all(&conn, &conn.physical(&p.topic), READ_TIMEOUT)? {
            let key = m.header(headers::IDEMPOTENCY_KEY).map(String::from);
            if key.as_ref().is_some_and(|k| !seen.insert(k.clone())) {
                continue;
            }
            let Some(Ok(event)) = m.payload().map(|b| cache.decode_event(b)) else {
                continue;
            };
            if measures::is_notice(&event.event_type) {
                continue;
            }
            released.push(measures::ReleasedRecord {
                purpose: p.name.clone(),
                at_ms: m.timestamp_ms.unwrap_or(now),
                subject: key
                    .as_deref()
                    .and_then(|k| subject_of.get(k))
                    .map(|s| s.to_string()),
                event,
            });
        }
    }

    let inputs = measures::Inputs {
        audit,
        disclosures,
        consent,
        released,
        undecodable_disclosures,
        trail,
    };
    let report = measures::compute(&topology, &inputs, since, now, args.k);
    let text = match args.format {
        ReportFormat::Text => render::text(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        ReportFormat::Html => render::html(&report),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.kind()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_with_their_units() {
        assert_eq!(parse_period("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_period("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_period("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_period("2"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_period("1w"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "d", "7y", "-1d", "99999999999999999w"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }
}
