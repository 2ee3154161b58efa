//! The vault's HTTP API without the transport: one function from a
//! request (method, path, `Authorization`, body) to a response and the
//! facts of the call for its audit record. `consentry vault serve` puts an
//! HTTP server in front and writes the audit record before it answers.
//!
//! `POST /v1/resolve` with `{"token", "purpose", "justification",
//! "break_glass"?}` and `Authorization: Bearer <credential>`:
//! - 200 `{"token", "system", "value", "break_glass"}`;
//! - 400 a body or token that does not parse (the detail names the part,
//!   never the value), 401 no or an unknown credential, 403 out of scope
//!   (`reason`: purpose_not_for_domain, justification_required,
//!   justification_pattern_mismatch, domain_not_in_scope,
//!   purpose_not_in_scope, break_glass_not_permitted), 404 an unknown
//!   token or one whose subject was shredded (not told apart), 429 over the
//!   caller's rate (with `retry_after_s`), 503 the store did not answer.
//!
//! `POST /v1/quarantine/open` with a quarantine record's headers, its
//! sealed payload (`sealed_hex`), purpose and justification: 200
//! `{"id", "payload_hex"}` for a caller whose scope holds the `quarantine`
//! domain and the purpose (`quarantine-review`, `quarantine-redrive`); 410
//! sealed under a retired key version; 422 does not open under those
//! headers (altered, or another deployment's); otherwise as above.
//!
//! The rate limit is taken right after authentication, so refused calls
//! count too (a caller cannot probe tokens faster by getting them wrong).

use crate::access::{authorize, Caller, Credentials, Decision, Deny, Policy, RateLimiter, Request};
use crate::vault::{Vault, VaultError};
use consentry_crypto::{KeyError, QuarantineContext, Token};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

pub const RESOLVE_PATH: &str = "/v1/resolve";
pub const QUARANTINE_OPEN_PATH: &str = "/v1/quarantine/open";
/// The scope domain and purposes of opening quarantined records.
pub const QUARANTINE_DOMAIN: &str = "quarantine";
pub const PURPOSE_QUARANTINE_REVIEW: &str = "quarantine-review";
pub const PURPOSE_QUARANTINE_REDRIVE: &str = "quarantine-redrive";
/// The longest justification, and the longest of any other field of a
/// body (a token, a purpose, a quarantine id): what goes into an audit
/// record is bounded, whoever calls.
pub const MAX_JUSTIFICATION_BYTES: usize = 2048;
pub const MAX_FIELD_BYTES: usize = 512;

fn too_long(call: &mut CallRecord) -> Response {
    call.reason = "bad_request";
    error(
        400,
        "bad_request",
        "field_too_long",
        &format!(
            "a justification is at most {MAX_JUSTIFICATION_BYTES} bytes, any other field at most {MAX_FIELD_BYTES}"
        ),
    )
}

/// An HTTP answer: status, JSON body, and `Retry-After` seconds for 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub retry_after_s: Option<u64>,
}

/// What the audit record of one call says: ids, codes, the token, never
/// what it stands for nor the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub caller: Option<String>,
    pub purpose: Option<String>,
    pub token: Option<String>,
    /// `allow`, `break_glass` or `deny`.
    pub decision: &'static str,
    /// `ok` or why not (`unauthenticated`, `rate_limited`, a scope reason,
    /// `not_found`, `bad_request`, `unavailable`).
    pub reason: &'static str,
    pub status: u16,
    pub justification: Option<String>,
    /// The quarantined record a call opened (or tried to).
    pub quarantine_id: Option<String>,
}

impl CallRecord {
    pub fn is_break_glass(&self) -> bool {
        self.decision == "break_glass"
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    token: String,
    purpose: String,
    justification: String,
    #[serde(default)]
    break_glass: bool,
}

/// A quarantine record as its headers describe it, its sealed payload,
/// and why the caller wants it opened.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineOpenBody {
    pub id: String,
    pub stage: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub reason: String,
    pub sealed_hex: String,
    pub purpose: String,
    pub justification: String,
    #[serde(default)]
    pub break_glass: bool,
}

#[derive(Serialize)]
struct Resolved<'a> {
    token: &'a str,
    system: &'a str,
    value: &'a str,
    break_glass: bool,
}

/// One caller as the callers file lists it (`consentry vault caller add`
/// writes it): the credential only as its SHA-256 digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CallerEntry {
    pub id: String,
    pub credential_sha256: String,
    pub domains: BTreeSet<String>,
    pub purposes: BTreeSet<String>,
    #[serde(default)]
    pub break_glass: bool,
    pub rate_per_minute: u32,
}

/// The callers file: `{"callers": [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CallersFile {
    pub callers: Vec<CallerEntry>,
}

impl CallersFile {
    /// The credentials it defines; an entry whose digest is not 64 hex
    /// characters is an error naming the caller.
    pub fn credentials(&self) -> Result<Credentials, String> {
        let mut creds = Credentials::default();
        for c in &self.callers {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&c.credential_sha256, &mut digest).map_err(|_| {
                format!(
                    "caller '{}': credential_sha256 is not 64 hex characters",
                    c.id
                )
            })?;
            creds.insert_digest(
                digest,
                Caller {
                    id: c.id.clone(),
                    domains: c.domains.clone(),
                    purposes: c.purposes.clone(),
                    break_glass: c.break_glass,
                    rate_per_minute: c.rate_per_minute,
                },
            );
        }
        Ok(creds)
    }
}

pub struct Api {
    vault: Vault,
    credentials: Credentials,
    policy: Policy,
    limiter: Mutex<RateLimiter>,
}

fn error(status: u16, error: &str, reason: &str, detail: &str) -> Response {
    Response {
        status,
        body: serde_json::json!({"error": error, "reason": reason, "detail": detail}).to_string(),
        retry_after_s: None,
    }
}

/// The scope decision on a request: `Ok(break_glass)`, or the 403 answer
/// (its reason in the call record).
fn scope(
    caller: &Caller,
    request: &Request<'_>,
    policy: &Policy,
    action: &str,
    call: &mut CallRecord,
) -> Result<bool, Response> {
    match authorize(caller, request, policy) {
        Decision::Allow => Ok(false),
        Decision::AllowBreakGlass => Ok(true),
        Decision::Deny(why) => deny(caller, why, action, call),
    }
}

/// The 403 answer for `why`, its reason in the call record.
fn deny(caller: &Caller, why: Deny, action: &str, call: &mut CallRecord) -> Result<bool, Response> {
    call.reason = why.code();
    Err(error(
        403,
        "forbidden",
        why.code(),
        &format!(
            "caller '{}' may not {action} for this purpose ({})",
            caller.id,
            why.code()
        ),
    ))
}

impl Api {
    pub fn new(vault: Vault, credentials: Credentials, policy: Policy) -> Api {
        Api {
            vault,
            credentials,
            policy,
            limiter: Mutex::new(RateLimiter::default()),
        }
    }

    /// Whether an `Authorization` value names a caller (a digest lookup,
    /// no I/O): the server asks before it reads a body.
    pub fn authenticates(&self, authorization: Option<&str>) -> bool {
        self.credentials.authenticate(authorization).is_some()
    }

    /// The vault it answers from (for health checks).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Answers one call at `now` (the monotonic clock, for rate limits).
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
        now: Instant,
    ) -> (Response, CallRecord) {
        let mut call = CallRecord {
            caller: None,
            purpose: None,
            token: None,
            quarantine_id: None,
            decision: "deny",
            reason: "ok",
            status: 0,
            justification: None,
        };
        let response = self.answer(method, path, authorization, body, now, &mut call);
        call.status = response.status;
        (response, call)
    }

    fn answer(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
        now: Instant,
        call: &mut CallRecord,
    ) -> Response {
        let Some(caller) = self.credentials.authenticate(authorization) else {
            call.reason = "unauthenticated";
            return error(
                401,
                "unauthenticated",
                "unauthenticated",
                "a valid bearer credential is required: Authorization: Bearer <credential>",
            );
        };
        call.caller = Some(caller.id.clone());
        let admitted = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(caller, now);
        if !admitted {
            call.reason = "rate_limited";
            let mut r = error(
                429,
                "rate_limited",
                "rate_limited",
                &format!(
                    "caller '{}' is limited to {} resolutions a minute",
                    caller.id, caller.rate_per_minute
                ),
            );
            r.retry_after_s = Some(u64::from(60 / caller.rate_per_minute.max(1)).max(1));
            return r;
        }
        match (method, path) {
            ("POST", RESOLVE_PATH) => self.resolve(caller, body, call),
            ("POST", QUARANTINE_OPEN_PATH) => self.open_quarantined(caller, body, call),
            _ => {
                call.reason = "bad_request";
                error(
                    404,
                    "not_found",
                    "unknown_endpoint",
                    "the vault answers POST /v1/resolve and POST /v1/quarantine/open",
                )
            }
        }
    }

    fn resolve(&self, caller: &Caller, body: &[u8], call: &mut CallRecord) -> Response {
        let Ok(req) = serde_json::from_slice::<ResolveBody>(body) else {
            call.reason = "bad_request";
            return error(
                400,
                "bad_request",
                "bad_request",
                "the body must be JSON: {\"token\", \"purpose\", \"justification\", \"break_glass\"?}",
            );
        };
        if req.justification.len() > MAX_JUSTIFICATION_BYTES
            || req.purpose.len() > MAX_FIELD_BYTES
            || req.token.len() > MAX_FIELD_BYTES
        {
            return too_long(call);
        }
        call.purpose = Some(req.purpose.clone());
        call.justification = Some(req.justification.clone());
        let token = match Token::parse(&req.token) {
            Ok(t) => t,
            Err(e) => {
                call.reason = "bad_request";
                return error(400, "bad_request", "bad_token", &e.to_string());
            }
        };
        call.token = Some(req.token.clone());
        // A token is resolved only for the purpose it was issued for, even
        // by break-glass: a recipient of one purpose's data cannot relink
        // it by naming another.
        if let Some(why) = self.policy.check_purpose(token.domain, &req.purpose) {
            if let Err(refused) = deny(caller, why, "resolve this token", call) {
                return refused;
            }
        }
        let request = Request {
            domain: token.domain,
            purpose: &req.purpose,
            justification: &req.justification,
            break_glass: req.break_glass,
        };
        let break_glass = match scope(caller, &request, &self.policy, "resolve this token", call) {
            Ok(bg) => bg,
            Err(refused) => return refused,
        };
        match self.vault.resolve(&req.token) {
            Ok(identity) => {
                call.decision = if break_glass { "break_glass" } else { "allow" };
                let text = String::from_utf8_lossy(&identity);
                let (system, value) = text.split_once('|').unwrap_or(("", &text));
                Response {
                    status: 200,
                    body: serde_json::to_string(&Resolved {
                        token: &req.token,
                        system,
                        value,
                        break_glass,
                    })
                    .unwrap_or_default(),
                    retry_after_s: None,
                }
            }
            Err(VaultError::NotFound) => {
                call.reason = "not_found";
                error(
                    404,
                    "not_found",
                    "not_found",
                    "no such token (unknown, or its subject's keys were shredded)",
                )
            }
            Err(VaultError::BadToken(e)) => {
                call.reason = "bad_request";
                error(400, "bad_request", "bad_token", &e.to_string())
            }
            Err(_) => {
                call.reason = "unavailable";
                error(
                    503,
                    "unavailable",
                    "unavailable",
                    "the vault's store did not answer; retry",
                )
            }
        }
    }

    /// `POST /v1/quarantine/open`: a quarantined payload, for a caller
    /// whose scope holds the `quarantine` domain and the stated purpose
    /// (`quarantine-review` to read one, `quarantine-redrive` to send one
    /// back), with a justification.
    fn open_quarantined(&self, caller: &Caller, body: &[u8], call: &mut CallRecord) -> Response {
        let Ok(req) = serde_json::from_slice::<QuarantineOpenBody>(body) else {
            call.reason = "bad_request";
            return error(
                400,
                "bad_request",
                "bad_request",
                "the body must be JSON: {\"id\", \"stage\", \"source_topic\", \"source_partition\", \"source_offset\", \"reason\", \"sealed_hex\", \"purpose\", \"justification\", \"break_glass\"?}",
            );
        };
        if req.justification.len() > MAX_JUSTIFICATION_BYTES
            || [
                &req.id,
                &req.stage,
                &req.source_topic,
                &req.reason,
                &req.purpose,
            ]
            .iter()
            .any(|f| f.len() > MAX_FIELD_BYTES)
        {
            return too_long(call);
        }
        call.purpose = Some(req.purpose.clone());
        call.justification = Some(req.justification.clone());
        call.quarantine_id = Some(req.id.clone());
        if ![PURPOSE_QUARANTINE_REVIEW, PURPOSE_QUARANTINE_REDRIVE].contains(&req.purpose.as_str())
        {
            if let Err(refused) = deny(
                caller,
                Deny::PurposeNotForDomain,
                "open quarantined records",
                call,
            ) {
                return refused;
            }
        }
        let request = Request {
            domain: QUARANTINE_DOMAIN,
            purpose: &req.purpose,
            justification: &req.justification,
            break_glass: req.break_glass,
        };
        let break_glass = match scope(
            caller,
            &request,
            &self.policy,
            "open quarantined records",
            call,
        ) {
            Ok(bg) => bg,
            Err(refused) => return refused,
        };
        let Ok(sealed) = hex::decode(&req.sealed_hex) else {
            call.reason = "bad_request";
            return error(400, "bad_request", "bad_request", "sealed_hex is not hex");
        };
        let context = QuarantineContext {
            id: &req.id,
            stage: &req.stage,
            source_topic: &req.source_topic,
            source_partition: req.source_partition,
            source_offset: req.source_offset,
            reason: &req.reason,
        };
        match self.vault.open_quarantined(&context, &sealed) {
            Ok(payload) => {
                call.decision = if break_glass { "break_glass" } else { "allow" };
                Response {
                    status: 200,
                    body: serde_json::json!({
                        "id": req.id,
                        "payload_hex": hex::encode(payload.as_slice()),
                        "break_glass": break_glass,
                    })
                    .to_string(),
                    retry_after_s: None,
                }
            }
            Err(VaultError::Key(KeyError::Retired(v) | KeyError::UnknownVersion(v))) => {
                call.reason = "key_retired";
                error(
                    410,
                    "gone",
                    "key_retired",
                    &format!("sealed under key version {v}, which this vault no longer holds"),
                )
            }
            Err(_) => {
                call.reason = "does_not_open";
                error(
                    422,
                    "unprocessable",
                    "does_not_open",
                    "the payload does not open under its headers: altered, or sealed by another deployment",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileStore;
    use consentry_crypto::{Environment, KeyRing};
    use std::time::Duration;

    fn policy() -> Policy {
        Policy {
            purpose_domains: [
                ("patient-support", "crm"),
                ("marketing", "marketing"),
                ("trial-recruitment", "trial"),
            ]
            .iter()
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .collect(),
            justification: None,
        }
    }

    const WHY: &str = "patient called about programme enrolment";
    const EMERGENCY: &str = "adverse event report needs the patient's identity now";

    fn entry(
        id: &str,
        secret: &str,
        domains: &[&str],
        purposes: &[&str],
        bg: bool,
        rate: u32,
    ) -> CallerEntry {
        CallerEntry {
            id: id.into(),
            credential_sha256: hex::encode(Credentials::digest(secret)),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            purposes: purposes.iter().map(|p| p.to_string()).collect(),
            break_glass: bg,
            rate_per_minute: rate,
        }
    }

    fn body(token: &str, purpose: &str, why: &str, bg: bool) -> Vec<u8> {
        serde_json::json!({"token": token, "purpose": purpose, "justification": why, "break_glass": bg})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn every_status_and_what_its_call_record_says() {
        let dir = std::env::temp_dir().join(format!("consentry-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let vault = Vault::new(
            &ring,
            Environment::NonProduction,
            Box::new(FileStore::open(&dir.join("v.redb")).unwrap()),
        )
        .unwrap();
        let crm = vault
            .issue("crm", "subj-1", b"urn:mrn|MRN-0001", 1)
            .unwrap();
        let gone = vault
            .issue("crm", "subj-2", b"urn:mrn|MRN-0002", 1)
            .unwrap();
        vault.shred("subj-2", None).unwrap();
        let trial = vault
            .issue("trial", "subj-1", b"urn:mrn|MRN-0001", 1)
            .unwrap();
        let file = CallersFile {
            callers: vec![
                entry(
                    "desk",
                    "s3cret-desk",
                    &["crm", "trial"],
                    &["patient-support"],
                    true,
                    600,
                ),
                entry(
                    "slow",
                    "s3cret-slow",
                    &["crm"],
                    &["patient-support"],
                    false,
                    2,
                ),
            ],
        };
        let api = Api::new(vault, file.credentials().unwrap(), policy());
        let t0 = Instant::now();
        let call = |auth: Option<&str>, b: &[u8], ms: u64| {
            api.handle(
                "POST",
                RESOLVE_PATH,
                auth,
                b,
                t0 + Duration::from_millis(ms),
            )
        };
        let desk = Some("Bearer s3cret-desk");

        let (r, c) = call(desk, &body(&crm, "patient-support", WHY, false), 0);
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            (v["system"].as_str(), v["value"].as_str()),
            (Some("urn:mrn"), Some("MRN-0001"))
        );
        assert_eq!(
            (c.decision, c.reason, c.caller.as_deref()),
            ("allow", "ok", Some("desk"))
        );
        assert_eq!(c.token.as_deref(), Some(crm.as_str()));

        // Break-glass reaches past the caller's purposes, within its
        // domains, and only for the purpose the token is of.
        let (r, c) = call(desk, &body(&trial, "trial-recruitment", EMERGENCY, true), 0);
        assert_eq!((r.status, c.decision), (200, "break_glass"), "{}", r.body);
        assert!(c.is_break_glass());
        let (r, c) = call(desk, &body(&crm, "marketing", EMERGENCY, true), 0);
        assert_eq!((r.status, c.reason), (403, "purpose_not_for_domain"));

        for (auth, status, reason) in [
            (None, 401, "unauthenticated"),
            (Some("Bearer wrong"), 401, "unauthenticated"),
            (Some("s3cret-desk"), 401, "unauthenticated"),
        ] {
            let (r, c) = call(auth, &body(&crm, "patient-support", WHY, false), 0);
            assert_eq!((r.status, c.reason, c.decision), (status, reason, "deny"));
            assert!(c.caller.is_none());
        }
        for (b, status, reason) in [
            (
                body(&trial, "trial-recruitment", WHY, false),
                403,
                "purpose_not_in_scope",
            ),
            (
                body(&crm, "marketing", WHY, false),
                403,
                "purpose_not_for_domain",
            ),
            (
                body(&crm, "no-such-purpose", WHY, false),
                403,
                "purpose_not_for_domain",
            ),
            (
                body(
                    &crm.replace("tok:crm:", "tok:quarantine:"),
                    "patient-support",
                    WHY,
                    false,
                ),
                403,
                "purpose_not_for_domain",
            ),
            (
                body(&crm, "patient-support", "because", false),
                403,
                "justification_required",
            ),
            (
                body(
                    &crm.replace("tok:crm:", "tok:marketing:"),
                    "marketing",
                    EMERGENCY,
                    true,
                ),
                403,
                "domain_not_in_scope",
            ),
            (body(&gone, "patient-support", WHY, false), 404, "not_found"),
            (
                body("MRN-0001", "patient-support", WHY, false),
                400,
                "bad_request",
            ),
            (b"{\"token\": 1}".to_vec(), 400, "bad_request"),
            (
                body(&crm, "patient-support", &"why ".repeat(1000), false),
                400,
                "bad_request",
            ),
        ] {
            let (r, c) = call(desk, &b, 0);
            assert_eq!((r.status, c.reason), (status, reason), "{}", r.body);
            // A body never echoes what was sent.
            assert!(!r.body.contains("MRN-0001"));
        }
        let (r, _) = api.handle("GET", "/v1/other", desk, b"", t0);
        assert_eq!(r.status, 404);

        // "slow" may make 2 calls a minute: the third is refused, with a
        // Retry-After, and a minute later it is admitted again.
        let slow = Some("Bearer s3cret-slow");
        let ok = body(&crm, "patient-support", WHY, false);
        assert_eq!(call(slow, &ok, 0).0.status, 200);
        assert_eq!(
            call(slow, &body(&trial, "trial-recruitment", EMERGENCY, true), 1)
                .0
                .status,
            403
        );
        let (r, c) = call(slow, &ok, 2);
        assert_eq!(
            (r.status, c.reason, r.retry_after_s),
            (429, "rate_limited", Some(30))
        );
        assert_eq!(call(slow, &ok, 60_000).0.status, 200);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn quarantined_payloads_open_only_in_scope_and_under_their_headers() {
        let dir = std::env::temp_dir().join(format!("consentry-apiq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ring = KeyRing::generate(Environment::NonProduction).unwrap();
        let vault = Vault::new(
            &ring,
            Environment::NonProduction,
            Box::new(FileStore::open(&dir.join("v.redb")).unwrap()),
        )
        .unwrap();
        let payload = b"PID|1||MRN-0042^^^GEN||Doe^Jane";
        let context = QuarantineContext {
            id: "q-1",
            stage: "normalize",
            source_topic: "ehr.hl7v2",
            source_partition: 0,
            source_offset: 7,
            reason: "schema_drift",
        };
        let sealed = consentry_crypto::QuarantineKeys::new(&ring)
            .unwrap()
            .seal(&context, payload);
        let file = CallersFile {
            callers: vec![
                entry(
                    "ops",
                    "s3cret-ops",
                    &["quarantine"],
                    &["quarantine-review"],
                    false,
                    600,
                ),
                entry(
                    "desk",
                    "s3cret-desk",
                    &["crm"],
                    &["quarantine-review"],
                    true,
                    600,
                ),
            ],
        };
        let api = Api::new(vault, file.credentials().unwrap(), policy());
        let open = |auth: &str, purpose: &str, why: &str, reason: &str| {
            let b = serde_json::json!({
                "id": "q-1", "stage": "normalize", "source_topic": "ehr.hl7v2",
                "source_partition": 0, "source_offset": 7, "reason": reason,
                "sealed_hex": hex::encode(&sealed), "purpose": purpose, "justification": why,
            });
            api.handle(
                "POST",
                QUARANTINE_OPEN_PATH,
                Some(auth),
                b.to_string().as_bytes(),
                Instant::now(),
            )
        };
        let (r, c) = open(
            "Bearer s3cret-ops",
            "quarantine-review",
            WHY,
            "schema_drift",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            hex::decode(v["payload_hex"].as_str().unwrap()).unwrap(),
            payload
        );
        assert_eq!(
            (c.decision, c.quarantine_id.as_deref(), c.purpose.as_deref()),
            ("allow", Some("q-1"), Some("quarantine-review"))
        );
        // Out of scope: another purpose, or a caller without the domain.
        let (r, c) = open(
            "Bearer s3cret-ops",
            "quarantine-redrive",
            WHY,
            "schema_drift",
        );
        assert_eq!((r.status, c.reason), (403, "purpose_not_in_scope"));
        let (r, c) = open("Bearer s3cret-ops", "patient-support", WHY, "schema_drift");
        assert_eq!((r.status, c.reason), (403, "purpose_not_for_domain"));
        let (r, c) = open(
            "Bearer s3cret-desk",
            "quarantine-review",
            WHY,
            "schema_drift",
        );
        assert_eq!((r.status, c.reason), (403, "domain_not_in_scope"));
        let (r, c) = open(
            "Bearer s3cret-ops",
            "quarantine-review",
            "because",
            "schema_drift",
        );
        assert_eq!((r.status, c.reason), (403, "justification_required"));
        // Headers edited after sealing: the payload does not open.
        let (r, c) = open("Bearer s3cret-ops", "quarantine-review", WHY, "malformed");
        assert_eq!(
            (r.status, c.reason, c.decision),
            (422, "does_not_open", "deny")
        );
        assert!(!r.body.contains("MRN-0042"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_digest_names_its_caller() {
        let mut file = CallersFile {
            callers: vec![entry("desk", "x", &["crm"], &["p"], false, 1)],
        };
        file.callers[0].credential_sha256 = "zz".into();
        assert!(file.credentials().unwrap_err().contains("'desk'"));
    }
}
