//! Keyed, bounded, per-subject date shifts (issue 4): for purposes that
//! need intervals, every date of a subject moves by the same number of
//! days, chosen by a keyed hash of the subject so that it is stable across
//! restarts and replays, unknowable without the key, and never zero.

use crate::keyring::{KeyError, KeyRing};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

const HKDF_SALT: &[u8] = b"consentry/date-shift/v1";

/// Shifts for one purpose under one key version.
pub struct DateShifter {
    mac: Hmac<Sha256>,
    max_days: u32,
}

impl fmt::Debug for DateShifter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DateShifter")
            .field("max_days", &self.max_days)
            .finish_non_exhaustive()
    }
}

impl DateShifter {
    /// The shifter of `purpose` under the ring's anchor version (its oldest
    /// usable one, `KeyRing::anchor_version`): shifts lie in `[-max_days,
    /// -1] ∪ [1, max_days]`, and a key rotation changes no subject's shift
    /// (intervals across the rotation stay true). `max_days` must be at
    /// least 1.
    pub fn new(ring: &KeyRing, purpose: &str, max_days: u32) -> Result<DateShifter, KeyError> {
        if max_days == 0 {
            return Err(KeyError::Malformed(
                "a date shift needs max_days of at least 1".into(),
            ));
        }
        let version = ring.anchor_version();
        let secret = ring.secret(version)?;
        let info = [purpose.as_bytes(), b":", &version.to_be_bytes()].concat();
        let key = secret.derive(HKDF_SALT, &info);
        Ok(DateShifter {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref())
                .expect("HMAC takes keys of any length"),
            max_days,
        })
    }

    pub fn max_days(&self) -> u32 {
        self.max_days
    }

    /// The subject's shift in days (by subject key, never an identifier).
    pub fn days(&self, subject: &str) -> i32 {
        let mut mac = self.mac.clone();
        mac.update(subject.as_bytes());
        let d = mac.finalize().into_bytes();
        let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        // 2 * max_days outcomes, none of them zero; the bias of a 64-bit
        // modulus over at most a few thousand values is negligible.
        let span = 2 * u64::from(self.max_days);
        let k = (n % span) as i64;
        let max = i64::from(self.max_days);
        let days = if k < max { k - max } else { k - max + 1 };
        days as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Environment;
    use proptest::prelude::*;

    fn ring(byte: u8) -> KeyRing {
        KeyRing::from_key(Environment::NonProduction, [byte; 32])
    }

    #[test]
    fn stable_per_subject_and_purpose_and_key() {
        let a = DateShifter::new(&ring(1), "outcomes-analytics", 180).unwrap();
        let again = DateShifter::new(&ring(1), "outcomes-analytics", 180).unwrap();
        assert_eq!(a.days("subject-1"), again.days("subject-1"), "a restart");
        let other_purpose = DateShifter::new(&ring(1), "trial-recruitment", 180).unwrap();
        let other_key = DateShifter::new(&ring(2), "outcomes-analytics", 180).unwrap();
        let subjects: Vec<String> = (0..50).map(|i| format!("subject-{i}")).collect();
        let shifts = |s: &DateShifter| subjects.iter().map(|x| s.days(x)).collect::<Vec<_>>();
        assert_ne!(shifts(&a), shifts(&other_purpose));
        assert_ne!(shifts(&a), shifts(&other_key));
        // Spread: fifty subjects do not share a handful of shifts.
        let mut distinct = shifts(&a);
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 40, "{distinct:?}");
        assert!(DateShifter::new(&ring(1), "p", 0).is_err());
        // A rotation keeps every subject's shift; retiring the version the
        // shifts derive from changes them (a deliberate act).
        let mut rotated = ring(1);
        rotated.rotate().unwrap();
        let after = DateShifter::new(&rotated, "outcomes-analytics", 180).unwrap();
        assert_eq!(shifts(&a), shifts(&after));
        rotated.retire(1).unwrap();
        let retired = DateShifter::new(&rotated, "outcomes-analytics", 180).unwrap();
        assert_ne!(shifts(&a), shifts(&retired));
        assert_eq!(format!("{a:?}"), "DateShifter { max_days: 180, .. }");
    }

    proptest! {
        #[test]
        fn shifts_are_bounded_and_never_zero(subject in "\\PC{0,40}", max in 1u32..1000) {
            let s = DateShifter::new(&ring(3), "p", max).unwrap();
            let d = s.days(&subject);
            prop_assert!(d != 0 && d.unsigned_abs() <= max, "{d} for max {max}");
        }
    }
}
