//! Waiting for acknowledgements, on the real broker: `produce::flush` and
//! `produce::commit` (the runner's replacements for rdkafka's flush, which
//! sleeps in 100 ms steps) leave nothing in flight and lose nothing, and a
//! stage does not hold a lone record back to fill its batch.

use consentry_runtime::produce::{self, CountingProducer, DeliveryErrors};
use consentry_runtime::rdkafka::consumer::Consumer;
use consentry_runtime::rdkafka::producer::{BaseRecord, Producer};
use consentry_runtime::rdkafka::{Message, Offset, TopicPartitionList};
use consentry_testkit::{Children, Env};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn payloads(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i:05}")).collect()
}

fn read_payloads(env: &Env, topic: &str) -> Vec<String> {
    env.read(topic)
        .iter()
        .filter_map(|m| m.payload())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

#[test]
fn flush_and_commit_leave_nothing_in_flight_and_lose_nothing() {
    let env = Env::new("produce");
    // A plain producer: flush returns only once every record is acknowledged.
    let topic = env.physical("ehr.hl7v2");
    let plain: CountingProducer = env
        .conn
        .producer()
        .create_with_context(DeliveryErrors::default())
        .expect("producer");
    let sent = payloads("plain", 2_000);
    for p in &sent {
        produce::send(&plain, BaseRecord::to(&topic).key("k").payload(p)).expect("send");
    }
    produce::flush(&plain, TIMEOUT).expect("flush");
    assert_eq!(
        plain.in_flight_count(),
        0,
        "flush returned with records in flight"
    );
    plain.context().check().expect("every record delivered");
    assert_eq!(
        read_payloads(&env, "ehr.hl7v2"),
        sent,
        "in order, none lost"
    );

    // A transactional producer, with input offsets in the transaction, as
    // the runner commits: everything visible to read_committed readers, the
    // offsets committed for the group.
    let out = env.physical("ehr.fhir");
    let txn = env.transactional_producer("produce-test");
    let group_consumer: consentry_runtime::rdkafka::consumer::BaseConsumer = env
        .conn
        .consumer("produce-test-group")
        .create()
        .expect("consumer");
    let mut committed = Vec::new();
    for round in 0..3 {
        txn.begin_transaction().expect("begin");
        let batch = payloads(&format!("txn{round}"), 300);
        for p in &batch {
            produce::send(&txn, BaseRecord::to(&out).key("k").payload(p)).expect("send");
        }
        produce::flush(&txn, TIMEOUT).expect("flush");
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&topic, 0, Offset::Offset(100 * (round + 1)))
            .expect("offset");
        let group = group_consumer.group_metadata().expect("group metadata");
        txn.send_offsets_to_transaction(&offsets, &group, TIMEOUT)
            .expect("offsets");
        produce::commit(&txn, TIMEOUT).expect("commit");
        assert_eq!(txn.in_flight_count(), 0);
        txn.context().check().expect("every record delivered");
        committed.extend(batch);
    }
    assert_eq!(read_payloads(&env, "ehr.fhir"), committed);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&topic, 0);
    let positions = group_consumer
        .committed_offsets(wanted, TIMEOUT)
        .expect("committed offsets");
    assert_eq!(
        positions.find_partition(&topic, 0).map(|e| e.offset()),
        Some(Offset::Offset(300)),
        "the last transaction's input offset"
    );
}

/// A minimal ADT^A08, as a feed sends it.
fn adt(id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|CSEHR|CSHOSP|CONSENTRY|CS|20261001120000||ADT^A08^ADT_A01|{id}|P|2.5\r\
         EVN|A08|20261001120000\r\
         PID|1||CS7000001^^^CSHOSP^MR||Testperson^Alex||19800101|F\r\
         PV1|1|I\r"
    )
    .into_bytes()
}

#[test]
fn a_lone_record_is_not_held_back_to_fill_a_batch() {
    let env = Env::new("lone");
    // A minute's batch wait: a stage that waited to fill its batch would
    // hold the record for all of it (as a revocation on a quiet topic was).
    let _children = Children(vec![env.spawn(&[
        "run",
        "normalize",
        "--batch-max",
        "500",
        "--batch-wait-ms",
        "60000",
    ])]);
    env.publish("ehr.hl7v2", &[(Some("k"), &adt("LONE0001"))]);
    env.wait_for(
        "the lone record to be normalized",
        Duration::from_secs(30),
        || env.read("events.normalized").len() == 1,
    );
    // And the next one, once the stage is running: not held either.
    env.publish("ehr.hl7v2", &[(Some("k"), &adt("LONE0002"))]);
    env.wait_for(
        "the second lone record to be normalized",
        Duration::from_secs(30),
        || env.read("events.normalized").len() == 2,
    );
    let ids: Vec<String> = env
        .events("events.normalized")
        .into_iter()
        .map(|(_, e)| e.event_id.to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(
        ids[0].ends_with("LONE0001") && ids[1].ends_with("LONE0002"),
        "{ids:?}"
    );
}
