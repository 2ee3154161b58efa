//! Timestamps as the feed writes them: HL7 `YYYYMMDDHHMMSS` and ISO 8601
//! UTC, from epoch seconds (a civil-from-days conversion, no time crate).

pub(crate) fn hl7_ts(epoch_s: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(epoch_s);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

pub(crate) fn iso(epoch_s: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(epoch_s);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn civil(epoch_s: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = epoch_s.div_euclid(86_400);
    let sod = epoch_s.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patient::BASE_EPOCH_S;

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(BASE_EPOCH_S), "2026-10-01T00:00:00Z");
        assert_eq!(hl7_ts(BASE_EPOCH_S + 3661), "20261001010101");
    }
}
