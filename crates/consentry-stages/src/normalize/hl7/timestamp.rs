//! HL7 TS/DTM timestamps into epoch milliseconds.

/// Parses an HL7 TS/DTM (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`) into
/// epoch milliseconds. Missing parts default to their minimum; no offset
/// means UTC. Byte arithmetic on digits already checked (every timestamp of
/// every message comes through here).
pub fn parse_ts(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let (main, offset_min) = match b.iter().position(|&c| c == b'+' || c == b'-') {
        Some(i) => {
            let z = &b[i + 1..];
            if z.len() != 4 || !z.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let m = two_digits(z[0], z[1]) * 60 + two_digits(z[2], z[3]);
            (&b[..i], if b[i] == b'-' { -m } else { m })
        }
        None => (b, 0),
    };
    // The fraction of a second is not carried.
    let main = match main.iter().position(|&c| c == b'.') {
        Some(i) => &main[..i],
        None => main,
    };
    if main.len() < 4
        || main.len() > 14
        || main.len() % 2 != 0
        || !main.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let part = |at: usize, default: i64| match main.get(at..at + 2) {
        Some(p) => two_digits(p[0], p[1]),
        None => default,
    };
    crate::time::civil_to_epoch_ms(
        part(0, 0) * 100 + part(2, 0),
        part(4, 1),
        part(6, 1),
        part(8, 0),
        part(10, 0),
        part(12, 0),
    )
    .map(|ms| ms - offset_min * 60_000)
}

/// The value of two ASCII digits the caller has checked.
#[inline]
fn two_digits(a: u8, b: u8) -> i64 {
    i64::from(a.wrapping_sub(b'0')) * 10 + i64::from(b.wrapping_sub(b'0'))
}
