//! `consentry synth`: publish the deterministic synthetic feed to the
//! topology's source topics, or write it to files.

use anyhow::Context;
use clap::Args;
use consentry_core::topology::{SourceFormat, TopicRole, Topology};
use consentry_runtime::kafka::{Outgoing, Publisher};
use consentry_synth::{generate, withdrawals, Feed, SynthConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::Global;

#[derive(Args)]
pub struct SynthArgs {
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 100)]
    pub patients: usize,
    /// Write the feed under this directory instead of publishing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Which part of the feed: the consents (publish and let the consent
    /// ledger read them first, or early events meet unknown consent and
    /// are denied), the EHR records, or both.
    #[arg(long, value_enum, default_value_t = Part::All)]
    pub only: Part,
    /// The first patient's index (default 0): feeds from different first
    /// indices are different patients and messages, never duplicates.
    #[arg(long, default_value_t = 0)]
    pub first_patient: usize,
    /// Add this Z-segment (`ZQX`, a name the topology does not list) to
    /// every HL7 v2 message: a feed with schema drift, for the drift
    /// dashboards and alert.
    #[arg(long, value_parser = z_segment)]
    pub drift_segment: Option<String>,
    /// Instead of the feed: withdraw the consents of the first N patients
    /// who gave any (each Consent again, version 2, `inactive`).
    #[arg(long, conflicts_with_all = ["only", "drift_segment"])]
    pub withdraw: Option<usize>,
}

/// A Z-segment name: `Z` and two capitals or digits.
fn z_segment(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    match b {
        [b'Z', x, y]
            if [x, y]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) =>
        {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "'{s}' is not a Z-segment name (Z and two capitals or digits)"
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    All,
    Consents,
    Ehr,
}

/// The topic each feed goes to, from the topology's roles and formats.
fn topic_for(topology: &Topology, feed: Feed) -> anyhow::Result<String> {
    let (role, format) = match feed {
        Feed::Hl7v2 => (TopicRole::Source, SourceFormat::Hl7v2),
        Feed::Fhir => (TopicRole::Source, SourceFormat::FhirJson),
        Feed::Consent => (TopicRole::ConsentEvents, SourceFormat::FhirJson),
    };
    topology
        .topics
        .values()
        .find(|t| t.role == role && t.format == Some(format))
        .map(|t| t.name.clone())
        .ok_or_else(|| anyhow::anyhow!("the topology has no {role:?} topic with format {format:?}"))
}

pub fn execute(global: &Global, args: SynthArgs) -> anyhow::Result<ExitCode> {
    let topology = global.load_topology()?;
    if args.first_patient.checked_add(args.patients).is_none() {
        anyhow::bail!("--first-patient plus --patients is past the largest index");
    }
    let mut cfg = SynthConfig::new(args.seed, args.patients);
    cfg.first_patient = args.first_patient;
    cfg.subject_system = topology.identity.subject_system.clone();
    let feed = match args.withdraw {
        Some(n) => withdrawals(&cfg, n),
        None => generate(&cfg),
    };
    let records: Vec<_> = feed
        .into_iter()
        .map(|mut r| {
            if let (Some(seg), Feed::Hl7v2) = (&args.drift_segment, r.feed) {
                let text = String::from_utf8_lossy(&r.payload);
                r.payload = format!("{}\r{seg}|1|drift\r", text.trim_end_matches(['\r', '\n']))
                    .into_bytes();
            }
            r
        })
        .filter(|r| match args.only {
            Part::All => true,
            Part::Consents => r.feed == Feed::Consent,
            Part::Ehr => r.feed != Feed::Consent,
        })
        .collect();
    let count = |f: Feed| records.iter().filter(|r| r.feed == f).count();

    if let Some(dir) = args.out {
        for (i, r) in records.iter().enumerate() {
            let (sub, ext) = match r.feed {
                Feed::Hl7v2 => ("hl7v2", "hl7"),
                Feed::Fhir => ("fhir", "json"),
                Feed::Consent => ("consent", "json"),
            };
            let d = dir.join(sub);
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            let name = format!("{i:06}-{}.{ext}", r.kind.replace(['^', ':'], "_"));
            std::fs::write(d.join(&name), &r.payload)
                .with_context(|| format!("cannot write {}", d.join(&name).display()))?;
        }
        println!(
            "synth: wrote {} HL7 v2, {} FHIR and {} consent records under {} (seed {}, {} patients)",
            count(Feed::Hl7v2),
            count(Feed::Fhir),
            count(Feed::Consent),
            dir.display(),
            args.seed,
            args.patients
        );
        return Ok(ExitCode::SUCCESS);
    }

    let conn = global.connection()?;
    let publisher = Publisher::new(&conn)?;
    let topics = [Feed::Hl7v2, Feed::Fhir, Feed::Consent]
        .map(|f| topic_for(&topology, f).map(|t| conn.physical(&t)));
    let [hl7, fhir, consent] = topics;
    let (hl7, fhir, consent) = (hl7?, fhir?, consent?);
    for r in &records {
        let topic = match r.feed {
            Feed::Hl7v2 => &hl7,
            Feed::Fhir => &fhir,
            Feed::Consent => &consent,
        };
        publisher.send(
            topic,
            Outgoing {
                key: Some(r.key.as_bytes()),
                payload: &r.payload,
                ..Outgoing::default()
            },
        )?;
    }
    publisher.finish(Duration::from_secs(60))?;
    println!(
        "synth: published {} HL7 v2 to {hl7}, {} FHIR to {fhir}, {} consents to {consent} (seed {}, {} patients)",
        count(Feed::Hl7v2),
        count(Feed::Fhir),
        count(Feed::Consent),
        args.seed,
        args.patients
    );
    Ok(ExitCode::SUCCESS)
}
