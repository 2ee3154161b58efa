//! Calendar arithmetic without a time-zone database: civil date and time
//! to epoch milliseconds, and ISO 8601 / FHIR dateTime parsing.

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). Validates month, day-of-month and time ranges.
pub fn civil_to_epoch_ms(y: i64, m: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    if !(1..=12).contains(&m)
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&mi)
        || !(0..=60).contains(&s)
    {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][(m - 1) as usize];
    if !(1..=dim).contains(&d) || !(1..=9999).contains(&y) {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000)
}

/// A FHIR `date` at the precision it was written with, and the epoch ms of
/// its first instant (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateParts {
    pub year: i64,
    pub month: Option<u32>,
    pub day: Option<u32>,
    pub start_ms: i64,
}

/// The number written in `s[r]`, if it is all ASCII digits.
fn digits_at(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(r)?;
    if part.bytes().all(|c| c.is_ascii_digit()) {
        part.parse().ok()
    } else {
        None
    }
}

/// Parses a FHIR `date` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`); `None` for any
/// other form or an impossible date.
pub fn parse_date(s: &str) -> Option<DateParts> {
    let b = s.as_bytes();
    let year = digits_at(s, 0..4)?;
    let (month, day) = match b.len() {
        4 => (None, None),
        7 if b[4] == b'-' => (Some(digits_at(s, 5..7)?), None),
        10 if b[4] == b'-' && b[7] == b'-' => {
            (Some(digits_at(s, 5..7)?), Some(digits_at(s, 8..10)?))
        }
        _ => return None,
    };
    let start_ms = civil_to_epoch_ms(year, month.unwrap_or(1), day.unwrap_or(1), 0, 0, 0)?;
    Some(DateParts {
        year,
        month: month.map(|m| m as u32),
        day: day.map(|d| d as u32),
        start_ms,
    })
}

/// Parses a FHIR `date`, `dateTime` or `instant` (`YYYY`, `YYYY-MM`,
/// `YYYY-MM-DD`, `YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm)`) to epoch ms.
pub fn parse_fhir_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| digits_at(s, r);
    let y = digits(0..4)?;
    let (m, d) = match b.len() {
        4 | 7 | 10 => return parse_date(s).map(|p| p.start_ms),
        n if n >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' => {
            (digits(5..7)?, digits(8..10)?)
        }
        _ => return None,
    };
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut rest = &s[19..];
    let mut frac_ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let ms_digits = format!("{:0<3}", &f[..n.min(3)]);
        frac_ms = ms_digits.parse::<i64>().ok()?;
        rest = &f[n..];
    }
    let offset_min = zone_offset_minutes(rest)?;
    Some(civil_to_epoch_ms(y, m, d, h, mi, sec)? + frac_ms - offset_min * 60_000)
}

/// A FHIR zone designator (`Z`, `+hh:mm`, `-hh:mm`) in minutes east of
/// UTC. Read byte by byte: the text is input, and may hold any character
/// where a digit belongs (slicing a `str` there could split a character).
fn zone_offset_minutes(zone: &str) -> Option<i64> {
    let b = zone.as_bytes();
    if b == b"Z" {
        return Some(0);
    }
    let [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] = *b else {
        return None;
    };
    let digit = |c: u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
    let (hh, mm) = (digit(h1)? * 10 + digit(h2)?, digit(m1)? * 10 + digit(m2)?);
    // FHIR's zones run from -12:00 to +14:00.
    if hh > 14 || mm > 59 {
        return None;
    }
    let v = hh * 60 + mm;
    Some(if sign == b'-' { -v } else { v })
}

/// Formats epoch ms as `YYYY-MM-DDThh:mm:ssZ` (the inverse of the above).
pub fn format_iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The inverse of `days_from_civil`.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil_to_epoch_ms(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(
            civil_to_epoch_ms(2000, 3, 1, 0, 0, 0),
            Some(951_868_800_000)
        );
        assert_eq!(civil_to_epoch_ms(2023, 2, 29, 0, 0, 0), None);
        assert_eq!(
            civil_to_epoch_ms(2024, 2, 29, 0, 0, 0).map(|_| ()),
            Some(())
        );
        assert_eq!(
            parse_fhir_datetime("2026-11-01T08:30:00Z"),
            civil_to_epoch_ms(2026, 11, 1, 8, 30, 0)
        );
        assert_eq!(
            parse_fhir_datetime("2026-11-01T08:30:00.5-05:00"),
            civil_to_epoch_ms(2026, 11, 1, 13, 30, 0).map(|v| v + 500)
        );
        assert_eq!(
            parse_fhir_datetime("1980-02"),
            civil_to_epoch_ms(1980, 2, 1, 0, 0, 0)
        );
        assert_eq!(parse_fhir_datetime("2026-11-01T08:30:00"), None);
        assert_eq!(parse_fhir_datetime("2026-1x-01"), None);
        assert_eq!(format_iso(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn zone_offsets_are_read_as_bytes_never_sliced() {
        // A non-ASCII character where the zone's digits or colon belong
        // panicked the stage (issue 16): each is refused now.
        for zone in [
            "+0é:00",
            "+05é00",
            "+é5:00",
            "-05:0é",
            "+\u{1F600}",
            "+05:00é",
        ] {
            assert_eq!(
                parse_fhir_datetime(&format!("2026-11-01T08:30:00{zone}")),
                None,
                "{zone}"
            );
        }
        // Signs inside the digits (`str::parse` takes "+5" and "-1").
        assert_eq!(parse_fhir_datetime("2026-11-01T08:30:00+-1:00"), None);
        assert_eq!(parse_fhir_datetime("2026-11-01T08:30:00++5:00"), None);
        // Out of range.
        assert_eq!(parse_fhir_datetime("2026-11-01T08:30:00+15:00"), None);
        assert_eq!(parse_fhir_datetime("2026-11-01T08:30:00+05:60"), None);
        assert_eq!(
            parse_fhir_datetime("2026-11-01T08:30:00+14:00"),
            civil_to_epoch_ms(2026, 10, 31, 18, 30, 0)
        );
        // A fraction followed by a multi-byte character.
        assert_eq!(parse_fhir_datetime("2026-11-01T08:30:00.12é"), None);
    }

    proptest! {
        #[test]
        fn civil_round_trip(days in -700_000i64..2_900_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assume!((1..=9999).contains(&y));
            prop_assert_eq!(civil_to_epoch_ms(y, m, d, 0, 0, 0), Some(days * 86_400_000));
        }

        #[test]
        fn fhir_parser_never_panics(s in ".{0,40}") {
            let _ = parse_fhir_datetime(&s);
        }

        #[test]
        fn any_character_anywhere_after_a_valid_prefix_is_refused_or_read(
            zone in "\\PC{0,8}",
            frac in "\\PC{0,5}",
        ) {
            // The shape real feeds get wrong: a valid date and time, then a
            // zone or a fraction holding anything (multi-byte characters
            // where a digit belongs). Never a panic; a value only for a
            // zone of the form FHIR allows.
            for s in [
                format!("2026-11-01T08:30:00{zone}"),
                format!("2026-11-01T08:30:00.{frac}{zone}"),
            ] {
                let parsed = parse_fhir_datetime(&s);
                let zone_ok = zone == "Z"
                    || zone.len() == 6 && zone_offset_minutes(&zone).is_some();
                if !zone_ok {
                    prop_assert_eq!(parsed, None, "{:?}", s);
                }
            }
        }

        #[test]
        fn every_date_parser_takes_any_text_after_a_valid_prefix(
            tail in "\\PC{0,12}",
            prefix in proptest::sample::select(vec![
                "", "2026", "2026-11", "2026-11-01", "2026-11-01T08:30:00",
                "2026-11-01T08:30:00.", "2026-11-01T08:30:00+0", "20261101083000",
            ]),
        ) {
            // The same inputs as the `dates` fuzz target, a few hundred at
            // a time in every test run: any character, multi-byte ones
            // included, where a digit, a colon or a sign belongs.
            let s = format!("{prefix}{tail}");
            let _ = parse_fhir_datetime(&s);
            let _ = parse_date(&s);
            let _ = crate::normalize::hl7::parse_ts(&s);
            let _ = crate::deidentify::values::year_only(&s);
            let _ = crate::deidentify::values::shift_date(&s, -180);
            let _ = crate::deidentify::values::age_at(&s, 1_796_000_000_000);
        }

        #[test]
        fn iso_round_trip(ms in 0i64..250_000_000_000_000) {
            let s = format_iso(ms);
            prop_assert_eq!(parse_fhir_datetime(&s), Some(ms - ms.rem_euclid(1000)));
        }
    }
}
