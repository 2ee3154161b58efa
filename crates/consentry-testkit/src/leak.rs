//! Scanning what a reader gets for identifiers that should not be there:
//! every byte of a record, random-looking ids masked, allowed values
//! blanked before forbidden ones are searched.

use consentry_runtime::rdkafka::message::{Headers, OwnedMessage};
use consentry_runtime::rdkafka::Message;

/// Every byte of a record a reader gets: key, header values, payload.
pub fn record_bytes(m: &OwnedMessage) -> Vec<u8> {
    let mut b = m.key().unwrap_or_default().to_vec();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            b.extend_from_slice(x.value.unwrap_or_default());
        }
    }
    b.extend_from_slice(m.payload().unwrap_or_default());
    b
}

/// Zeroes every run of 24 or more id characters (`[A-Za-z0-9:_-]`): keyed
/// ids (UUID layout, `ik2-…`, `ev1-…`) and tokens (`tok:…`) are random-
/// looking, and a 5-digit ZIP or a short name turns up in them by chance.
/// No identifier the synthetic feeds carry is that long a run.
pub fn mask_ids(bytes: &mut [u8]) {
    let id = |b: u8| b.is_ascii_alphanumeric() || b":_-".contains(&b);
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && id(bytes[i]) {
            i += 1;
        }
        if i - start >= 24 {
            bytes[start..i].fill(0);
        }
        i = i.max(start + 1);
    }
}

/// The kind of the first `forbidden` value found in `bytes`, after the
/// `allowed` values (a profile may keep them) are blanked out: a family name
/// inside a city the profile keeps ("Lewis" in "Lewistown") is no leak.
pub fn find_leak<'a>(
    bytes: &[u8],
    forbidden: &'a [(&'static str, String)],
    allowed: &[(&'static str, String)],
) -> Option<(&'static str, &'a str)> {
    let mut masked = bytes.to_vec();
    for (_, a) in allowed {
        let a = a.as_bytes();
        if a.is_empty() {
            continue;
        }
        let mut i = 0;
        while i + a.len() <= masked.len() {
            if &masked[i..i + a.len()] == a {
                masked[i..i + a.len()].fill(0);
                i += a.len();
            } else {
                i += 1;
            }
        }
    }
    forbidden
        .iter()
        .find(|(_, v)| !v.is_empty() && masked.windows(v.len()).any(|w| w == v.as_bytes()))
        .map(|(k, v)| (*k, v.as_str()))
}
