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

/// A parsed message: every field of every segment in one table, borrowing
/// from the input text (two allocations per message, whatever its size).
#[derive(Debug)]
pub struct Message<'a> {
    pub sep: Separators,
    heads: Vec<Head<'a>>,
    fields: Vec<&'a str>,
}

#[derive(Debug)]
struct Head<'a> {
    id: &'a str,
    start: usize,
    end: usize,
}

/// One segment of a message: a view into its field table.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m, 'a> {
    pub id: &'a str,
    /// `fields[n]` is field n (1-based; `fields[0]` is the segment id).
    fields: &'m [&'a str],
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

/// Splits at a delimiter. HL7 delimiters are almost always ASCII, and a
/// byte scan over a short value is several times cheaper than the general
/// `str::split(char)`; a byte index at an ASCII byte is a char boundary, so
/// slicing there is exact.
#[derive(Clone)]
pub enum Parts<'a> {
    Ascii { rest: Option<&'a str>, sep: u8 },
    Other(std::str::Split<'a, char>),
}

#[inline]
pub fn parts(s: &str, sep: char) -> Parts<'_> {
    if sep.is_ascii() {
        Parts::Ascii {
            rest: Some(s),
            sep: sep as u8,
        }
    } else {
        Parts::Other(s.split(sep))
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        match self {
            Parts::Ascii { rest, sep } => {
                let s = (*rest)?;
                // Most values are a few bytes: an inline scan beats
                // memchr's call and set-up; long ones (notes) use memchr.
                let bytes = s.as_bytes();
                let found = if bytes.len() < 64 {
                    bytes.iter().position(|b| b == sep)
                } else {
                    memchr::memchr(*sep, bytes)
                };
                match found {
                    Some(i) => {
                        *rest = Some(&s[i + 1..]);
                        Some(&s[..i])
                    }
                    None => {
                        *rest = None;
                        Some(s)
                    }
                }
            }
            Parts::Other(split) => split.next(),
        }
    }
}

/// Splits a message into segments and fields, line by line.
fn split_general<'a>(
    text: &'a str,
    sep: &Separators,
    heads: &mut Vec<Head<'a>>,
    fields: &mut Vec<&'a str>,
) -> Result<(), Hl7Error> {
    for_each_line(text, |n, line| {
        if line.is_empty() {
            return Ok(());
        }
        if heads.len() >= MAX_SEGMENTS {
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
        let start = fields.len();
        if id == "MSH" {
            // MSH-1 is the separator itself; MSH-2 the encoding characters.
            // A later MSH (a batch) must use the same field separator.
            let rest = line[3..]
                .strip_prefix(sep.field)
                .ok_or(Hl7Error::BadEncodingCharacters)?;
            fields.push("MSH");
            fields.push(&line[3..3 + sep.field.len_utf8()]);
            split_fields(rest, sep.field, MAX_FIELDS + 1, fields);
        } else {
            split_fields(line, sep.field, MAX_FIELDS + 2, fields);
        }
        if fields.len() - start > MAX_FIELDS + 1 {
            return Err(Hl7Error::TooManyFields(id.to_string()));
        }
        heads.push(Head {
            id,
            start,
            end: fields.len(),
        });
        Ok(())
    })
}

/// Appends up to `max` fields of a line, in one scan of the line.
fn split_fields<'a>(line: &'a str, sep: char, max: usize, out: &mut Vec<&'a str>) {
    if !sep.is_ascii() {
        out.extend(line.split(sep).take(max));
        return;
    }
    // Fields average a few bytes: a plain scan beats a vectorized search
    // whose set-up is paid once per field.
    let sep = sep as u8;
    let mut start = 0;
    let mut n = 0;
    for (i, b) in line.bytes().enumerate() {
        if b == sep {
            if n == max {
                return;
            }
            out.push(&line[start..i]);
            start = i + 1;
            n += 1;
        }
    }
    if n < max {
        out.push(&line[start..]);
    }
}

/// Calls `f` with each line; CR ends a segment, and so do LF and CRLF.
/// The common CR-only message is split with memchr.
fn for_each_line<'a>(
    text: &'a str,
    mut f: impl FnMut(usize, &'a str) -> Result<(), Hl7Error>,
) -> Result<(), Hl7Error> {
    if text.contains('\n') {
        for (n, line) in text.split(['\r', '\n']).enumerate() {
            f(n, line)?;
        }
    } else {
        for (n, line) in text.split('\r').enumerate() {
            f(n, line)?;
        }
    }
    Ok(())
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

    let mut heads = Vec::with_capacity(16);
    let mut fields: Vec<&str> = Vec::with_capacity(text.len() / 8);
    split_general(text, &sep, &mut heads, &mut fields)?;
    Ok(Message { sep, heads, fields })
}

impl<'a> Message<'a> {
    /// Every segment, in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_, 'a>> + '_ {
        self.heads.iter().map(|h| Segment {
            id: h.id,
            fields: &self.fields[h.start..h.end],
        })
    }

    pub fn segment_count(&self) -> usize {
        self.heads.len()
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<Segment<'_, 'a>> {
        self.segments().find(|s| same_id(s.id, id))
    }

    pub fn all<'s>(&'s self, id: &'s str) -> impl Iterator<Item = Segment<'s, 'a>> + 's {
        self.segments().filter(move |s| same_id(s.id, id))
    }

    /// The components of a raw value, split once for several look-ups.
    #[inline]
    pub fn comps(&self, raw: &'a str) -> Comps<'_, 'a> {
        let mut c = Comps {
            m: self,
            parts: [""; MAX_COMPONENTS],
            len: 0,
        };
        let sep = self.sep.component;
        if !sep.is_ascii() {
            for p in raw.split(sep).take(MAX_COMPONENTS) {
                c.parts[c.len] = p;
                c.len += 1;
            }
            return c;
        }
        // A direct scan: this runs for most values of every message.
        let sep = sep as u8;
        let mut start = 0;
        for (i, &b) in raw.as_bytes().iter().enumerate() {
            if b == sep {
                c.parts[c.len] = &raw[start..i];
                c.len += 1;
                start = i + 1;
                if c.len == MAX_COMPONENTS {
                    return c;
                }
            }
        }
        c.parts[c.len] = &raw[start..];
        c.len += 1;
        c
    }

    /// Field `n` of a segment, unescaped and without padding; `None` when
    /// absent or blank.
    pub fn field(&self, seg: Segment<'_, 'a>, n: usize) -> Option<String> {
        seg.raw(n)
            .map(str::trim_ascii)
            .filter(|s| !s.is_empty())
            .map(|s| self.unescape(s))
    }

    /// The non-empty repetitions of field `n`, raw.
    #[inline]
    pub fn repetitions(
        &self,
        seg: Segment<'_, 'a>,
        n: usize,
    ) -> impl Iterator<Item = &'a str> + use<'a> {
        parts(seg.raw(n).unwrap_or_default(), self.sep.repetition).filter(|r| !r.is_empty())
    }

    /// Component `c` (1-based) of a raw field value, unescaped.
    #[inline]
    pub fn component(&self, raw: &str, c: usize) -> Option<String> {
        let comp = nth_part(raw, self.sep.component, c.checked_sub(1)?)?;
        let v = nth_part(comp, self.sep.subcomponent, 0)
            .unwrap_or("")
            .trim_ascii();
        (!v.is_empty()).then(|| self.unescape(v))
    }

    /// The first non-empty repetition of field `n`, raw.
    #[inline]
    pub fn first(&self, seg: Segment<'_, 'a>, n: usize) -> Option<&'a str> {
        first_nonempty(seg.raw(n)?, self.sep.repetition)
    }

    /// Component `c` of the first repetition of field `n`, unescaped.
    #[inline]
    pub fn comp(&self, seg: Segment<'_, 'a>, n: usize, c: usize) -> Option<String> {
        if c == 1 {
            if let Some(v) = self.leading_value(seg.raw(n)?) {
                return (!v.is_empty()).then(|| self.unescape(v));
            }
        }
        self.first(seg, n).and_then(|r| self.component(r, c))
    }

    /// The first sub-component of the first component of the first
    /// repetition, in one scan, when the field does not start with a
    /// delimiter (the common case); `None` sends the caller the long way.
    #[inline]
    fn leading_value(&self, field: &'a str) -> Option<&'a str> {
        let sep = &self.sep;
        if !(sep.repetition.is_ascii() && sep.component.is_ascii() && sep.subcomponent.is_ascii()) {
            return None;
        }
        let (r, c, s) = (
            sep.repetition as u8,
            sep.component as u8,
            sep.subcomponent as u8,
        );
        let b = field.as_bytes();
        let end = b
            .iter()
            .position(|&x| x == r || x == c || x == s)
            .unwrap_or(b.len());
        // An empty first repetition is skipped by `first`: take the long way.
        (end > 0 || b.is_empty()).then(|| field[..end].trim_ascii())
    }

    /// Sub-component `sc` of component `c` of a raw field value, unescaped.
    pub fn subcomponent(&self, raw: &str, c: usize, sc: usize) -> Option<String> {
        let comp = nth_part(raw, self.sep.component, c.checked_sub(1)?)?;
        let v = nth_part(comp, self.sep.subcomponent, sc.checked_sub(1)?)?.trim_ascii();
        (!v.is_empty()).then(|| self.unescape(v))
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
        let plain = if esc.is_ascii() {
            !s.as_bytes().contains(&(esc as u8))
        } else {
            !s.contains(esc)
        };
        if plain {
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

/// The `n`th (0-based) part of `s` split at `sep`, like
/// `s.split(sep).nth(n)`; a direct byte scan for an ASCII delimiter.
#[inline]
pub fn nth_part(s: &str, sep: char, n: usize) -> Option<&str> {
    if !sep.is_ascii() {
        return s.split(sep).nth(n);
    }
    let sep = sep as u8;
    let (mut start, mut k) = (0, 0);
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b == sep {
            if k == n {
                return Some(&s[start..i]);
            }
            k += 1;
            start = i + 1;
        }
    }
    (k == n).then(|| &s[start..])
}

/// The first non-empty part of `s` split at `sep`, like
/// `s.split(sep).find(|p| !p.is_empty())`.
#[inline]
pub fn first_nonempty(s: &str, sep: char) -> Option<&str> {
    if !sep.is_ascii() {
        return s.split(sep).find(|p| !p.is_empty());
    }
    let sep = sep as u8;
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b == sep {
            if i > start {
                return Some(&s[start..i]);
            }
            start = i + 1;
        }
    }
    (s.len() > start).then(|| &s[start..])
}

/// Segment ids are three bytes: compared inline, not through memcmp.
#[inline]
fn same_id(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Components kept per value: the mapping reads none beyond XAD-9, and a
/// small array is cheap to set up for every look-up.
pub const MAX_COMPONENTS: usize = 10;

/// The components of one value (a repetition), split once.
pub struct Comps<'m, 'a> {
    m: &'m Message<'a>,
    parts: [&'a str; MAX_COMPONENTS],
    len: usize,
}

impl<'a> Comps<'_, 'a> {
    /// Component `c` (1-based), raw.
    #[inline]
    pub fn raw(&self, c: usize) -> Option<&'a str> {
        self.parts[..self.len].get(c.checked_sub(1)?).copied()
    }

    /// Component `c`: its first sub-component, unescaped, without padding.
    #[inline]
    pub fn get(&self, c: usize) -> Option<String> {
        self.sub(c, 1)
    }

    /// Sub-component `sc` of component `c`, unescaped, without padding.
    #[inline]
    pub fn sub(&self, c: usize, sc: usize) -> Option<String> {
        let v = nth_part(self.raw(c)?, self.m.sep.subcomponent, sc.checked_sub(1)?)?.trim_ascii();
        (!v.is_empty()).then(|| self.m.unescape(v))
    }
}

impl<'a> Segment<'_, 'a> {
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

    proptest! {
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
            let mut fields = Vec::new();
            split_fields(&s, sep, max, &mut fields);
            let std_max: Vec<&str> = s.split(sep).take(max).collect();
            prop_assert_eq!(fields, std_max);
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
}
