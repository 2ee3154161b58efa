//! Element and field paths: the HL7 v2 and FHIR paths normalize's allowlists
//! may name, and the dotted leaf paths of an Avro record schema.

use std::collections::BTreeSet;

/// `ZPD`, `PID-40`.
pub(super) fn valid_hl7_path(p: &str) -> bool {
    let (seg, field) = match p.split_once('-') {
        Some((s, f)) => (s, Some(f)),
        None => (p, None),
    };
    seg.len() == 3
        && seg
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && seg.as_bytes()[0].is_ascii_uppercase()
        && field
            .is_none_or(|f| !f.is_empty() && f.len() <= 4 && f.bytes().all(|b| b.is_ascii_digit()))
}

/// `Patient.name.given`, `Patient.extension(http://x/y).valueCode`.
pub(super) fn valid_fhir_path(p: &str) -> bool {
    let mut parts = split_fhir_path(p).into_iter();
    let Some(root) = parts.next() else {
        return false;
    };
    let element = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    root.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && root.chars().all(|c| c.is_ascii_alphanumeric())
        && parts.all(
            |s| match s.strip_suffix(')').and_then(|s| s.split_once('(')) {
                Some((name, url)) => {
                    matches!(name, "extension" | "modifierExtension")
                        && !url.is_empty()
                        && url
                            .chars()
                            .all(|c| c.is_ascii_graphic() && c != '(' && c != ')')
                }
                None => element(s),
            },
        )
}

/// Splits a FHIR path at dots outside parentheses (extension URLs hold dots).
pub fn split_fhir_path(p: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in p.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                out.push(&p[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&p[start..]);
    out
}

/// The dotted paths of a record schema's leaf fields (`demographics.city`).
/// Arrays of records contribute their item fields (`codes.system`); arrays of
/// scalars are one path.
pub fn field_paths(schema: &apache_avro::Schema) -> BTreeSet<String> {
    use apache_avro::Schema;
    fn walk(s: &Schema, prefix: &str, out: &mut BTreeSet<String>) {
        match s {
            Schema::Record(r) => {
                for f in &r.fields {
                    let p = if prefix.is_empty() {
                        f.name.clone()
                    } else {
                        format!("{prefix}.{}", f.name)
                    };
                    walk(&f.schema, &p, out);
                }
            }
            Schema::Union(u) => {
                let records: Vec<_> = u
                    .variants()
                    .iter()
                    .filter(|v| !matches!(v, Schema::Null))
                    .collect();
                match records.as_slice() {
                    [one] => walk(one, prefix, out),
                    _ => {
                        out.insert(prefix.to_string());
                    }
                }
            }
            Schema::Array(a) if matches!(*a.items, Schema::Record(_)) => {
                walk(&a.items, prefix, out)
            }
            _ => {
                out.insert(prefix.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(schema, "", &mut out);
    out
}
