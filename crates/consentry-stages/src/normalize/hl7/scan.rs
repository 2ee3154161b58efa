//! The byte scans under the reader: MLLP framing, line ends, splitting a
//! line or a value at a separator. HL7 delimiters are almost always ASCII,
//! so each scan has a byte path (a word at a time where it pays) beside
//! the general `char` one.

use super::Hl7Error;

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

/// Whether `s` starts with the separator `sep` (its UTF-8 bytes). Runs
/// once per segment: a one-byte compare, not the `memcmp` call that
/// `str::starts_with(char)` becomes.
#[inline]
pub(super) fn starts_with_sep(s: &[u8], sep: &[u8]) -> bool {
    match sep {
        [b] => s.first() == Some(b),
        _ => s.starts_with(sep),
    }
}

/// Appends the start offset (`base` + its place in `line`) of each piece
/// of `line` split at `sep`, in one scan; `false` if there are more than
/// `max` pieces (the scan stops there).
pub(super) fn split_fields(
    line: &str,
    base: u32,
    sep: char,
    max: usize,
    out: &mut Vec<u32>,
) -> bool {
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
pub(super) const BLOCK: usize = 8;

/// The high bit of each byte of `block` that equals `b`, and no other bit
/// (a word-wide compare: a handful of instructions for eight bytes, with
/// no `unsafe`); the byte's index is `trailing_zeros() / 8`.
#[inline(always)]
pub(super) fn eq_mask(block: &[u8], b: u8) -> u64 {
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
pub(super) fn for_each_line<'a>(
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
