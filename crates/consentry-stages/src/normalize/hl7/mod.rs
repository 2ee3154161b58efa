//! A strict, allocation-bounded reader for HL7 v2.x messages.
//!
//! Separators come from MSH-1 and MSH-2; segments end at CR (LF and CRLF
//! are accepted too); MLLP framing is removed. Field numbers follow the
//! standard: for MSH, MSH-1 is the field separator itself. Errors name a
//! segment or field position, never content.

pub mod adt;

use consentry_core::envelope::Text;

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
    #[error("message is larger than 4 GiB")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: Option<char>,
    pub subcomponent: char,
}

/// A parsed message: where every field of every segment starts, in one
/// table of offsets into the input text (two allocations per message,
/// whatever its size; a field becomes a `&str` only when it is read).
#[derive(Debug)]
pub struct Message<'a> {
    pub sep: Separators,
    text: &'a str,
    /// MSH-1, the field separator, as text.
    fs: &'a str,
    heads: Vec<Head<'a>>,
    /// Per segment: the offset of each field's first byte, then the offset
    /// one separator past the segment's end (so field `j` ends where field
    /// `j + 1` starts, less a separator).
    bounds: Vec<u32>,
    /// Whether the escape character occurs after MSH-2 at all: most
    /// messages have no escapes, and then no value needs a scan for one.
    escapes: bool,
}

#[derive(Debug)]
struct Head<'a> {
    id: &'a str,
    msh: bool,
    /// This segment's run of `bounds`.
    start: usize,
    end: usize,
}

/// One segment of a message: a view into its field table.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m, 'a> {
    pub id: &'a str,
    msh: bool,
    text: &'a str,
    fs: &'a str,
    /// Starts of the pieces of the line split at the field separator (the
    /// first piece is the segment id), then the end sentinel.
    bounds: &'m [u32],
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
    bounds: &mut Vec<u32>,
) -> Result<(), Hl7Error> {
    let fs_len = sep.field.len_utf8();
    let mut fs_buf = [0u8; 4];
    let fs = sep.field.encode_utf8(&mut fs_buf).as_bytes();
    for_each_line(text, |n, at, line| {
        if line.is_empty() {
            return Ok(());
        }
        if heads.len() >= MAX_SEGMENTS {
            return Err(Hl7Error::TooManySegments);
        }
        let id = line.get(..3).unwrap_or(line);
        let after_id = &line[id.len()..];
        if id.len() != 3
            || !id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            || !(after_id.is_empty() || starts_with_sep(after_id.as_bytes(), fs))
        {
            return Err(Hl7Error::BadSegmentId(n + 1));
        }
        // MSH-1 is the separator itself, so MSH's pieces are numbered one
        // higher than other segments' fields: one fewer piece is allowed.
        // A later MSH (a batch) must use the same field separator.
        let msh = id == "MSH";
        if msh && after_id.is_empty() {
            return Err(Hl7Error::BadEncodingCharacters);
        }
        let max_pieces = if msh { MAX_FIELDS } else { MAX_FIELDS + 1 };
        let start = bounds.len();
        if !split_fields(line, at, sep.field, max_pieces, bounds) {
            return Err(Hl7Error::TooManyFields(id.to_string()));
        }
        bounds.push(at + line.len() as u32 + fs_len as u32);
        heads.push(Head {
            id,
            msh,
            start,
            end: bounds.len(),
        });
        Ok(())
    })
}

/// Whether `s` starts with the separator `sep` (its UTF-8 bytes). Runs
/// once per segment: a one-byte compare, not the `memcmp` call that
/// `str::starts_with(char)` becomes.
#[inline]
fn starts_with_sep(s: &[u8], sep: &[u8]) -> bool {
    match sep {
        [b] => s.first() == Some(b),
        _ => s.starts_with(sep),
    }
}

/// Appends the start offset (`base` + its place in `line`) of each piece
/// of `line` split at `sep`, in one scan; `false` if there are more than
/// `max` pieces (the scan stops there).
fn split_fields(line: &str, base: u32, sep: char, max: usize, out: &mut Vec<u32>) -> bool {
    out.push(base);
    let mut n = 1;
    if !sep.is_ascii() {
        for (i, _) in line.match_indices(sep) {
            if n == max {
                return false;
            }
            out.push(base + (i + sep.len_utf8()) as u32);
            n += 1;
        }
        return true;
    }
    // A word at a time: a mask of the separators in it (see `eq_mask`),
    // then one step per separator found, where a byte loop pays a compare
    // and a branch per byte (fields average a few bytes, so a vectorized
    // search with per-call set-up, like memchr's, costs more still).
    let sep = sep as u8;
    let bytes = line.as_bytes();
    let blocks = bytes.chunks_exact(BLOCK);
    let tail = blocks.remainder();
    for (k, block) in blocks.enumerate() {
        let mut hits = eq_mask(block, sep);
        while hits != 0 {
            if n == max {
                return false;
            }
            let at = k * BLOCK + (hits.trailing_zeros() / 8) as usize;
            out.push(base + at as u32 + 1);
            n += 1;
            hits &= hits - 1;
        }
    }
    let tail_start = bytes.len() - tail.len();
    for (i, &b) in tail.iter().enumerate() {
        if b == sep {
            if n == max {
                return false;
            }
            out.push(base + (tail_start + i) as u32 + 1);
            n += 1;
        }
    }
    true
}

/// Bytes per block of the separator scans: one machine word.
const BLOCK: usize = 8;

/// The high bit of each byte of `block` that equals `b`, and no other bit
/// (a word-wide compare: a handful of instructions for eight bytes, with
/// no `unsafe`); the byte's index is `trailing_zeros() / 8`.
#[inline(always)]
fn eq_mask(block: &[u8], b: u8) -> u64 {
    let mut word = [0u8; BLOCK];
    word.copy_from_slice(block);
    zero_bytes(u64::from_le_bytes(word) ^ u64::from_ne_bytes([b; BLOCK]))
}

/// The high bit of each byte of `v` that is zero, and no other bit. Exact:
/// no carry crosses a byte, so a zero byte never marks its neighbour.
#[inline(always)]
fn zero_bytes(v: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((v & LOW7) + LOW7) | v | LOW7)
}

/// Calls `f` with each line's index, offset and text; CR ends a segment,
/// and so do LF and CRLF (whose empty middle line is skipped by the
/// caller). One vectorized scan for both line ends. The caller has checked
/// that offsets fit in a `u32`.
fn for_each_line<'a>(
    text: &'a str,
    mut f: impl FnMut(usize, u32, &'a str) -> Result<(), Hl7Error>,
) -> Result<(), Hl7Error> {
    let mut start = 0;
    let mut n = 0;
    for end in memchr::memchr2_iter(b'\r', b'\n', text.as_bytes()) {
        f(n, start as u32, &text[start..end])?;
        start = end + 1;
        n += 1;
    }
    f(n, start as u32, &text[start..])
}

pub fn parse(bytes: &[u8]) -> Result<Message<'_>, Hl7Error> {
    let text = std::str::from_utf8(strip_mllp(bytes)).map_err(|_| Hl7Error::NotUtf8)?;
    let text = text.trim_start_matches(['\r', '\n']);
    if !text.starts_with("MSH") {
        return Err(Hl7Error::NoMsh);
    }
    let mut chars = text[3..].chars();
    let field = chars.next().ok_or(Hl7Error::BadEncodingCharacters)?;
    // MSH-2: two to four encoding characters (a fifth means too many).
    let mut enc_buf = ['\0'; 5];
    let mut enc_len = 0;
    for c in chars.take_while(|c| *c != field).take(5) {
        enc_buf[enc_len] = c;
        enc_len += 1;
    }
    let enc = &enc_buf[..enc_len];
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

    // Offsets are u32, and a segment's end sentinel lies one separator
    // past the text's end.
    if text.len() >= (u32::MAX - 8) as usize {
        return Err(Hl7Error::TooLarge);
    }
    let mut heads = Vec::with_capacity(16);
    let mut bounds: Vec<u32> = Vec::with_capacity(text.len() / 6);
    split_general(text, &sep, &mut heads, &mut bounds)?;
    // Where MSH-2 ends: escapes can only occur after it.
    let enc_start = 3 + field.len_utf8();
    let after_enc = text[enc_start..]
        .find(field)
        .map_or(text.len(), |i| enc_start + i);
    let escapes = sep.escape.is_some_and(|e| {
        let rest = &text[after_enc..];
        if e.is_ascii() {
            memchr::memchr(e as u8, rest.as_bytes()).is_some()
        } else {
            rest.contains(e)
        }
    });
    Ok(Message {
        sep,
        text,
        fs: &text[3..3 + field.len_utf8()],
        heads,
        bounds,
        escapes,
    })
}

impl<'a> Message<'a> {
    /// Every segment, in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_, 'a>> + '_ {
        self.heads.iter().map(|h| Segment {
            id: h.id,
            msh: h.msh,
            text: self.text,
            fs: self.fs,
            bounds: &self.bounds[h.start..h.end],
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
            raw,
            ends: [0; MAX_COMPONENTS],
            len: 0,
            subs: true,
        };
        let (sep, sub) = (self.sep.component, self.sep.subcomponent);
        if !(sep.is_ascii() && sub.is_ascii()) {
            for (i, _) in raw.match_indices(sep) {
                c.ends[c.len] = i as u32;
                c.len += 1;
                if c.len == MAX_COMPONENTS {
                    return c;
                }
            }
            c.ends[c.len] = raw.len() as u32;
            c.len += 1;
            return c;
        }
        // This runs for most values of every message: a block at a time,
        // as in `split_fields`. It also notes whether a sub-component
        // separator occurs, so most look-ups need no second scan.
        let (sep, sub) = (sep as u8, sub as u8);
        let bytes = raw.as_bytes();
        let mut subs = 0u64;
        let blocks = bytes.chunks_exact(BLOCK);
        let tail = blocks.remainder();
        for (k, block) in blocks.enumerate() {
            subs |= eq_mask(block, sub);
            let mut hits = eq_mask(block, sep);
            while hits != 0 {
                c.ends[c.len] = (k * BLOCK) as u32 + hits.trailing_zeros() / 8;
                c.len += 1;
                if c.len == MAX_COMPONENTS {
                    c.subs = true;
                    return c;
                }
                hits &= hits - 1;
            }
        }
        let tail_start = bytes.len() - tail.len();
        for (i, &b) in tail.iter().enumerate() {
            if b == sub {
                subs = 1;
            }
            if b == sep {
                c.ends[c.len] = (tail_start + i) as u32;
                c.len += 1;
                if c.len == MAX_COMPONENTS {
                    c.subs = true;
                    return c;
                }
            }
        }
        c.ends[c.len] = raw.len() as u32;
        c.len += 1;
        c.subs = subs != 0;
        c
    }

    /// Field `n` of a segment, unescaped and without padding; `None` when
    /// absent or blank.
    pub fn field(&self, seg: Segment<'_, 'a>, n: usize) -> Option<Text> {
        seg.raw(n)
            .map(str::trim_ascii)
            .filter(|s| !s.is_empty())
            .map(|s| self.text(s))
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

    /// Component `c` (1-based) of a raw value of this message, unescaped.
    #[inline]
    pub fn component(&self, raw: &'a str, c: usize) -> Option<Text> {
        let comp = nth_part(raw, self.sep.component, c.checked_sub(1)?)?;
        let v = nth_part(comp, self.sep.subcomponent, 0)
            .unwrap_or("")
            .trim_ascii();
        (!v.is_empty()).then(|| self.text(v))
    }

    /// The first non-empty repetition of field `n`, raw.
    #[inline]
    pub fn first(&self, seg: Segment<'_, 'a>, n: usize) -> Option<&'a str> {
        first_nonempty(seg.raw(n)?, self.sep.repetition)
    }

    /// Component `c` of the first repetition of field `n`, unescaped.
    #[inline]
    pub fn comp(&self, seg: Segment<'_, 'a>, n: usize, c: usize) -> Option<Text> {
        if c == 1 {
            if let Some(v) = self.leading_value(seg.raw(n)?) {
                return (!v.is_empty()).then(|| self.text(v));
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

    /// Sub-component `sc` of component `c` of a raw value of this message,
    /// unescaped.
    pub fn subcomponent(&self, raw: &'a str, c: usize, sc: usize) -> Option<Text> {
        let comp = nth_part(raw, self.sep.component, c.checked_sub(1)?)?;
        let v = nth_part(comp, self.sep.subcomponent, sc.checked_sub(1)?)?.trim_ascii();
        (!v.is_empty()).then(|| self.text(v))
    }

    /// A value of this message (a slice of its text), unescaped: a plain
    /// copy when the message has no escapes.
    #[inline]
    pub fn text(&self, value: &'a str) -> Text {
        if self.escapes {
            self.unescape(value)
        } else {
            Text::new(value)
        }
    }

    /// Resolves the escape sequences of HL7 v2 section 2.7: \F\ \S\ \T\
    /// \R\ \E\ to their delimiters, \.br\ to a line break and \Xhh..\ to
    /// the bytes it encodes (if they are UTF-8). Highlighting (\H\ \N\),
    /// character-set switches (\C..\ \M..\), formatting commands and local
    /// escapes (\Z..\) carry no text of their own and are dropped.
    pub fn unescape(&self, s: &str) -> Text {
        let Some(esc) = self.sep.escape else {
            return Text::new(s);
        };
        let plain = if esc.is_ascii() {
            !s.as_bytes().contains(&(esc as u8))
        } else {
            !s.contains(esc)
        };
        if plain {
            return Text::new(s);
        }
        let mut out = Text::with_capacity(s.len());
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
    // Sub-components are a few bytes: a byte loop is cheapest here.
    let sep = sep as u8;
    let (mut start, mut k) = (0, 0);
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b == sep {
            if k == n {
                return s.get(start..i);
            }
            k += 1;
            start = i + 1;
        }
    }
    (k == n).then(|| s.get(start..)).flatten()
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
                return s.get(start..i);
            }
            start = i + 1;
        }
    }
    (s.len() > start).then(|| s.get(start..)).flatten()
}

/// Segment ids are three bytes: compared inline, not through memcmp.
#[inline]
fn same_id(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Components kept per value: the mapping reads none beyond XAD-9, and a
/// small array is cheap to set up for every look-up.
pub const MAX_COMPONENTS: usize = 10;

/// The components of one value (a repetition), split once: where each
/// ends, as offsets (a small array, cheap to make for every look-up).
pub struct Comps<'m, 'a> {
    m: &'m Message<'a>,
    raw: &'a str,
    /// End offset of component `k + 1`; the next starts one separator on.
    ends: [u32; MAX_COMPONENTS],
    len: usize,
    /// Whether the value may hold a sub-component separator.
    subs: bool,
}

impl<'a> Comps<'_, 'a> {
    fn start(&self, k: usize) -> usize {
        match k {
            0 => 0,
            k => self.ends[k - 1] as usize + self.m.sep.component.len_utf8(),
        }
    }

    /// Component `c` (1-based), raw.
    #[inline]
    pub fn raw(&self, c: usize) -> Option<&'a str> {
        let k = c.checked_sub(1)?;
        if k >= self.len {
            return None;
        }
        self.raw.get(self.start(k)..self.ends[k] as usize)
    }

    /// Component `c`: its first sub-component, unescaped, without padding.
    #[inline]
    pub fn get(&self, c: usize) -> Option<Text> {
        if self.subs {
            return self.sub(c, 1);
        }
        let v = self.raw(c)?.trim_ascii();
        (!v.is_empty()).then(|| self.m.text(v))
    }

    /// Sub-component `sc` of component `c`, unescaped, without padding.
    #[inline]
    pub fn sub(&self, c: usize, sc: usize) -> Option<Text> {
        let v = nth_part(self.raw(c)?, self.m.sep.subcomponent, sc.checked_sub(1)?)?.trim_ascii();
        (!v.is_empty()).then(|| self.m.text(v))
    }
}

impl<'a> Segment<'_, 'a> {
    /// Piece `k` of the line split at the field separator.
    #[inline]
    fn piece(&self, k: usize) -> Option<&'a str> {
        let start = *self.bounds.get(k)? as usize;
        let next = *self.bounds.get(k + 1)? as usize;
        self.text.get(start..next.checked_sub(self.fs.len())?)
    }

    /// Field `n` as written (`raw(0)` is the segment id; for MSH, `raw(1)`
    /// is the field separator and `raw(2)` the encoding characters).
    #[inline]
    pub fn raw(&self, n: usize) -> Option<&'a str> {
        if self.msh {
            match n {
                0 => self.piece(0),
                1 => Some(self.fs),
                n => self.piece(n - 1),
            }
        } else {
            self.piece(n)
        }
    }

    /// The number of the segment's last field (present, maybe empty).
    pub fn field_count(&self) -> usize {
        let pieces = self.bounds.len().saturating_sub(1);
        if self.msh {
            pieces
        } else {
            pieces.saturating_sub(1)
        }
    }

    /// Numbers of the fields that hold something (1-based; for MSH, from 3).
    pub fn populated(&self) -> impl Iterator<Item = usize> + '_ {
        let from = if self.msh { 3 } else { 1 };
        (from..=self.field_count()).filter(|&n| self.raw(n).is_some_and(|f| !f.is_empty()))
    }
}

/// Decodes the hex digits of a \X..\ escape; `None` if they are not an
/// even number of hex digits encoding UTF-8.
fn decode_hex(hex: &str) -> Option<Text> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok().map(Text::from)
}

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
}
