//! A parsed message and the views into it: segments, fields,
//! repetitions, components and sub-components, read from the offset table
//! and unescaped only when a value is asked for.

use super::scan::{eq_mask, first_nonempty, nth_part, parts, BLOCK};
use consentry_core::envelope::Text;

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
    pub(super) text: &'a str,
    /// MSH-1, the field separator, as text.
    pub(super) fs: &'a str,
    pub(super) heads: Vec<Head<'a>>,
    /// Per segment: the offset of each field's first byte, then the offset
    /// one separator past the segment's end (so field `j` ends where field
    /// `j + 1` starts, less a separator).
    pub(super) bounds: Vec<u32>,
    /// Whether the escape character occurs after MSH-2 at all: most
    /// messages have no escapes, and then no value needs a scan for one.
    pub(super) escapes: bool,
}

#[derive(Debug)]
pub(super) struct Head<'a> {
    pub(super) id: &'a str,
    pub(super) msh: bool,
    /// This segment's run of `bounds`.
    pub(super) start: usize,
    pub(super) end: usize,
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
