//! A strict, allocation-bounded reader for HL7 v2.x messages.
//!
//! Separators come from MSH-1 and MSH-2; segments end at CR (LF and CRLF
//! are accepted too); MLLP framing is removed. Field numbers follow the
//! standard: for MSH, MSH-1 is the field separator itself. Errors name a
//! segment or field position, never content.

/// Limits that keep a hostile message from costing unbounded work.
pub const MAX_SEGMENTS: usize = 5_000;
pub const MAX_FIELDS: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("message does not start with an MSH segment")]
    NoMsh,
    #[error("MSH-1/MSH-2 encoding characters are invalid")]
    BadEncodingCharacters,
    #[error("segment {0} has an invalid segment id")]
    BadSegmentId(usize),
    #[error("message has more than {MAX_SEGMENTS} segments")]
    TooManySegments,
    #[error("segment {0} has more than {MAX_FIELDS} fields")]
    TooManyFields(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: Option<char>,
    pub subcomponent: char,
}

/// A parsed message: segments borrow from the input text.
#[derive(Debug)]
pub struct Message<'a> {
    pub sep: Separators,
    pub segments: Vec<Segment<'a>>,
}

#[derive(Debug)]
pub struct Segment<'a> {
    pub id: &'a str,
    /// `fields[n]` is field n (1-based; `fields[0]` is the segment id).
    fields: Vec<&'a str>,
}

/// Removes MLLP framing (`0x0B ... 0x1C 0x0D`) if present.
pub fn strip_mllp(bytes: &[u8]) -> &[u8] {
    let mut b = bytes;
    if b.first() == Some(&0x0b) {
        b = &b[1..];
    }
    if b.ends_with(&[0x1c, 0x0d]) {
        b = &b[..b.len() - 2];
    } else if b.last() == Some(&0x1c) {
        b = &b[..b.len() - 1];
    }
    b
}

pub fn parse(bytes: &[u8]) -> Result<Message<'_>, Hl7Error> {
    let text = std::str::from_utf8(strip_mllp(bytes)).map_err(|_| Hl7Error::NotUtf8)?;
    let text = text.trim_start_matches(['\r', '\n']);
    if !text.starts_with("MSH") {
        return Err(Hl7Error::NoMsh);
    }
    let mut chars = text[3..].chars();
    let field = chars.next().ok_or(Hl7Error::BadEncodingCharacters)?;
    let enc: Vec<char> = chars.take_while(|c| *c != field).take(5).collect();
    if enc.len() < 2 || enc.len() > 4 || field.is_alphanumeric() || field == '\r' || field == '\n' {
        return Err(Hl7Error::BadEncodingCharacters);
    }
    let sep = Separators {
        field,
        component: enc[0],
        repetition: enc[1],
        escape: enc.get(2).copied(),
        subcomponent: enc.get(3).copied().unwrap_or('&'),
    };
    let all = [sep.field, sep.component, sep.repetition, sep.subcomponent];
    if all
        .iter()
        .enumerate()
        .any(|(i, a)| all[i + 1..].contains(a) || a.is_alphanumeric())
        || sep
            .escape
            .is_some_and(|e| all.contains(&e) || e.is_alphanumeric())
    {
        return Err(Hl7Error::BadEncodingCharacters);
    }

    let mut segments = Vec::new();
    for (n, line) in text.split(['\r', '\n']).enumerate() {
        if line.is_empty() {
            continue;
        }
        if segments.len() >= MAX_SEGMENTS {
            return Err(Hl7Error::TooManySegments);
        }
        let id_end = line.find(sep.field).unwrap_or(line.len());
        let id = &line[..id_end];
        if id.len() != 3
            || !id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(Hl7Error::BadSegmentId(n + 1));
        }
        let mut fields: Vec<&str> = Vec::new();
        if id == "MSH" {
            // MSH-1 is the separator itself; MSH-2 the encoding characters.
            // A later MSH (a batch) must use the same field separator.
            let rest = line[3..]
                .strip_prefix(sep.field)
                .ok_or(Hl7Error::BadEncodingCharacters)?;
            fields.push("MSH");
            fields.push(&line[3..3 + sep.field.len_utf8()]);
            fields.extend(rest.split(sep.field).take(MAX_FIELDS + 1));
        } else {
            fields.extend(line.split(sep.field).take(MAX_FIELDS + 2));
        }
        if fields.len() > MAX_FIELDS + 1 {
            return Err(Hl7Error::TooManyFields(id.to_string()));
        }
        segments.push(Segment { id, fields });
    }
    Ok(Message { sep, segments })
}

impl<'a> Message<'a> {
    pub fn segment(&self, id: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|s| s.id == id)
    }

    pub fn all(&self, id: &'a str) -> impl Iterator<Item = &Segment<'a>> + '_ {
        self.segments.iter().filter(move |s| s.id == id)
    }

    /// Field `n` of a segment, unescaped; `None` when absent or empty.
    pub fn field(&self, seg: &Segment<'a>, n: usize) -> Option<String> {
        seg.raw(n)
            .filter(|s| !s.is_empty())
            .map(|s| self.unescape(s))
    }

    /// Repetitions of field `n`, raw.
    pub fn repetitions(&self, seg: &Segment<'a>, n: usize) -> Vec<&'a str> {
        match seg.raw(n) {
            Some(raw) if !raw.is_empty() => raw
                .split(self.sep.repetition)
                .filter(|r| !r.is_empty())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Component `c` (1-based) of a raw field value, unescaped.
    pub fn component(&self, raw: &str, c: usize) -> Option<String> {
        raw.split(self.sep.component)
            .nth(c.checked_sub(1)?)
            .map(|s| s.split(self.sep.subcomponent).next().unwrap_or(""))
            .filter(|s| !s.is_empty())
            .map(|s| self.unescape(s))
    }

    /// The first non-empty repetition of field `n`, raw.
    pub fn first(&self, seg: &Segment<'a>, n: usize) -> Option<&'a str> {
        self.repetitions(seg, n).into_iter().next()
    }

    /// Component `c` of the first repetition of field `n`, unescaped.
    pub fn comp(&self, seg: &Segment<'a>, n: usize, c: usize) -> Option<String> {
        self.first(seg, n).and_then(|r| self.component(r, c))
    }

    /// Sub-component `sc` of component `c` of a raw field value, unescaped.
    pub fn subcomponent(&self, raw: &str, c: usize, sc: usize) -> Option<String> {
        raw.split(self.sep.component)
            .nth(c.checked_sub(1)?)?
            .split(self.sep.subcomponent)
            .nth(sc.checked_sub(1)?)
            .filter(|s| !s.is_empty())
            .map(|s| self.unescape(s))
    }

    /// Resolves the escape sequences of HL7 v2 section 2.7: \F\ \S\ \T\
    /// \R\ \E\ to their delimiters, \.br\ to a line break and \Xhh..\ to
    /// the bytes it encodes (if they are UTF-8). Highlighting (\H\ \N\),
    /// character-set switches (\C..\ \M..\), formatting commands and local
    /// escapes (\Z..\) carry no text of their own and are dropped.
    pub fn unescape(&self, s: &str) -> String {
        let Some(esc) = self.sep.escape else {
            return s.to_string();
        };
        if !s.contains(esc) {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find(esc) {
            out.push_str(&rest[..i]);
            let after = &rest[i + esc.len_utf8()..];
            match after.find(esc) {
                Some(j) => {
                    match &after[..j] {
                        "F" => out.push(self.sep.field),
                        "S" => out.push(self.sep.component),
                        "T" => out.push(self.sep.subcomponent),
                        "R" => out.push(self.sep.repetition),
                        "E" => out.push(esc),
                        ".br" => out.push('\n'),
                        seq if seq.len() > 1 && seq.starts_with('X') => {
                            if let Some(text) = decode_hex(&seq[1..]) {
                                out.push_str(&text);
                            }
                        }
                        _ => {}
                    }
                    rest = &after[j + esc.len_utf8()..];
                }
                None => {
                    // An unterminated escape: keep the text as written.
                    out.push(esc);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

impl<'a> Segment<'a> {
    pub fn raw(&self, n: usize) -> Option<&'a str> {
        self.fields.get(n).copied()
    }

    /// Numbers of the fields that hold something (1-based; for MSH, from 3).
    pub fn populated(&self) -> impl Iterator<Item = usize> + '_ {
        let from = if self.id == "MSH" { 3 } else { 1 };
        self.fields
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, f)| !f.is_empty())
            .map(|(i, _)| i)
    }
}

/// Decodes the hex digits of a \X..\ escape; `None` if they are not an
/// even number of hex digits encoding UTF-8.
fn decode_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Parses an HL7 TS/DTM (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`) into
/// epoch milliseconds. Missing parts default to their minimum; no offset
/// means UTC.
pub fn parse_ts(s: &str) -> Option<i64> {
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

#[cfg(test)]
mod tests {
    use super::*;
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
        let reps = m.repetitions(pid, 3);
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
    fn mllp_and_line_endings() {
        let framed = [
            &[0x0bu8][..],
            MSG.replace('\r', "\r\n").as_bytes(),
            &[0x1c, 0x0d],
        ]
        .concat();
        let m = parse(&framed).unwrap();
        assert_eq!(m.segments.len(), 2);
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

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = parse(&bytes) {
                for s in &m.segments {
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
}
