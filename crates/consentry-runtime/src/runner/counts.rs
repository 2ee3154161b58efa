//! What a batch did, counted as it goes and applied to the metrics and the
//! stage's report only once the batch commits; and the batch's phases, to
//! say which one made a slow batch slow.

use super::{now_ms, StageReport};
use crate::Metrics;
use consentry_core::audit::{AuditRecord, Decision, DISCLOSED_AFTER_REVOCATION};
use consentry_core::stage::Released;
use consentry_core::stage::StageName;
use consentry_core::topology::FieldClass;
use consentry_core::ReasonCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::warn;

/// A batch slower than this is logged with where its time went.
pub(super) const SLOW_BATCH: Duration = Duration::from_secs(1);

/// When each phase of a batch's transaction ended, to say which one made a
/// slow batch slow (the stage's own work, an acknowledgement, the commit).
pub(super) struct BatchPhases {
    pub(super) last: Instant,
    pub(super) phases: Vec<(&'static str, Duration)>,
}

impl BatchPhases {
    pub(super) fn new() -> BatchPhases {
        BatchPhases {
            last: Instant::now(),
            phases: Vec::with_capacity(5),
        }
    }

    /// Ends `phase` now; returns how long it took.
    pub(super) fn mark(&mut self, phase: &'static str) -> Duration {
        let now = Instant::now();
        let took = now - self.last;
        self.phases.push((phase, took));
        self.last = now;
        took
    }

    /// `phase=ms` pairs, in order.
    pub(super) fn describe(&self) -> String {
        self.phases
            .iter()
            .map(|(p, d)| format!("{p}={}ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(super) fn warn_if_slow(&self, stage: &str, records: usize) {
        let took: Duration = self.phases.iter().map(|(_, d)| *d).sum();
        if took >= SLOW_BATCH {
            warn!(
                stage,
                records,
                took_ms = took.as_millis() as u64,
                phases = %self.describe(),
                "slow batch"
            );
        }
    }
}

/// Counters for one batch, applied to the metrics only once it commits.
#[derive(Default)]
pub(super) struct BatchCounts {
    pub(super) inputs: BTreeMap<String, u64>,
    pub(super) outputs: BTreeMap<String, u64>,
    /// (purpose, policy version) of the disclosures written.
    pub(super) disclosures: BTreeMap<(String, String), u64>,
    pub(super) quarantined: BTreeMap<ReasonCode, u64>,
    pub(super) drift: BTreeMap<(&'static str, String), u64>,
    pub(super) duplicates: u64,
    pub(super) redriven: u64,
    pub(super) audit: u64,
    /// (purpose, decision, reason) of consent decisions.
    pub(super) consent: BTreeMap<(String, &'static str, String), u64>,
    /// (purpose, arrival ms) of revocations whose notices the batch writes.
    pub(super) revocations: Vec<(String, i64)>,
    /// Purposes of notices flagged: data first disclosed after the
    /// revocation had arrived.
    pub(super) after_revocation: BTreeMap<String, u64>,
    /// Fields released, by (purpose, class).
    pub(super) fields: BTreeMap<(String, FieldClass), u64>,
    /// (purpose, encoded bytes) of records written to destinations.
    pub(super) destination_records: Vec<(String, usize)>,
}

impl BatchCounts {
    pub(super) fn input(&mut self, topic: &str) {
        *self.inputs.entry(topic.to_string()).or_default() += 1;
    }
    pub(super) fn output(&mut self, topic: &str) {
        *self.outputs.entry(topic.to_string()).or_default() += 1;
    }
    pub(super) fn disclosure(&mut self, purpose: &str, policy_version: &str) {
        *self
            .disclosures
            .entry((purpose.to_string(), policy_version.to_string()))
            .or_default() += 1;
    }
    /// Counts what one record to a destination carries.
    pub(super) fn released(&mut self, r: &Released) {
        for (class, n) in &r.fields {
            *self
                .fields
                .entry((r.purpose.to_string(), *class))
                .or_default() += u64::from(*n);
        }
    }
    pub(super) fn destination_record(&mut self, purpose: &str, bytes: usize) {
        self.destination_records.push((purpose.to_string(), bytes));
    }
    pub(super) fn quarantine(&mut self, reason: ReasonCode) {
        *self.quarantined.entry(reason).or_default() += 1;
    }
    pub(super) fn drift(&mut self, source: &'static str, path: &str) {
        *self.drift.entry((source, path.to_string())).or_default() += 1;
    }
    /// Counts a consent decision: every one of the gate's, and route's
    /// re-check when it stops a record; times a revocation notice.
    pub(super) fn consent(&mut self, a: &AuditRecord) {
        let purpose = a.purpose.as_deref().unwrap_or("").to_string();
        // route's allows are the gate's, confirmed: not counted twice.
        use StageName::{ConsentGate, Route, Tokenize};
        let decision = match (StageName::parse(a.stage.as_str()), a.decision) {
            (Some(ConsentGate), Decision::Allow) => Decision::Allow,
            (Some(ConsentGate | Route | Tokenize), Decision::Deny) => Decision::Deny,
            (Some(ConsentGate), Decision::Downgrade) => Decision::Downgrade,
            (Some(Route), Decision::RevocationNotice) => {
                if a.transformations
                    .iter()
                    .any(|t| t.params == DISCLOSED_AFTER_REVOCATION)
                {
                    *self.after_revocation.entry(purpose.clone()).or_default() += 1;
                }
                if let Some(t) = a.event_time_ms {
                    self.revocations.push((purpose, t));
                }
                return;
            }
            _ => return,
        };
        *self
            .consent
            .entry((purpose, decision.as_str(), a.reason_code.to_string()))
            .or_default() += 1;
    }

    pub(super) fn commit(self, stage: &str, m: &Metrics, r: &mut StageReport) {
        for ((purpose, decision, reason), n) in self.consent {
            m.consent_decisions
                .with_label_values(&[stage, &purpose, decision, &reason])
                .inc_by(n);
        }
        // Counted after the commit: the notices are written now.
        let committed = now_ms();
        for (purpose, arrived) in self.revocations {
            m.revocation_seconds
                .with_label_values(&[&purpose])
                .observe((committed - arrived).max(0) as f64 / 1000.0);
        }
        for (t, n) in self.inputs {
            m.records_in.with_label_values(&[stage, &t]).inc_by(n);
            r.records_in += n;
        }
        for (t, n) in self.outputs {
            m.records_out.with_label_values(&[stage, &t]).inc_by(n);
            r.records_out += n;
        }
        for ((purpose, version), n) in self.disclosures {
            m.disclosures
                .with_label_values(&[&purpose, &version])
                .inc_by(n);
        }
        for (purpose, n) in self.after_revocation {
            m.delivered_after_revocation
                .with_label_values(&[&purpose])
                .inc_by(n);
        }
        for ((purpose, class), n) in self.fields {
            m.destination_fields
                .with_label_values(&[&purpose, class.as_str()])
                .inc_by(n);
        }
        for (purpose, bytes) in self.destination_records {
            m.destination_record_bytes
                .with_label_values(&[&purpose])
                .observe(bytes as f64);
        }
        for (reason, n) in self.quarantined {
            m.quarantined
                .with_label_values(&[stage, reason.as_str()])
                .inc_by(n);
            r.quarantined += n;
        }
        for ((source, path), n) in self.drift {
            m.schema_drift(source, &path, n);
        }
        m.duplicates
            .with_label_values(&[stage])
            .inc_by(self.duplicates);
        r.duplicates += self.duplicates;
        m.redriven.with_label_values(&[stage]).inc_by(self.redriven);
        r.redriven += self.redriven;
        m.audit_records
            .with_label_values(&[stage])
            .inc_by(self.audit);
        r.audit_records += self.audit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_batch_phases_are_named_in_order() {
        let mut p = BatchPhases::new();
        p.mark("process");
        p.mark("audit_acked");
        p.mark("committed");
        let d = p.describe();
        let names: Vec<&str> = d.split(' ').filter_map(|kv| kv.split('=').next()).collect();
        assert_eq!(names, ["process", "audit_acked", "committed"]);
        assert!(d.split(' ').all(|kv| kv.ends_with("ms")), "{d}");
    }
}
