//! The reader against hand-written messages, reference splitters and
//! arbitrary bytes.

use super::scan::split_fields;
use super::*;
use consentry_core::envelope::Text;
use proptest::prelude::*;

const MSG: &str = "MSH|^~\\&|EPIC|CSH|RECV|FAC|20261101083000||ADT^A01|MSG0001|P|2.5\rPID|1||MRN1^^^CSHOSP^MR~ACC9^^^CSACCT^AN||Doe\\S\\x^Jane||19800101|F\r";

#[test]
fn reads_fields_components_repetitions_and_escapes() {
    let m = parse(MSG.as_bytes()).unwrap();
    let msh = m.segment("MSH").unwrap();
    assert_eq!(msh.raw(1), Some("|"));
    assert_eq!(msh.raw(2), Some("^~\\&"));
    assert_eq!(m.field(msh, 10).as_deref(), Some("MSG0001"));
    assert_eq!(m.component(msh.raw(9).unwrap(), 2).as_deref(), Some("A01"));
    let pid = m.segment("PID").unwrap();
    let reps: Vec<&str> = m.repetitions(pid, 3).collect();
    assert_eq!(reps.len(), 2);
    assert_eq!(m.component(reps[1], 4).as_deref(), Some("CSACCT"));
    assert_eq!(
        m.component(pid.raw(5).unwrap(), 1).as_deref(),
        Some("Doe^x")
    );
}

#[test]
fn escapes_hex_line_breaks_and_formatting() {
    let m = parse(MSG.as_bytes()).unwrap();
    assert_eq!(m.unescape("a\\.br\\b"), "a\nb");
    assert_eq!(m.unescape("\\X4A6F\\"), "Jo");
    assert_eq!(m.unescape("\\XC3A9\\t\\E\\"), "\u{e9}t\\");
    assert_eq!(m.unescape("\\H\\bold\\N\\"), "bold");
    assert_eq!(
        m.unescape("x\\XZZ\\y"),
        "xy",
        "bad hex is dropped, not kept"
    );
    assert_eq!(m.unescape("\\Zlocal\\"), "");
    assert_eq!(m.unescape("open\\"), "open\\");
    let pid = m.segment("PID").unwrap();
    assert_eq!(pid.populated().collect::<Vec<_>>(), [1, 3, 5, 7, 8]);
    assert_eq!(m.segment("MSH").unwrap().populated().next(), Some(3));
    assert_eq!(m.comp(pid, 3, 4).as_deref(), Some("CSHOSP"));
    assert_eq!(m.subcomponent("a&b^c", 1, 2).as_deref(), Some("b"));
}

#[test]
fn values_are_unescaped_wherever_an_escape_occurs() {
    // MSH-2 holds the escape character itself: that is not an escape.
    let plain = parse(b"MSH|^~\\&|APP\rPID|1||XY^^^A").unwrap();
    assert!(!plain.escapes);
    // An escape in the first field after MSH-2 is seen.
    let first = parse(b"MSH|^~\\&|A\\T\\B\rPID|1").unwrap();
    assert!(first.escapes);
    let msh = first.segment("MSH").unwrap();
    assert_eq!(first.comp(msh, 3, 1).as_deref(), Some("A&B"));
    // No escape character declared: nothing is an escape.
    let none = parse(b"MSH|^~|A\\T\\B").unwrap();
    assert!(!none.escapes);
    let msh = none.segment("MSH").unwrap();
    assert_eq!(none.field(msh, 3).as_deref(), Some("A\\T\\B"));
}

#[test]
fn mllp_and_line_endings() {
    let framed = [
        &[0x0bu8][..],
        MSG.replace('\r', "\r\n").as_bytes(),
        &[0x1c, 0x0d],
    ]
    .concat();
    let m = parse(&framed).unwrap();
    assert_eq!(m.segment_count(), 2);
}

#[test]
fn rejects_bad_input() {
    assert_eq!(parse(b"").unwrap_err(), Hl7Error::NoMsh);
    assert_eq!(parse(b"PID|1").unwrap_err(), Hl7Error::NoMsh);
    assert_eq!(parse(b"MSH").unwrap_err(), Hl7Error::BadEncodingCharacters);
    assert_eq!(
        parse(b"MSH|||").unwrap_err(),
        Hl7Error::BadEncodingCharacters
    );
    assert_eq!(
        parse(b"MSH|^~\\&|A\rpid|1").unwrap_err(),
        Hl7Error::BadSegmentId(2)
    );
    assert_eq!(
        parse(&[b'M', b'S', b'H', b'|', 0xff]).unwrap_err(),
        Hl7Error::NotUtf8
    );
}

#[test]
fn timestamps() {
    assert_eq!(parse_ts("19700101"), Some(0));
    assert_eq!(parse_ts("197001010001"), Some(60_000));
    assert_eq!(parse_ts("19700101000100+0001"), Some(0));
    assert_eq!(
        parse_ts("20261101083000.123-0500"),
        parse_ts("20261101133000")
    );
    assert_eq!(parse_ts("2026130"), None);
    assert_eq!(parse_ts("20261340"), None);
    assert_eq!(parse_ts("x"), None);
}

/// The str-based parser the byte version replaced, kept as its oracle.
// Parses an HL7 TS/DTM (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`) into
// epoch milliseconds. Missing parts default to their minimum; no offset
// means UTC.
fn parse_ts_reference(s: &str) -> Option<i64> {
    let (main, offset_min) = match s.find(['+', '-']) {
        Some(i) => {
            let z = &s[i + 1..];
            if z.len() != 4 || !z.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let m = z[..2].parse::<i64>().ok()? * 60 + z[2..].parse::<i64>().ok()?;
            (&s[..i], if &s[i..i + 1] == "-" { -m } else { m })
        }
        None => (s, 0),
    };
    let main = main.split('.').next()?;
    if main.len() < 4
        || main.len() > 14
        || main.len() % 2 != 0
        || !main.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let num = |a: usize, b: usize, d: i64| -> Option<i64> {
        if main.len() >= b {
            main[a..b].parse().ok()
        } else {
            Some(d)
        }
    };
    crate::time::civil_to_epoch_ms(
        num(0, 4, 0)?,
        num(4, 6, 1)?,
        num(6, 8, 1)?,
        num(8, 10, 0)?,
        num(10, 12, 0)?,
        num(12, 14, 0)?,
    )
    .map(|ms| ms - offset_min * 60_000)
}

proptest! {
    #[test]
    fn parse_ts_matches_its_reference(s in "[0-9]{0,15}([.][0-9a]{0,3})?([+-][0-9]{0,5})?") {
        prop_assert_eq!(parse_ts(&s), parse_ts_reference(&s));
    }

    #[test]
    fn parse_ts_matches_its_reference_near_valid_dates(
        parts in (1000u32..10000, 0u32..14, 0u32..33, 0u32..25, 0u32..61, 0u32..62),
        len in prop::sample::select(vec![4usize, 6, 8, 10, 12, 14]),
        tail in prop::sample::select(vec!["", ".5", ".123", "+0130", "-0500", ".1-0330", "+5", "-"]),
    ) {
        let (y, mo, d, h, mi, sec) = parts;
        let full = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{sec:02}");
        let s = format!("{}{tail}", &full[..len]);
        prop_assert_eq!(parse_ts(&s), parse_ts_reference(&s));
    }

    /// The byte splitters agree with `str::split` for any text and any
    /// delimiter, ASCII or not.
    #[test]
    fn splitters_match_str_split(s in "[a-c|^~\\\\&é€]{0,90}", sep in prop::sample::select(vec!['|', '^', '~', '&', 'é', '€']), max in 1usize..8) {
        let ours: Vec<&str> = parts(&s, sep).collect();
        let std: Vec<&str> = s.split(sep).collect();
        prop_assert_eq!(&ours, &std);
        for n in 0..std.len() + 2 {
            prop_assert_eq!(nth_part(&s, sep, n), s.split(sep).nth(n));
        }
        prop_assert_eq!(first_nonempty(&s, sep), s.split(sep).find(|p| !p.is_empty()));
        let mut bounds = Vec::new();
        let fits = split_fields(&s, 7, sep, max, &mut bounds);
        let std_pieces: Vec<&str> = s.split(sep).collect();
        prop_assert_eq!(fits, std_pieces.len() <= max);
        if fits {
            bounds.push(7 + (s.len() + sep.len_utf8()) as u32);
            let ours: Vec<&str> = bounds
                .windows(2)
                .map(|w| &s[w[0] as usize - 7..w[1] as usize - 7 - sep.len_utf8()])
                .collect();
            prop_assert_eq!(ours, std_pieces);
        }
    }

    /// Components, the leading value and look-ups on a real message agree
    /// with `str::split`.
    #[test]
    fn component_lookups_match_str_split(v in "[a-c ^~&é]{0,60}") {
        let text = format!("MSH|^~\\&|{v}");
        let m = parse(text.as_bytes()).unwrap();
        let msh = m.segment("MSH").unwrap();
        let raw = msh.raw(3).unwrap();
        prop_assert_eq!(raw, v.as_str());
        let comps = m.comps(raw);
        for c in 1..=MAX_COMPONENTS {
            let expected = raw.split('^').nth(c - 1);
            prop_assert_eq!(comps.raw(c), expected);
            let first_sub = expected
                .and_then(|x| x.split('&').next())
                .map(str::trim_ascii)
                .filter(|x| !x.is_empty());
            prop_assert_eq!(comps.get(c), first_sub.map(Text::from));
            let second_sub = expected
                .and_then(|x| x.split('&').nth(1))
                .map(str::trim_ascii)
                .filter(|x| !x.is_empty());
            prop_assert_eq!(comps.sub(c, 2), second_sub.map(Text::from));
        }
        let first_rep = raw.split('~').find(|r| !r.is_empty());
        let expected = first_rep
            .and_then(|r| r.split('^').next())
            .and_then(|c| c.split('&').next())
            .map(str::trim_ascii)
            .filter(|x| !x.is_empty());
        let got = m.comp(msh, 3, 1);
        prop_assert_eq!(got.as_deref(), expected);
    }

    #[test]
    fn component_lookups_match_str_split_for_any_separators(
        v in "[a-c ^~&é€§¤]{0,60}",
        comp in prop::sample::select(vec!['^', '€', '§']),
        sub in prop::sample::select(vec!['&', '¤', '€']),
    ) {
        prop_assume!(comp != sub);
        let text = format!("MSH|{comp}~\\{sub}|{v}");
        let m = parse(text.as_bytes()).unwrap();
        let raw = m.segment("MSH").unwrap().raw(3).unwrap();
        let comps = m.comps(raw);
        for c in 1..=MAX_COMPONENTS {
            let expected = raw.split(comp).nth(c - 1);
            prop_assert_eq!(comps.raw(c), expected);
            let first_sub = expected
                .and_then(|x| x.split(sub).next())
                .map(str::trim_ascii)
                .filter(|x| !x.is_empty());
            prop_assert_eq!(comps.get(c), first_sub.map(Text::from));
        }
    }

    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = parse(&bytes) {
            for s in m.segments() {
                for n in 0..8 {
                    let _ = m.field(s, n);
                    for r in m.repetitions(s, n) { let _ = m.component(r, 2); }
                }
            }
        }
    }

    #[test]
    fn never_panics_on_msh_prefixed(tail in "[|^~\\\\&A-Z0-9\r]{0,200}") {
        let s = format!("MSH{tail}");
        let _ = parse(s.as_bytes());
    }
}
