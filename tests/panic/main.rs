//! No record can stop a stage (issue 16), on the real stack with the real
//! runner in process: a stage whose code panics on one record quarantines
//! that record as `malformed`, naming the stage and the code location and
//! never the panic's message (which may quote the input), counts it, audits
//! it, and goes on with the records after it. A stage thread that dies for
//! any other reason stops every stage of the process, marks itself halted,
//! and makes the run fail (never a half-alive process).
//!
//! A binary of its own: the runner installs a process-wide panic hook that
//! withholds panic messages, which in a shared binary would hide every
//! other suite's assertion failures.

use consentry_core::stage::{Outcome, Stage, StageInput, StageName, StateView};
use consentry_crypto::{AuditKeys, KeyFile, KeyProvider, QuarantineKeys};
use consentry_runtime::inspect::header;
use consentry_runtime::runner::{self, RunOptions};
use consentry_runtime::Metrics;
use consentry_stages::normalize::Normalize;
use consentry_synth::{hl7_adt, patients, SynthConfig};
use consentry_testkit::Env;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the bug would have quoted: it must appear nowhere but the input.
const MARKER: &str = "PANIC-ON-THIS-VALUE-0xdeadbeef";

/// normalize, with a bug: it panics on any record holding `MARKER` (the
/// panic's message quotes the input, as a slicing bug's does).
struct Buggy(Normalize);

impl Stage for Buggy {
    fn name(&self) -> StageName {
        self.0.name()
    }
    fn process(&self, input: &StageInput, state: &dyn StateView) -> Vec<Outcome> {
        if let consentry_core::stage::Body::Raw(b) = &input.body {
            let text = String::from_utf8_lossy(b);
            if text.contains(MARKER) {
                panic!("cannot read {text}");
            }
        }
        self.0.process(input, state)
    }
}

/// normalize, whose thread dies in the runner's own loop after a while (a
/// panic outside a record's processing).
struct Dies {
    inner: Normalize,
    calls: AtomicUsize,
}

impl Stage for Dies {
    fn name(&self) -> StageName {
        if self.calls.fetch_add(1, Ordering::SeqCst) > 40 {
            panic!("the loop itself fails");
        }
        self.inner.name()
    }
    fn process(&self, input: &StageInput, state: &dyn StateView) -> Vec<Outcome> {
        self.inner.process(input, state)
    }
}

fn options(env: &Env, idle: Option<Duration>) -> RunOptions {
    let ring = KeyFile::new(env.dir.join("keys.json"))
        .key_ring()
        .expect("key ring");
    RunOptions {
        conn: env.conn.clone(),
        instance: "0".into(),
        batch_max: 100,
        batch_wait: Duration::from_millis(50),
        exit_when_idle: idle,
        quarantine_keys: Arc::new(QuarantineKeys::new(&ring).expect("quarantine keys")),
        audit_keys: Arc::new(AuditKeys::new(&ring).expect("audit keys")),
        checkpoint_every: Duration::from_secs(10),
    }
}

#[test]
fn a_record_that_panics_the_stage_is_quarantined_and_the_stage_goes_on() {
    let env = Env::new("panic");
    let cfg = SynthConfig::new(17, 4);
    let ps = patients(&cfg);
    let good: Vec<String> = ps.iter().map(|p| hl7_adt(&cfg, p, "A01", 0)).collect();
    let bad = good[0]
        .replace("A01", "A08")
        .replacen("PID|", &format!("PID|{MARKER}"), 1);
    // All on one partition, the bad one second: the records after it in
    // the same batch must go through.
    let key = Some("one-partition");
    let mut records: Vec<(Option<&str>, &[u8])> = vec![(key, good[0].as_bytes())];
    records.push((key, bad.as_bytes()));
    records.extend(good[1..].iter().map(|g| (key, g.as_bytes())));
    env.publish("ehr.hl7v2", &records);

    let metrics = Metrics::new();
    let reports = runner::run_stages(
        Arc::new(env.topology.clone()),
        vec![Box::new(Buggy(Normalize::new(&env.topology)))],
        options(&env, Some(Duration::from_secs(3))),
        Arc::clone(&metrics),
        Arc::new(AtomicBool::new(false)),
    )
    .expect("the stage ran to idle, not to its death");
    let r = &reports[0];
    assert_eq!(
        (r.records_in, r.records_out, r.quarantined),
        (5, 4, 1),
        "in, out, quarantined"
    );
    assert_eq!(
        Metrics::total(&metrics.stage_panics, "normalize"),
        1,
        "counted"
    );
    assert_eq!(env.events("events.normalized").len(), 4);

    let q = env.read("quarantine");
    assert_eq!(q.len(), 1);
    assert_eq!(header(&q[0], "reason-code"), Some("malformed"));
    let detail = header(&q[0], "reason-detail").expect("detail");
    assert!(
        detail.starts_with(&format!("normalize panicked at {}:", file!())),
        "{detail}"
    );
    // The record itself is held, sealed, whole: it can be fixed and redriven.
    assert_eq!(env.open_quarantined(&q[0]).as_deref(), Some(bad.as_bytes()));
    // Audited like any quarantine, and the panic's text is nowhere.
    let audits = env.audits();
    assert!(audits
        .iter()
        .any(|a| a.decision == "quarantine" && a.reason_code == "malformed"));
    for m in env
        .read("quarantine")
        .iter()
        .chain(env.read("audit").iter())
    {
        let bytes = consentry_testkit::record_bytes(m);
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
    }
}

#[test]
fn a_stage_thread_that_dies_stops_the_process_and_fails_the_run() {
    let env = Env::new("dies");
    let cfg = SynthConfig::new(19, 2);
    let adts: Vec<String> = patients(&cfg)
        .iter()
        .map(|p| hl7_adt(&cfg, p, "A01", 0))
        .collect();
    let records: Vec<(Option<&str>, &[u8])> = adts.iter().map(|a| (None, a.as_bytes())).collect();
    env.publish("ehr.hl7v2", &records);
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    // A healthy stage beside the dying one, without an idle exit: only the
    // death of the other can end this run.
    let healthy = consentry_stages::build(
        StageName::ConsentGate,
        &env.topology,
        &consentry_stages::Services {
            keys: Some(Arc::new(
                KeyFile::new(env.dir.join("keys.json"))
                    .key_ring()
                    .expect("key ring"),
            )),
            vault: None,
        },
    )
    .expect("gate builds");
    let started = std::time::Instant::now();
    let result = runner::run_stages(
        Arc::new(env.topology.clone()),
        vec![
            Box::new(Dies {
                inner: Normalize::new(&env.topology),
                calls: AtomicUsize::new(0),
            }),
            healthy,
        ],
        options(&env, None),
        Arc::clone(&metrics),
        Arc::clone(&stop),
    );
    let err = result.expect_err("a dead stage fails the run");
    assert!(
        format!("{err:#}").contains(&format!("normalize panicked at {}:", file!())),
        "{err:#}"
    );
    assert!(stop.load(Ordering::SeqCst), "every stage was told to stop");
    assert!(metrics.any_halted(), "health reports the stage halted");
    assert!(started.elapsed() < Duration::from_secs(120));
}
