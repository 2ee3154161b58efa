//! `POST /v1/resolve`: a token back to the identity it stands for, for a
//! caller whose scope holds the token's domain and the stated purpose, and
//! only for the purpose the token was issued for.

use super::request::{parse, ResolveBody};
use super::{bad_request, deny, error, scope, Api, CallDecision, CallRecord, Response};
use crate::access::{Caller, Request};
use crate::vault::VaultError;
use consentry_crypto::Token;
use serde::Serialize;

#[derive(Serialize)]
struct Resolved<'a> {
    token: &'a str,
    system: &'a str,
    value: &'a str,
    break_glass: bool,
}

impl Api {
    pub(super) fn resolve(&self, caller: &Caller, body: &[u8], call: &mut CallRecord) -> Response {
        let req: ResolveBody = match parse(body, call) {
            Ok(req) => req,
            Err(refused) => return refused,
        };
        call.purpose = Some(req.purpose.clone());
        call.justification = Some(req.justification.clone());
        let token = match Token::parse(&req.token) {
            Ok(t) => t,
            Err(e) => return bad_request(call, "bad_token", &e.to_string()),
        };
        call.token = Some(req.token.clone());
        // A token is resolved only for the purpose it was issued for, even
        // by break-glass: a recipient of one purpose's data cannot relink
        // it by naming another.
        if let Some(why) = self.policy.check_purpose(token.domain, &req.purpose) {
            return deny(caller, why, "resolve this token", call);
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
                call.decision = CallDecision::granted(break_glass);
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
                // A token shredded since it was issued (its subject's
                // consent withdrawn or erased) is told apart in the audit
                // record and a metric, never in the answer.
                call.reason = match self.vault.was_shredded(&req.token) {
                    Ok(true) => "shredded",
                    _ => "not_found",
                };
                error(
                    404,
                    "not_found",
                    "not_found",
                    "no such token (unknown, or its subject's keys were shredded)",
                )
            }
            Err(VaultError::BadToken(e)) => bad_request(call, "bad_token", &e.to_string()),
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
}
