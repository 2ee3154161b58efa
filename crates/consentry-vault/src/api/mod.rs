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
//!
//! Here: authentication, the rate limit, routing and the answers every
//! endpoint shares. Each endpoint has its own file (`resolve`,
//! `quarantine_open`); request bodies and their field caps are in
//! `request`, the callers file in `callers`, what a call's audit record
//! says in `call_record`.

mod call_record;
mod callers;
mod quarantine_open;
mod request;
mod resolve;
#[cfg(test)]
mod tests;

pub use call_record::{CallDecision, CallRecord};
pub use callers::{CallerEntry, CallersFile};
pub use request::{QuarantineOpenBody, MAX_FIELD_BYTES, MAX_JUSTIFICATION_BYTES};

use crate::access::{authorize, Caller, Credentials, Decision, Deny, Policy, RateLimiter, Request};
use crate::vault::Vault;
use std::sync::Mutex;
use std::time::Instant;

pub const RESOLVE_PATH: &str = "/v1/resolve";
pub const QUARANTINE_OPEN_PATH: &str = "/v1/quarantine/open";
/// The scope domain and purposes of opening quarantined records.
pub const QUARANTINE_DOMAIN: &str = "quarantine";
pub const PURPOSE_QUARANTINE_REVIEW: &str = "quarantine-review";
pub const PURPOSE_QUARANTINE_REDRIVE: &str = "quarantine-redrive";

/// An HTTP answer: status, JSON body, and `Retry-After` seconds for 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub retry_after_s: Option<u64>,
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

/// A 400 answer (`reason` in the body; `bad_request` in the call record).
fn bad_request(call: &mut CallRecord, reason: &str, detail: &str) -> Response {
    call.reason = "bad_request";
    error(400, "bad_request", reason, detail)
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
        Decision::Deny(why) => Err(deny(caller, why, action, call)),
    }
}

/// The 403 answer for `why`, its reason in the call record.
fn deny(caller: &Caller, why: Deny, action: &str, call: &mut CallRecord) -> Response {
    call.reason = why.code();
    error(
        403,
        "forbidden",
        why.code(),
        &format!(
            "caller '{}' may not {action} for this purpose ({})",
            caller.id,
            why.code()
        ),
    )
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

    /// `purpose` when the deployment's topology names it, else `other`: a
    /// metric label from a closed set, whatever a caller sends.
    pub fn purpose_label<'a>(&'a self, purpose: &str) -> &'a str {
        self.policy
            .purpose_domains
            .get_key_value(purpose)
            .map_or("other", |(k, _)| k.as_str())
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
            decision: CallDecision::Deny,
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
}
