//! Building a message's field offset table: the separators from MSH-1
//! and MSH-2, then every segment's field starts, in one pass.

use super::message::{Head, Message, Separators};
use super::scan::{for_each_line, split_fields, starts_with_sep, strip_mllp};
use super::{Hl7Error, MAX_FIELDS, MAX_SEGMENTS};

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
