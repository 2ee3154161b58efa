//! HIPAA Safe Harbor transforms of single values: geography, ages and
//! dates. Pure; the de-identify profiles apply them by field class and
//! record each one's method and parameters in the output's recipe. Every
//! function fails closed: a value it cannot read is suppressed (`None`),
//! never passed through.

use crate::time::parse_date;
use consentry_core::envelope::Text;

/// 3-digit ZIP codes whose geographic units held 20,000 people or fewer:
/// Safe Harbor requires `000` for them (45 CFR 164.514(b)(2)(i)(B)). The
/// list HHS publishes in its de-identification guidance, from the 2000
/// Census (the most recent it publishes).
pub const RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

/// Ages above this are folded into one category (45 CFR
/// 164.514(b)(2)(i)(C)).
pub const MAX_AGE_KEPT: u32 = 89;
pub const AGE_90_PLUS: &str = "90+";

/// A US ZIP code (`12345`, `12345-6789`, `123456789`) to its first three
/// digits, or `000` for a restricted area; anything else is suppressed.
pub fn zip3(postal: &str) -> Option<Text> {
    let p = postal.trim();
    let digits: Vec<u8> = p.bytes().filter(|b| *b != b'-').collect();
    let well_formed = (digits.len() == 5 || digits.len() == 9)
        && digits.iter().all(u8::is_ascii_digit)
        && p.bytes().filter(|b| *b == b'-').count() <= 1
        && (!p.contains('-') || (p.find('-') == Some(5) && digits.len() == 9));
    if !well_formed {
        return None;
    }
    let z3 = std::str::from_utf8(&digits[..3]).ok()?;
    Some(if RESTRICTED_ZIP3.contains(&z3) {
        Text::const_new("000")
    } else {
        Text::from(z3)
    })
}

/// A date to its year only.
pub fn year_only(date: &str) -> Option<Text> {
    parse_date(date).map(|p| Text::from(format!("{:04}", p.year).as_str()))
}

/// Whole years between a birth date and a day (epoch ms), as of that day;
/// a birth date of year precision counts from 1 January, of month
/// precision from the 1st.
pub fn age_at(birth_date: &str, at_ms: i64) -> Option<u32> {
    let birth = parse_date(birth_date)?;
    let (ay, am, ad) = crate::time::civil_from_days(at_ms.div_euclid(86_400_000));
    let (bm, bd) = (
        i64::from(birth.month.unwrap_or(1)),
        i64::from(birth.day.unwrap_or(1)),
    );
    let mut age = ay - birth.year;
    if (am, ad) < (bm, bd) {
        age -= 1;
    }
    u32::try_from(age).ok()
}

/// An age as Safe Harbor lets it leave: the number up to 89, `90+` above.
pub fn age_label(age: u32) -> Text {
    if age > MAX_AGE_KEPT {
        Text::const_new(AGE_90_PLUS)
    } else {
        Text::from(age.to_string().as_str())
    }
}

/// An age generalized to a band of `width` years (`40-49`), with everything
/// above 89 in `90+` whatever the width. `width` 0 or 1 means the age
/// itself.
pub fn age_band(age: u32, width: u32) -> Text {
    if age > MAX_AGE_KEPT {
        return Text::const_new(AGE_90_PLUS);
    }
    if width <= 1 {
        return age_label(age);
    }
    let low = age / width * width;
    let high = (low + width - 1).min(MAX_AGE_KEPT);
    Text::from(format!("{low}-{high}").as_str())
}

/// A date moved by `days`, at the precision it was given with (a year or a
/// month moves by its first day's shift, so intervals between full dates
/// are kept exactly and coarser ones approximately).
pub fn shift_date(date: &str, days: i32) -> Option<Text> {
    let parsed = parse_date(date)?;
    let day = parsed.start_ms.div_euclid(86_400_000) + i64::from(days);
    let (ny, nm, nd) = crate::time::civil_from_days(day);
    if !(1..=9999).contains(&ny) {
        return None;
    }
    Some(Text::from(
        match (parsed.month, parsed.day) {
            (None, _) => format!("{ny:04}"),
            (Some(_), None) => format!("{ny:04}-{nm:02}"),
            (Some(_), Some(_)) => format!("{ny:04}-{nm:02}-{nd:02}"),
        }
        .as_str(),
    ))
}

/// An instant (epoch ms) moved by `days`.
pub fn shift_ms(ms: i64, days: i32) -> Option<i64> {
    // Checked: an instant near i64's ends (a corrupted record) is
    // suppressed, never wrapped into some other date.
    ms.checked_add(i64::from(days) * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn day_ms(y: i64, m: i64, d: i64) -> i64 {
        crate::time::civil_to_epoch_ms(y, m, d, 12, 0, 0).unwrap()
    }

    #[test]
    fn zip_codes_keep_three_digits_and_restricted_areas_become_000() {
        assert_eq!(zip3("59457").as_deref(), Some("594"));
        assert_eq!(zip3("62704-1234").as_deref(), Some("627"));
        assert_eq!(zip3("627041234").as_deref(), Some("627"));
        for z in RESTRICTED_ZIP3 {
            assert_eq!(zip3(&format!("{z}12")).as_deref(), Some("000"), "{z}");
        }
        for bad in [
            "",
            "1234",
            "123456",
            "12a45",
            "1234-56789",
            "12345-",
            "ABCDE",
            "12-345",
        ] {
            assert_eq!(zip3(bad), None, "{bad:?} is suppressed, not passed on");
        }
    }

    #[test]
    fn ages_89_90_and_105() {
        let at = day_ms(2026, 11, 24);
        assert_eq!(age_at("1937-11-24", at), Some(89));
        assert_eq!(
            age_at("1936-11-25", at),
            Some(89),
            "the day before the birthday"
        );
        assert_eq!(age_at("1936-11-24", at), Some(90));
        assert_eq!(age_at("1921-06-01", at), Some(105));
        assert_eq!(
            age_at("1936", at),
            Some(90),
            "year precision: from 1 January"
        );
        assert_eq!(age_at("2030-01-01", at), None, "not born yet");
        assert_eq!(age_at("1936-02-30", at), None);
        assert_eq!(age_label(89), "89");
        assert_eq!(age_label(90), AGE_90_PLUS);
        assert_eq!(age_label(105), AGE_90_PLUS);
        assert_eq!(age_band(42, 10), "40-49");
        assert_eq!(age_band(85, 10), "80-89");
        assert_eq!(age_band(88, 5), "85-89");
        assert_eq!(age_band(89, 20), "80-89", "a band never reaches past 89");
        assert_eq!(age_band(90, 10), AGE_90_PLUS);
        assert_eq!(age_band(7, 1), "7");
    }

    #[test]
    fn dates_to_years_and_shifts_keep_intervals() {
        assert_eq!(year_only("1964-03-12").as_deref(), Some("1964"));
        assert_eq!(year_only("1964-03").as_deref(), Some("1964"));
        assert_eq!(year_only("1964").as_deref(), Some("1964"));
        for bad in [
            "",
            "64-03-12",
            "1964-13-01",
            "1964/03/12",
            "1964-03-12T10:00:00Z",
        ] {
            assert_eq!(year_only(bad), None, "{bad:?}");
        }
        assert_eq!(shift_date("2026-03-01", -1).as_deref(), Some("2026-02-28"));
        assert_eq!(shift_date("2024-02-28", 1).as_deref(), Some("2024-02-29"));
        assert_eq!(shift_date("2026-12", 45).as_deref(), Some("2027-01"));
        assert_eq!(shift_date("2026", -1).as_deref(), Some("2025"));
        assert_eq!(shift_date("0001-01-01", -1), None);
        assert_eq!(shift_ms(0, 2), Some(172_800_000));
        assert_eq!(shift_ms(i64::MAX, 1), None);
        assert_eq!(shift_ms(i64::MIN, -1), None);
    }

    proptest! {
        /// Two full dates of one subject, shifted by the subject's shift,
        /// are as many days apart as before.
        #[test]
        fn a_shift_keeps_the_interval(
            a in 0i64..40_000, b in 0i64..40_000, days in -400i32..400,
        ) {
            let iso = |z: i64| {
                let (y, m, d) = crate::time::civil_from_days(z);
                format!("{y:04}-{m:02}-{d:02}")
            };
            let day_of = |s: &str| parse_date(s).unwrap().start_ms / 86_400_000;
            let (sa, sb) = (shift_date(&iso(a), days).unwrap(), shift_date(&iso(b), days).unwrap());
            prop_assert_eq!(day_of(&sb) - day_of(&sa), b - a);
            prop_assert_eq!(day_of(&sa) - a, i64::from(days));
        }

        #[test]
        fn never_panics(s in "\\PC{0,16}", days in any::<i32>()) {
            let _ = (zip3(&s), year_only(&s), shift_date(&s, days), age_at(&s, 0));
        }
    }
}
