//! The schema registry enforces BACKWARD compatibility through
//! `consentry topics apply`'s client: an incompatible change fails naming the
//! subject and the reason; a compatible one registers as a new version.

use consentry_runtime::registry::{RegistryClient, RegistryError};

#[test]
fn incompatible_change_names_subject_and_reason() {
    let env = consentry_testkit::Env::new("registry");
    let client = RegistryClient::new(&env.conn.registry_url);
    let subject = format!("{}compat-check-value", env.prefix);
    let v1 =
        r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"string"}]}"#;
    let compatible = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","string"],"default":null}]}"#;
    let incompatible = r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":"string"},{"name":"c","type":"long"}]}"#;

    client
        .set_compatibility(&subject, "BACKWARD")
        .expect("set compatibility");
    let id1 = client
        .register(&subject, v1, "BACKWARD")
        .expect("register v1");
    assert_eq!(client.lookup(&subject, v1).expect("lookup"), id1);
    // Registering the same schema again is idempotent.
    assert_eq!(
        client
            .register(&subject, v1, "BACKWARD")
            .expect("re-register"),
        id1
    );

    match client.check_compatible(&subject, incompatible, "BACKWARD") {
        Err(RegistryError::Incompatible {
            subject: s, reason, ..
        }) => {
            assert_eq!(s, subject);
            assert!(reason.contains('c'), "{reason}");
            let msg = RegistryError::Incompatible {
                subject: s,
                level: "BACKWARD".into(),
                reason,
            }
            .to_string();
            assert!(
                msg.starts_with(&format!(
                    "subject '{subject}': the new schema is not BACKWARD-compatible"
                )),
                "{msg}"
            );
        }
        other => panic!("expected an incompatibility, got {other:?}"),
    }
    client
        .check_compatible(&subject, compatible, "BACKWARD")
        .expect("compatible change");
    let id2 = client
        .register(&subject, compatible, "BACKWARD")
        .expect("register v2");
    assert_ne!(id1, id2);

    // Every shipped schema is registered under its topics' subjects.
    // (A destination's is derived from its allowlist.)
    for topic in env.topology.topics.keys() {
        if let Some(schema) = env.conn.schema_text(&env.topology, topic) {
            client
                .lookup(&env.conn.subject(topic), &schema)
                .expect("shipped schema registered");
        }
    }
    assert!(matches!(
        client.lookup(&format!("{}nope-value", env.prefix), v1),
        Err(RegistryError::NotRegistered { .. })
    ));
}

/// `topics apply` created every topic with its partitions and policies, and
/// running it again changes nothing.
#[test]
fn topics_have_their_configured_policies() {
    use consentry_core::topology::{Cleanup, Retention};
    let env = consentry_testkit::Env::new("topics");
    for (topic, spec) in &env.topology.topics {
        let configs = consentry_runtime::admin::topic_configs(&env.conn, &env.physical(topic))
            .expect("describe");
        let cleanup = if spec.cleanup == Cleanup::Compact {
            "compact"
        } else {
            "delete"
        };
        assert_eq!(
            configs.get("cleanup.policy").map(String::as_str),
            Some(cleanup),
            "{topic}"
        );
        match spec.retention {
            Retention::Unlimited => assert_eq!(
                configs.get("retention.ms").map(String::as_str),
                Some("-1"),
                "{topic}"
            ),
            Retention::Millis(ms) => assert_eq!(
                configs.get("retention.ms"),
                Some(&ms.to_string()),
                "{topic}"
            ),
            Retention::Default => {}
        }
    }
    assert_eq!(
        env.topology.topic("audit").map(|t| t.retention),
        Some(Retention::Unlimited)
    );
    let again = env.run_ok(&["topics", "apply"]);
    let n = env.topology.topics.len();
    assert_eq!(n, 26);
    assert!(
        again.contains(&format!("topics: 0 created, {n} already present")),
        "{again}"
    );
    assert!(!again.contains("warning"), "{again}");
}
