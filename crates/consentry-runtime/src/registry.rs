//! A small client for the Confluent schema-registry API: the routes that
//! `topics apply` and the stages need, and nothing else.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a request keeps retrying transport failures before the caller
/// sees `Unreachable`. Long enough to ride out a registry restart in a
/// rolling deploy, short enough that a stage that cannot start says so.
const RETRY_BUDGET: Duration = Duration::from_secs(10);
const RETRY_FIRST_BACKOFF: Duration = Duration::from_millis(50);
const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("subject '{subject}': the new schema is not {level}-compatible with the registered one: {reason}")]
    Incompatible {
        subject: String,
        level: String,
        reason: String,
    },
    #[error("subject '{subject}' has no registered schema matching this build's; run `consentry topics apply`")]
    NotRegistered { subject: String },
    #[error("schema registry answered {status} for {what}: {body}")]
    Unexpected {
        what: String,
        status: u16,
        body: String,
    },
}

pub struct RegistryClient {
    base: String,
    agent: ureq::Agent,
    retry_budget: Duration,
    /// `Authorization` for every request (basic or bearer).
    authorization: Option<zeroize::Zeroizing<String>>,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

impl RegistryClient {
    /// A client without credentials, trusting the public CAs for https.
    pub fn new(base: &str) -> RegistryClient {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(RETRY_BUDGET))
            .http_status_as_error(false)
            .build()
            .into();
        RegistryClient {
            base: base.trim_end_matches('/').to_string(),
            agent,
            retry_budget: RETRY_BUDGET,
            authorization: None,
        }
    }

    /// The client a deployment's connection describes: its CA for
    /// `https://`, its basic or bearer credentials.
    pub fn for_connection(conn: &crate::Connection) -> Result<RegistryClient, RegistryError> {
        RegistryClient::with_access(&conn.registry_url, &conn.registry_access)
    }

    pub fn with_access(
        base: &str,
        access: &crate::security::RegistryAccess,
    ) -> Result<RegistryClient, RegistryError> {
        let mut client = RegistryClient::new(base);
        if access.auth.is_some() && !client.base.starts_with("https://") {
            return Err(RegistryError::Unreachable {
                url: client.base.clone(),
                detail: "registry credentials go only over https://".into(),
            });
        }
        if let Some(ca) = &access.ca {
            let bad = |detail: &str| RegistryError::Unreachable {
                url: client.base.clone(),
                detail: format!("CA {}: {detail}", ca.display()),
            };
            let pem = std::fs::read(ca).map_err(|e| bad(&format!("cannot read: {}", e.kind())))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(_) => Some(Err(())),
                })
                .collect::<Result<Vec<_>, ()>>()
                .map_err(|_| bad("is not valid PEM"))?;
            if certs.is_empty() {
                return Err(bad("holds no certificate"));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build();
            client.agent = ureq::Agent::config_builder()
                .timeout_global(Some(RETRY_BUDGET))
                .http_status_as_error(false)
                .tls_config(tls)
                .build()
                .into();
        }
        client.authorization = access.auth.as_ref().map(|a| a.header());
        Ok(client)
    }

    /// One request, retried on transport failure. Every route this client
    /// uses is idempotent (registering a schema that is already registered
    /// answers its existing id), so a retry cannot change the outcome; it
    /// only hides a dropped keep-alive connection or a registry restart.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), RegistryError> {
        let started = Instant::now();
        let mut backoff = RETRY_FIRST_BACKOFF;
        loop {
            match self.call_once(method, path, body.clone()) {
                Ok(answer) => return Ok(answer),
                Err(e) if started.elapsed() + backoff < self.retry_budget => {
                    tracing::debug!(%e, path, "schema registry request failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RETRY_MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn call_once(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), RegistryError> {
        let url = format!("{}{}", self.base, path);
        let unreachable = |e: ureq::Error| RegistryError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        };
        let auth = self.authorization.as_ref().map(|a| a.as_str());
        let resp = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), auth).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), auth).call(),
            ("PUT", Some(b)) => with_auth(self.agent.put(&url), auth)
                .header("Content-Type", CONTENT_TYPE)
                .send_json(b),
            (_, b) => with_auth(self.agent.post(&url), auth)
                .header("Content-Type", CONTENT_TYPE)
                .send_json(b.unwrap_or(Value::Null)),
        }
        .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().map_err(unreachable)?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    fn unexpected(what: &str, status: u16, body: &Value) -> RegistryError {
        if status == 401 || status == 403 {
            // Never echo what a refusal says: it may quote the credential.
            return RegistryError::Unexpected {
                what: what.to_string(),
                status,
                body: "(refused: check the registry credentials)".into(),
            };
        }
        let mut b = body.to_string();
        b.truncate(300);
        RegistryError::Unexpected {
            what: what.to_string(),
            status,
            body: b,
        }
    }

    /// The registry refused a schema (HTTP 409/422): an incompatibility.
    fn rejected(subject: &str, level: &str, body: &Value) -> RegistryError {
        RegistryError::Incompatible {
            subject: subject.into(),
            level: level.into(),
            reason: body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("rejected")
                .to_string(),
        }
    }

    /// The schema id in a 200 answer.
    fn id_of(body: &Value, what: &str) -> Result<u32, RegistryError> {
        body.get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| Self::unexpected(what, 200, body))
    }

    /// Sets a subject's compatibility level (e.g. BACKWARD).
    pub fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let (status, body) = self.call(
            "PUT",
            &format!("/config/{subject}"),
            Some(json!({ "compatibility": level })),
        )?;
        match status {
            200..=299 => Ok(()),
            _ => Err(Self::unexpected(
                &format!("PUT /config/{subject}"),
                status,
                &body,
            )),
        }
    }

    /// True if the subject has at least one version.
    pub fn subject_exists(&self, subject: &str) -> Result<bool, RegistryError> {
        let (status, body) = self.call("GET", &format!("/subjects/{subject}/versions"), None)?;
        match status {
            200 => Ok(body.as_array().is_some_and(|a| !a.is_empty())),
            404 => Ok(false),
            _ => Err(Self::unexpected(
                &format!("GET /subjects/{subject}/versions"),
                status,
                &body,
            )),
        }
    }

    /// Checks `schema` against the subject's latest version.
    pub fn check_compatible(
        &self,
        subject: &str,
        schema: &str,
        level: &str,
    ) -> Result<(), RegistryError> {
        let path = format!("/compatibility/subjects/{subject}/versions/latest?verbose=true");
        let (status, body) = self.call("POST", &path, Some(json!({ "schema": schema })))?;
        match status {
            200 => {
                if body.get("is_compatible").and_then(Value::as_bool) == Some(true) {
                    Ok(())
                } else {
                    let reason = body
                        .get("messages")
                        .and_then(Value::as_array)
                        .map(|m| {
                            m.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "the registry gave no detail".into());
                    Err(RegistryError::Incompatible {
                        subject: subject.into(),
                        level: level.into(),
                        reason,
                    })
                }
            }
            409 | 422 => Err(Self::rejected(subject, level, &body)),
            _ => Err(Self::unexpected(&format!("POST {path}"), status, &body)),
        }
    }

    /// Registers a schema under a subject; returns its id.
    pub fn register(&self, subject: &str, schema: &str, level: &str) -> Result<u32, RegistryError> {
        let (status, body) = self.call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": schema })),
        )?;
        match status {
            200 => Self::id_of(&body, "register"),
            409 | 422 => Err(Self::rejected(subject, level, &body)),
            _ => Err(Self::unexpected(
                &format!("POST /subjects/{subject}/versions"),
                status,
                &body,
            )),
        }
    }

    /// The id of `schema` under `subject`, if registered. Uses the lookup
    /// route where the registry has it; otherwise (rivven-schema answers
    /// 405) compares the canonical form of each registered version.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let (status, body) = self.call(
            "POST",
            &format!("/subjects/{subject}"),
            Some(json!({ "schema": schema })),
        )?;
        match status {
            200 => return Self::id_of(&body, "lookup"),
            404 if body.get("error_code").and_then(Value::as_u64) != Some(404) => {
                return Err(RegistryError::NotRegistered {
                    subject: subject.into(),
                })
            }
            _ => {}
        }
        let wanted = canonical(schema).ok_or_else(|| RegistryError::Unexpected {
            what: format!("lookup of {subject}"),
            status: 0,
            body: "the schema to look up does not parse".into(),
        })?;
        let (status, versions) =
            self.call("GET", &format!("/subjects/{subject}/versions"), None)?;
        match status {
            200 => {}
            404 => {
                return Err(RegistryError::NotRegistered {
                    subject: subject.into(),
                })
            }
            _ => {
                return Err(Self::unexpected(
                    &format!("GET /subjects/{subject}/versions"),
                    status,
                    &versions,
                ))
            }
        }
        let mut versions: Vec<u64> = versions
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        for v in versions {
            let (status, body) =
                self.call("GET", &format!("/subjects/{subject}/versions/{v}"), None)?;
            if status != 200 {
                return Err(Self::unexpected(
                    &format!("GET /subjects/{subject}/versions/{v}"),
                    status,
                    &body,
                ));
            }
            let text = body
                .get("schema")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if canonical(text).as_ref() == Some(&wanted) {
                if let Some(id) = body.get("id").and_then(Value::as_u64) {
                    return Ok(id as u32);
                }
            }
        }
        Err(RegistryError::NotRegistered {
            subject: subject.into(),
        })
    }

    /// The schema text registered under `id`.
    pub fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let (status, body) = self.call("GET", &format!("/schemas/ids/{id}"), None)?;
        match status {
            200 => body
                .get("schema")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| Self::unexpected("schema by id", status, &body)),
            _ => Err(Self::unexpected(
                &format!("GET /schemas/ids/{id}"),
                status,
                &body,
            )),
        }
    }
}

/// The Avro parsing canonical form of a schema text, if it parses.
fn canonical(schema: &str) -> Option<String> {
    apache_avro::Schema::parse_str(schema)
        .ok()
        .map(|s| s.canonical_form())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A listener that hangs up on the first `drops` connections without a
    /// word, then answers every request with `schema_by_id`'s 200 body.
    fn flaky_registry(drops: usize) -> (String, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let mut accepted = 0;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                accepted += 1;
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                if accepted <= drops {
                    continue; // dropped: the client sees the peer disconnect
                }
                let body = r#"{"schema":"\"string\""}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
                break;
            }
            accepted
        });
        (url, server)
    }

    #[test]
    fn a_dropped_connection_is_retried_not_reported() {
        let (url, server) = flaky_registry(2);
        let schema = RegistryClient::new(&url)
            .schema_by_id(7)
            .expect("answer after retries");
        assert_eq!(schema, "\"string\"");
        assert_eq!(
            server.join().expect("server"),
            3,
            "two drops, then one answer"
        );
    }

    #[test]
    fn a_registry_that_never_answers_is_reported_unreachable_within_the_budget() {
        // Bound to a port nobody listens on: every attempt is refused.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let mut client = RegistryClient::new(&url);
        client.retry_budget = Duration::from_secs(1);
        let started = Instant::now();
        let err = client.schema_by_id(7).expect_err("nothing listens");
        assert!(
            matches!(&err, RegistryError::Unreachable { url: u, .. } if *u == url),
            "{err}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(3),
            "retried for {took:?}"
        );
    }
}
