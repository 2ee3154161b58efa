//! A table reader on the real broker: once it has had a partition's end
//! reported, a catch-up must still finish when the only thing after its
//! last record is a transaction marker (librdkafka reports an end once, and
//! a reader that waited for a second report hung a stage's rebalance for
//! its whole timeout: issue 6's stalled consent-gate and route).

use consentry_runtime::produce::{self, CountingProducer};
use consentry_runtime::rdkafka::producer::{BaseRecord, Producer};
use consentry_runtime::table::TableReader;
use consentry_testkit::Env;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

/// One transaction of `keys` on partition 0: data records, then a marker.
fn commit_records(producer: &CountingProducer, topic: &str, keys: &[&str]) {
    producer.begin_transaction().expect("begin");
    for k in keys {
        let r = BaseRecord::to(topic)
            .partition(0)
            .key(*k)
            .payload(k.as_bytes());
        produce::send(producer, r).expect("send");
    }
    produce::commit(producer, TIMEOUT).expect("commit");
    producer.context().check().expect("delivered");
}

#[test]
fn catch_up_after_the_end_was_reported_finishes_at_a_transaction_marker() {
    let env = Env::new("table");
    let topic = env.physical("consent.state");
    let producer = env.transactional_producer("table-test");
    commit_records(&producer, &topic, &["a", "b"]);

    let mut reader = TableReader::open(&env.conn, &topic, "test").expect("reader");
    let mut seen: Vec<String> = Vec::new();
    let n = reader
        .catch_up(TIMEOUT, |k, _| seen.push(k.to_string()))
        .expect("first catch-up");
    assert_eq!(
        (n, seen.as_slice()),
        (2, ["a", "b"].map(String::from).as_slice())
    );

    // The next transaction, read by `tail` as a stage does between
    // batches, until its end has been reported (and taken) too.
    commit_records(&producer, &topic, &["c"]);
    let deadline = Instant::now() + TIMEOUT;
    while !seen.iter().any(|k| k == "c") {
        assert!(Instant::now() < deadline, "tail never brought the record");
        reader
            .tail(100, |k, _| seen.push(k.to_string()))
            .expect("tail");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the end-of-partition report arrive and be taken by `tail`.
    for _ in 0..50 {
        reader
            .tail(100, |k, _| seen.push(k.to_string()))
            .expect("tail");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Now only the marker lies between the reader and the high watermark.
    let started = Instant::now();
    let n = reader
        .catch_up(Duration::from_secs(10), |k, _| seen.push(k.to_string()))
        .expect("a catch-up at the end finishes, not times out");
    assert_eq!(n, 0, "nothing new to apply");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "catch-up waited {:?} for an end it had already reached",
        started.elapsed()
    );
    assert_eq!(seen, ["a", "b", "c"]);

    // And one more record after that: the catch-up still reads it.
    commit_records(&producer, &topic, &["d"]);
    reader
        .catch_up(TIMEOUT, |k, _| seen.push(k.to_string()))
        .expect("catch-up");
    assert_eq!(seen, ["a", "b", "c", "d"]);
}
