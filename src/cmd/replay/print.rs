//! The plan as a person reads it: a table per destination, the biggest
//! change first, and a one-line verdict.

use consentry_core::topology::Topology;
use consentry_stages::replay::Plan;
use std::collections::BTreeMap;

pub fn print_plan(
    current: &Topology,
    policy: &Topology,
    selection: &super::history::Selection,
    events: usize,
    plan: &Plan,
) {
    println!(
        "replay plan: policy {} -> {} over {events} {} (a dry run: nothing written)",
        current.policy_version,
        policy.policy_version,
        selection.history_name()
    );
    println!();
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>10} {:>16} {:>8}",
        "purpose", "backfill", "retract", "correct", "unchanged", "consent-withheld", "current"
    );
    for d in &plan.destinations {
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>10} {:>16} {:>8}",
            d.purpose,
            d.backfill.records,
            d.retract.records,
            d.correct.records,
            d.unchanged,
            d.consent_withheld,
            d.already_current
        );
        let list = |m: &BTreeMap<String, u64>| {
            let mut v: Vec<(&String, &u64)> = m.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .map(|(f, n)| format!("{f} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !d.fields_withheld.is_empty() {
            println!("  fields withheld: {}", list(&d.fields_withheld));
        }
        if !d.fields_released.is_empty() {
            println!("  fields released: {}", list(&d.fields_released));
        }
        if !d.profile_changes.is_empty() {
            println!("  profile: {}", list(&d.profile_changes));
        }
        for (n, what) in [
            (
                d.values_changed,
                "corrections change values only (same fields)",
            ),
            (
                d.backfill_consent_withheld,
                "not backfilled: today's consent withholds them",
            ),
            (
                d.would_quarantine,
                "the new policy would quarantine: look at these first",
            ),
            (
                d.shape_unknown,
                "no longer on the topic: shape unknown, left as they are",
            ),
        ] {
            if n > 0 {
                println!("  {n} {what}");
            }
        }
        for (what, c) in [
            ("correct", &d.correct),
            ("retract", &d.retract),
            ("backfill", &d.backfill),
        ] {
            if !c.samples.is_empty() {
                println!(
                    "  e.g. {what}: internal correlation ids (for audit trace) {}",
                    c.samples.join(", ")
                );
            }
        }
    }
    println!();
    let changed = plan.destinations.iter().filter(|d| d.changes() > 0).count();
    if plan.changes() == 0 {
        println!("verdict: nothing would change at any destination.");
    } else {
        println!(
            "verdict: {} records would change at {changed} of {} destinations.",
            plan.changes(),
            plan.destinations.len()
        );
    }
}

/// Destination schemas the registry would refuse: apply writes nothing
/// while there is one.
pub fn print_refusals(refusals: &[super::apply::SchemaRefusal]) {
    if refusals.is_empty() {
        return;
    }
    println!();
    println!("the schema registry would refuse these destination schemas (apply writes nothing until they are fixed):");
    for r in refusals {
        println!("  {} ({}): {}", r.topic, r.subject, r.reason);
    }
}
