//! `POST /v1/quarantine/open`: a quarantined payload, for a caller whose
//! scope holds the `quarantine` domain and the stated purpose
//! (`quarantine-review` to read one, `quarantine-redrive` to send one
//! back), with a justification. The payload opens only under the headers
//! it was sealed with.

use super::request::parse;
use super::{
    bad_request, deny, error, scope, Api, CallDecision, CallRecord, QuarantineOpenBody, Response,
    PURPOSE_QUARANTINE_REDRIVE, PURPOSE_QUARANTINE_REVIEW, QUARANTINE_DOMAIN,
};
use crate::access::{Caller, Deny, Request};
use crate::vault::VaultError;
use consentry_crypto::KeyError;

impl Api {
    pub(super) fn open_quarantined(
        &self,
        caller: &Caller,
        body: &[u8],
        call: &mut CallRecord,
    ) -> Response {
        let req: QuarantineOpenBody = match parse(body, call) {
            Ok(req) => req,
            Err(refused) => return refused,
        };
        call.purpose = Some(req.purpose.clone());
        call.justification = Some(req.justification.clone());
        call.quarantine_id = Some(req.id.clone());
        let action = "open quarantined records";
        if ![PURPOSE_QUARANTINE_REVIEW, PURPOSE_QUARANTINE_REDRIVE].contains(&req.purpose.as_str())
        {
            return deny(caller, Deny::PurposeNotForDomain, action, call);
        }
        let request = Request {
            domain: QUARANTINE_DOMAIN,
            purpose: &req.purpose,
            justification: &req.justification,
            break_glass: req.break_glass,
        };
        let break_glass = match scope(caller, &request, &self.policy, action, call) {
            Ok(bg) => bg,
            Err(refused) => return refused,
        };
        let Ok(sealed) = hex::decode(&req.sealed_hex) else {
            return bad_request(call, "bad_request", "sealed_hex is not hex");
        };
        match self.vault.open_quarantined(&req.context(), &sealed) {
            Ok(payload) => {
                call.decision = CallDecision::granted(break_glass);
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
