//! Crash: de-identify (in the middle of the chain) runs as a child process,
//! is killed with SIGKILL mid-stream and restarted. Afterwards the output of
//! the stage after it (tokenize) holds every input's idempotency key exactly
//! once, with the expected content. On tansu the killed instance's open
//! transaction stays visible after it is aborted, so this also proves that
//! deduplication, not the transaction, makes the result right.

use consentry_synth::{generate, SynthConfig};
use consentry_testkit::{wait_exit, Env};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn sigkill_mid_stream_loses_nothing_and_doubles_nothing() {
    let env = Env::new("crash");
    let feed = generate(&SynthConfig::new(21, 100));
    env.publish_synth(&feed);
    let expected = env.expected_outputs(&feed);
    let gated = expected["events.gated"].len();
    // Consent applied: more than one record per event, fewer than one per
    // purpose (some patients did not consent to every purpose).
    let normalized = expected["events.normalized"].len();
    assert!(gated > normalized && gated <= normalized * env.topology.purposes.len());

    // Two chained stages in one process: a longer idle window, because on
    // a loaded broker (this test runs beside others) consent-gate's first
    // read_committed fetch of normalize's output can take seconds.
    let report = env.run_ok(&["run", "normalize", "consent-gate", "--exit-when-idle", "6"]);
    assert_eq!(
        env.read("events.gated").len(),
        gated,
        "run report:\n{report}"
    );

    // Small batches: many transactions, so the kill lands mid-stream.
    let args = [
        "run",
        "de-identify",
        "--batch-max",
        "25",
        "--exit-when-idle",
        "3",
    ];
    let mut guard = consentry_testkit::Children(vec![env.spawn(&args)]);
    let victim = &mut guard.0[0];
    let started = Instant::now();
    loop {
        let progress = env.watermark("events.deidentified");
        if progress >= (gated / 4) as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "de-identify made no progress"
        );
        assert!(
            victim.try_wait().expect("try_wait").is_none(),
            "de-identify exited before it was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    victim.kill().expect("SIGKILL");
    let status = victim.wait().expect("wait");
    assert!(!status.success(), "the victim was killed, not finished");
    // Read with read_committed, the output may look empty while the killed
    // instance's transaction is open; the log end shows how far it got.
    let at_kill = env.watermark("events.deidentified");

    guard.0.push(env.spawn(&args));
    let status = wait_exit(&mut guard.0[1], Duration::from_secs(180));
    assert!(status.success(), "restarted de-identify failed: {status:?}");

    // The killed stage's own output: every key present, none with two contents.
    let mut seen: BTreeMap<String, consentry_core::CanonicalEvent> = BTreeMap::new();
    let deidentified = env.events("events.deidentified");
    let visible_duplicates = deidentified.len()
        - deidentified
            .iter()
            .map(|(k, _)| k)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
    eprintln!("crash: killed at log end {at_kill} (of {gated} outputs plus markers); {visible_duplicates} duplicate records left visible by the aborted transaction");
    for (k, ev) in deidentified {
        if let Some(prev) = seen.insert(k.clone(), ev.clone()) {
            assert_eq!(prev, ev, "a key appeared with two different contents");
        }
    }
    assert_eq!(
        seen.len(),
        gated,
        "every input reached de-identify's output"
    );

    // The stage after it: exactly once, with the expected content.
    assert!(
        at_kill < env.watermark("events.deidentified"),
        "the restart wrote what the victim had not"
    );
    let stdout = env.run_ok(&["run", "tokenize", "--exit-when-idle", "3"]);
    let row = consentry_testkit::stage_row(&stdout, "tokenize");
    // Every duplicate the broker left visible was recognised and skipped.
    assert_eq!(
        row[4],
        visible_duplicates.to_string(),
        "tokenize duplicates column:\n{stdout}"
    );
    let tokenized = env.events("events.tokenized");
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for (k, _) in &tokenized {
        *counts.entry(k).or_default() += 1;
    }
    let doubled = counts.values().filter(|n| **n > 1).count();
    assert_eq!(
        doubled, 0,
        "{doubled} keys appear more than once in tokenize's output"
    );
    let want = &expected["events.tokenized"];
    assert_eq!(tokenized.len(), want.len(), "nothing lost");
    for (k, ev) in &tokenized {
        assert_eq!(
            want.get(k),
            Some(ev),
            "tokenize output differs from the pure pipeline's"
        );
    }
    // Only the records normalize held until their Patient came (every
    // tenth patient's Observation), each once.
    let quarantine = env.read("quarantine");
    assert_eq!(quarantine.len(), 10);
    assert!(quarantine.iter().all(|m| {
        consentry_runtime::inspect::header(m, "reason-code") == Some("unresolved_subject")
    }));
}

/// A batch written in a transaction that was then aborted: tansu still shows
/// it to `read_committed` readers. The next stage must produce its outputs
/// once, whether or not the broker hides the aborted copies.
#[test]
fn aborted_transaction_still_visible_is_not_doubled() {
    use consentry_runtime::produce;
    use consentry_runtime::rdkafka::message::{Header, Headers, Message, OwnedHeaders};
    use consentry_runtime::rdkafka::producer::{BaseRecord, Producer};

    let env = Env::new("aborted");
    let feed = generate(&SynthConfig::new(5, 10));
    env.publish_synth(&feed);
    env.run_ok(&["run", "normalize", "--exit-when-idle", "3"]);
    let normalized = env.read("events.normalized");
    let events = normalized.len();
    assert_eq!(
        events,
        env.expected_outputs(&feed)["events.normalized"].len()
    );

    // Replay every normalized record into the same topic, then abort.
    let zombie = env.transactional_producer("test-zombie");
    zombie.begin_transaction().expect("begin");
    let topic = env.physical("events.normalized");
    for m in &normalized {
        let mut headers = OwnedHeaders::new();
        for h in m.headers().expect("headers").iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
        let rec = BaseRecord::to(&topic)
            .key(m.key().unwrap_or_default())
            .payload(m.payload().unwrap_or_default())
            .headers(headers);
        produce::send(&zombie, rec).expect("send");
    }
    zombie.flush(Duration::from_secs(30)).expect("flush");
    zombie
        .abort_transaction(Duration::from_secs(30))
        .expect("abort");

    let visible = env.read("events.normalized").len() - normalized.len();
    eprintln!(
        "aborted: the broker shows {visible} of {events} aborted records to read_committed readers"
    );
    let want = env.expected_outputs(&feed)["events.gated"].len();
    let stdout = env.run_ok(&["run", "consent-gate", "--exit-when-idle", "3"]);
    let row = consentry_testkit::stage_row(&stdout, "consent-gate");
    // One unit (and audit record) per event and purpose; each aborted copy
    // is a duplicate of every one of its event's units.
    let purposes = env.topology.purposes.len();
    assert_eq!(
        row[1..6],
        [
            (events + visible).to_string(),
            want.to_string(),
            "0".into(),
            (visible * purposes).to_string(),
            (events * purposes).to_string()
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()[..],
        "in, out, quarantined, duplicates, audit"
    );
    let gated = env.events("events.gated");
    let keys: std::collections::BTreeSet<&String> = gated.iter().map(|(k, _)| k).collect();
    assert_eq!(
        (gated.len(), keys.len()),
        (want, want),
        "each (event, purpose) exactly once"
    );
}
