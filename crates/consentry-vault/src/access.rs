//! Who may resolve what; the HTTP API applies it to every call and audits
//! the outcome, allowed or denied.
//!
//! - **Authentication**: bearer credentials, stored as SHA-256 digests only,
//!   each naming a caller.
//! - **Purpose binding**: a token is resolved only for the purpose whose
//!   token domain (`topology.yaml`) is the token's domain; `quarantine` is
//!   no purpose's.
//! - **Scope**: a caller may resolve tokens of its domains, for its
//!   purposes, and must state a justification every time: long enough,
//!   and matching the deployment's pattern when one is set (a ticket
//!   reference, say).
//! - **Break-glass**: a caller allowed to may resolve within its domains for
//!   a purpose outside its scope, with a longer justification; the decision
//!   says so, so the call is audited at high severity and counted.
//! - **Rate limit**: a token bucket per caller, on the monotonic clock.
//!
//! Decisions map to HTTP statuses: unknown credentials 401, a denial 403,
//! the rate limit 429.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// The shortest justification accepted, and for break-glass.
pub const MIN_JUSTIFICATION: usize = 10;
pub const MIN_BREAK_GLASS_JUSTIFICATION: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub domains: BTreeSet<String>,
    pub purposes: BTreeSet<String>,
    pub break_glass: bool,
    /// Resolutions per minute.
    pub rate_per_minute: u32,
}

/// A resolution as the caller states it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub domain: &'a str,
    pub purpose: &'a str,
    pub justification: &'a str,
    pub break_glass: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    NoJustification,
    /// The justification does not match the deployment's pattern.
    JustificationPattern,
    /// The stated purpose's tokens are of another domain (or it is no
    /// purpose of the topology).
    PurposeNotForDomain,
    DomainNotInScope,
    PurposeNotInScope,
    BreakGlassNotPermitted,
}

impl Deny {
    /// The reason code the audit record and the 403 body carry.
    pub fn code(self) -> &'static str {
        match self {
            Deny::NoJustification => "justification_required",
            Deny::JustificationPattern => "justification_pattern_mismatch",
            Deny::PurposeNotForDomain => "purpose_not_for_domain",
            Deny::DomainNotInScope => "domain_not_in_scope",
            Deny::PurposeNotInScope => "purpose_not_in_scope",
            Deny::BreakGlassNotPermitted => "break_glass_not_permitted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed only by break-glass: audit at high severity, count it.
    AllowBreakGlass,
    Deny(Deny),
}

/// The deployment's rules every request meets whoever calls: which
/// purpose may resolve which token domain, and what a justification must
/// look like.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Purpose → its token domain, from `topology.yaml`.
    pub purpose_domains: BTreeMap<String, String>,
    /// A pattern every justification must match (searched, not anchored).
    pub justification: Option<regex::Regex>,
}

impl Policy {
    /// `None` when the purpose may ask for tokens of `domain`.
    pub fn check_purpose(&self, domain: &str, purpose: &str) -> Option<Deny> {
        match self.purpose_domains.get(purpose) {
            Some(d) if d == domain => None,
            _ => Some(Deny::PurposeNotForDomain),
        }
    }
}

/// The scope decision for one request (before the rate limit).
pub fn authorize(caller: &Caller, req: &Request<'_>, policy: &Policy) -> Decision {
    let trimmed = req.justification.trim();
    let justification = trimmed.chars().count();
    if justification < MIN_JUSTIFICATION {
        return Decision::Deny(Deny::NoJustification);
    }
    if policy
        .justification
        .as_ref()
        .is_some_and(|p| !p.is_match(trimmed))
    {
        return Decision::Deny(Deny::JustificationPattern);
    }
    if !caller.domains.contains(req.domain) {
        return Decision::Deny(Deny::DomainNotInScope);
    }
    if caller.purposes.contains(req.purpose) {
        return Decision::Allow;
    }
    if !req.break_glass {
        return Decision::Deny(Deny::PurposeNotInScope);
    }
    if !caller.break_glass {
        return Decision::Deny(Deny::BreakGlassNotPermitted);
    }
    if justification < MIN_BREAK_GLASS_JUSTIFICATION {
        return Decision::Deny(Deny::NoJustification);
    }
    Decision::AllowBreakGlass
}

/// Callers by the digest of their bearer credential.
#[derive(Debug, Default)]
pub struct Credentials {
    by_digest: HashMap<[u8; 32], Caller>,
}

impl Credentials {
    /// Registers a caller under the SHA-256 digest of its credential (the
    /// credential itself is never kept).
    pub fn insert_digest(&mut self, digest: [u8; 32], caller: Caller) {
        self.by_digest.insert(digest, caller);
    }

    pub fn digest(credential: &str) -> [u8; 32] {
        Sha256::digest(credential.as_bytes()).into()
    }

    /// The caller an `Authorization` header value names, if any.
    pub fn authenticate(&self, header: Option<&str>) -> Option<&Caller> {
        let credential = header?.strip_prefix("Bearer ")?.trim();
        if credential.is_empty() {
            return None;
        }
        self.by_digest.get(&Self::digest(credential))
    }
}

/// A token bucket per caller: `rate_per_minute` resolutions a minute, with
/// bursts up to the same number. Time is the monotonic clock, passed in so
/// it is testable: a wall clock set back would refill no bucket, and set
/// forward would not refill all of them.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    /// Takes one token for the caller at `now`; `false` means 429.
    pub fn admit(&mut self, caller: &Caller, now: Instant) -> bool {
        let capacity = f64::from(caller.rate_per_minute);
        let (tokens, last) = self
            .buckets
            .entry(caller.id.clone())
            .or_insert((capacity, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64() * 1000.0;
        *tokens = (*tokens + elapsed * capacity / 60_000.0).min(capacity);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(break_glass: bool) -> Caller {
        Caller {
            id: "crm-support-desk".into(),
            domains: ["crm".to_string()].into(),
            purposes: ["patient-support".to_string()].into(),
            break_glass,
            rate_per_minute: 3,
        }
    }

    const WHY: &str = "patient called about programme enrolment";
    const EMERGENCY: &str = "adverse event report needs the patient's identity now";

    #[test]
    fn the_scope_matrix() {
        use super::Deny as Why;
        use Decision::{Allow, AllowBreakGlass};
        let deny = Decision::Deny;
        // (domain, purpose, break-glass asked, break-glass permitted, justification) -> decision
        let cases = [
            ("crm", "patient-support", false, false, WHY, Allow),
            ("crm", "patient-support", true, false, WHY, Allow),
            (
                "trial",
                "patient-support",
                false,
                false,
                WHY,
                deny(Why::DomainNotInScope),
            ),
            (
                "trial",
                "patient-support",
                true,
                true,
                EMERGENCY,
                deny(Why::DomainNotInScope),
            ),
            (
                "crm",
                "marketing",
                false,
                true,
                WHY,
                deny(Why::PurposeNotInScope),
            ),
            (
                "crm",
                "marketing",
                true,
                false,
                EMERGENCY,
                deny(Why::BreakGlassNotPermitted),
            ),
            // Enough for a routine call, too short for break-glass.
            (
                "crm",
                "marketing",
                true,
                true,
                "urgent patient call",
                deny(Why::NoJustification),
            ),
            (
                "crm",
                "patient-support",
                false,
                false,
                "urgent patient call",
                Allow,
            ),
            ("crm", "marketing", true, true, EMERGENCY, AllowBreakGlass),
            (
                "crm",
                "patient-support",
                false,
                false,
                "",
                deny(Why::NoJustification),
            ),
            (
                "crm",
                "patient-support",
                false,
                false,
                "   because  ",
                deny(Why::NoJustification),
            ),
        ];
        for (domain, purpose, ask, permitted, justification, want) in cases {
            let req = Request {
                domain,
                purpose,
                justification,
                break_glass: ask,
            };
            assert_eq!(
                authorize(&caller(permitted), &req, &Policy::default()),
                want,
                "{domain} {purpose} ask={ask} permitted={permitted} {justification:?}"
            );
        }
        assert_eq!(Deny::PurposeNotInScope.code(), "purpose_not_in_scope");
    }

    #[test]
    fn a_justification_must_match_the_pattern_when_one_is_set() {
        let policy = Policy {
            justification: Some(regex::Regex::new(r"\b[A-Z]{2,10}-[0-9]+\b").unwrap()),
            ..Policy::default()
        };
        let ask = |justification| Request {
            domain: "crm",
            purpose: "patient-support",
            justification,
            break_glass: false,
        };
        assert_eq!(
            authorize(&caller(false), &ask(WHY), &policy),
            Decision::Deny(Deny::JustificationPattern)
        );
        assert_eq!(
            authorize(
                &caller(false),
                &ask("SUP-1234 patient called back"),
                &policy
            ),
            Decision::Allow
        );
        assert_eq!(
            authorize(&caller(false), &ask("SUP-12"), &policy),
            Decision::Deny(Deny::NoJustification),
            "the length still counts"
        );
    }

    #[test]
    fn a_purpose_resolves_only_its_own_token_domain() {
        let policy = Policy {
            purpose_domains: [("patient-support", "crm"), ("trial-recruitment", "trial")]
                .iter()
                .map(|(p, d)| (p.to_string(), d.to_string()))
                .collect(),
            justification: None,
        };
        assert_eq!(policy.check_purpose("crm", "patient-support"), None);
        for (domain, purpose) in [
            ("crm", "trial-recruitment"),
            ("trial", "patient-support"),
            ("quarantine", "patient-support"),
            ("crm", "no-such-purpose"),
            ("subject", "patient-support"),
        ] {
            assert_eq!(
                policy.check_purpose(domain, purpose),
                Some(Deny::PurposeNotForDomain),
                "{domain} {purpose}"
            );
        }
    }

    #[test]
    fn only_registered_bearer_credentials_authenticate() {
        let mut creds = Credentials::default();
        creds.insert_digest(Credentials::digest("s3cret-credential"), caller(false));
        assert_eq!(
            creds
                .authenticate(Some("Bearer s3cret-credential"))
                .map(|c| c.id.as_str()),
            Some("crm-support-desk")
        );
        for header in [
            None,
            Some(""),
            Some("Bearer "),
            Some("Basic s3cret-credential"),
            Some("Bearer s3cret-credentiaL"),
            Some("s3cret-credential"),
        ] {
            assert!(creds.authenticate(header).is_none(), "{header:?}");
        }
        assert!(!format!("{creds:?}").contains("s3cret"));
    }

    #[test]
    fn rate_limit_per_caller_refills_over_time() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let c = caller(false);
        let other = Caller {
            id: "trial-coordinator".into(),
            ..caller(false)
        };
        assert!(
            (0..3).all(|_| limiter.admit(&c, at(0))),
            "a burst up to the rate"
        );
        assert!(
            !limiter.admit(&c, at(0)),
            "the fourth in a minute is refused"
        );
        assert!(limiter.admit(&other, at(0)), "buckets are per caller");
        assert!(
            !limiter.admit(&c, at(19_000)),
            "a third of a token after 19 s"
        );
        assert!(
            limiter.admit(&c, at(20_000)),
            "one token after 20 s at 3/min"
        );
        assert!(!limiter.admit(&c, at(20_001)));
        assert!(
            (0..3).all(|_| limiter.admit(&c, at(200_000))),
            "refilled, capped"
        );
        assert!(!limiter.admit(&c, at(200_000)));
    }
}
