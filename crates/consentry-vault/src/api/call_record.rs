//! What the audit record of one vault call says: ids, codes, the token,
//! never what it stands for nor the credential. `consentry vault serve`
//! turns it into an audit record and a metric label.

use serde::Serialize;
use std::fmt;

/// What a call came to. The strings (`as_str`, serde, `Display`) are the
/// audit record's decisions for vault calls and the `decision` label of
/// the vault's request metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDecision {
    /// Resolved (or opened) within the caller's scope.
    Allow,
    /// Resolved (or opened) by break-glass, past the caller's purposes.
    BreakGlass,
    /// Refused, or not answered with an identity.
    Deny,
}

impl CallDecision {
    pub const ALL: [CallDecision; 3] = [
        CallDecision::Allow,
        CallDecision::BreakGlass,
        CallDecision::Deny,
    ];

    /// The decision of a call that was answered with what it asked for.
    pub fn granted(break_glass: bool) -> CallDecision {
        if break_glass {
            CallDecision::BreakGlass
        } else {
            CallDecision::Allow
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallDecision::Allow => "allow",
            CallDecision::BreakGlass => "break_glass",
            CallDecision::Deny => "deny",
        }
    }
}

impl fmt::Display for CallDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: tables print these with widths.
        f.pad(self.as_str())
    }
}

/// The facts of one call for its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub caller: Option<String>,
    pub purpose: Option<String>,
    pub token: Option<String>,
    pub decision: CallDecision,
    /// `ok` or why not (`unauthenticated`, `rate_limited`, a scope reason,
    /// `not_found`, `shredded` (answered as `not_found`), `bad_request`,
    /// `unavailable`, `key_retired`, `does_not_open`).
    pub reason: &'static str,
    pub status: u16,
    pub justification: Option<String>,
    /// The quarantined record a call opened (or tried to).
    pub quarantine_id: Option<String>,
}

impl CallRecord {
    pub fn is_break_glass(&self) -> bool {
        self.decision == CallDecision::BreakGlass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_serialize_as_their_audit_strings() {
        for d in CallDecision::ALL {
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
            assert_eq!(d.to_string(), d.as_str());
        }
        assert_eq!(
            CallDecision::ALL.map(CallDecision::as_str),
            ["allow", "break_glass", "deny"]
        );
    }
}
