//! FHIR datatypes into envelope values: a Patient's demographics,
//! contacts and links, identifiers, codings, numbers, and paths into JSON.

use super::references::strip_base;
use super::US_SSN;
use compact_str::ToCompactString;
use consentry_core::envelope::{
    identifier_kind, Coding, Contact, Demographics, Identifier, Link, Text,
};
use serde_json::Value;

use super::model::ext;
use crate::normalize::{canonical_country, Ctx};

pub(super) fn patient_demographics(r: &Value) -> Demographics {
    let names = arr(r, "name");
    let name = ["official", "usual"]
        .iter()
        .find_map(|u| names.iter().find(|n| str_at(n, &["use"]) == Some(u)))
        .or_else(|| names.first());
    let given: Vec<&str> = name
        .map(|n| arr(n, "given").iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let addresses = arr(r, "address");
    let address = addresses
        .iter()
        .find(|a| str_at(a, &["use"]) == Some("home"))
        .or_else(|| addresses.first());
    let telecom = arr(r, "telecom");
    let contact_point = |system: &str| {
        telecom
            .iter()
            .find(|t| str_at(t, &["system"]) == Some(system))
            .and_then(|t| str_at(t, &["value"]))
            .map(Text::from)
    };
    let extension = |url: &str| {
        arr(r, "extension")
            .iter()
            .find(|x| str_at(x, &["url"]) == Some(url))
    };
    let omb_codes = |url: &str| -> Vec<Text> {
        extension(url)
            .map(|x| {
                arr(x, "extension")
                    .iter()
                    .filter(|s| matches!(str_at(s, &["url"]), Some("ombCategory" | "detailed")))
                    .filter_map(|s| str_at(s, &["valueCoding", "code"]).map(Text::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let geo = address.and_then(|a| {
        arr(a, "extension")
            .iter()
            .find(|x| str_at(x, &["url"]) == Some(ext::GEOLOCATION))
    });
    let geo_part = |which: &str| {
        geo.and_then(|g| {
            arr(g, "extension")
                .iter()
                .find(|s| str_at(s, &["url"]) == Some(which))
                .and_then(|s| s.get("valueDecimal"))
                .map(number_text)
        })
    };
    let communications = arr(r, "communication");
    let language = communications
        .iter()
        .find(|c| c.get("preferred").and_then(Value::as_bool) == Some(true))
        .or_else(|| communications.first())
        .and_then(|c| first_code(c.get("language")));
    let deceased_date = str_at(r, &["deceasedDateTime"]).map(|d| d.chars().take(10).collect());
    Demographics {
        family_name: name.and_then(|n| str_at(n, &["family"])).map(Text::from),
        given_name: given.first().map(|g| Text::from(*g)),
        middle_name: (given.len() > 1).then(|| given[1..].join(" ").into()),
        name_suffix: name
            .and_then(|n| arr(n, "suffix").first())
            .and_then(Value::as_str)
            .map(Text::from),
        mothers_maiden_name: extension(ext::MOTHERS_MAIDEN_NAME)
            .and_then(|x| str_at(x, &["valueString"]))
            .map(Text::from),
        birth_date: str_at(r, &["birthDate"]).map(Text::from),
        sex: str_at(r, &["gender"]).map(|g| Text::const_new(crate::normalize::sex_from_fhir(g))),
        birth_sex: extension(ext::US_CORE_BIRTHSEX)
            .and_then(|x| str_at(x, &["valueCode"]))
            .map(Text::from),
        race: omb_codes(ext::US_CORE_RACE),
        ethnicity: omb_codes(ext::US_CORE_ETHNICITY),
        marital_status: first_code(r.get("maritalStatus")).map(Text::from),
        language: language.map(Text::from),
        religion: None,
        deceased: r
            .get("deceasedBoolean")
            .and_then(Value::as_bool)
            .or(deceased_date.as_ref().map(|_| true)),
        deceased_date,
        address_line: address.and_then(|a| {
            let lines: Vec<&str> = arr(a, "line").iter().filter_map(Value::as_str).collect();
            (!lines.is_empty()).then(|| lines.join(", ").into())
        }),
        city: address.and_then(|a| str_at(a, &["city"])).map(Text::from),
        county: address
            .and_then(|a| str_at(a, &["district"]))
            .map(Text::from),
        state: address.and_then(|a| str_at(a, &["state"])).map(Text::from),
        postal_code: address
            .and_then(|a| str_at(a, &["postalCode"]))
            .map(Text::from),
        country: address
            .and_then(|a| str_at(a, &["country"]))
            .map(canonical_country),
        latitude: geo_part("latitude"),
        longitude: geo_part("longitude"),
        phone: contact_point("phone"),
        fax: contact_point("fax"),
        email: contact_point("email"),
        url: contact_point("url"),
        age: None,
    }
}

pub(super) fn contact(c: &Value) -> Contact {
    Contact {
        relationship: arr(c, "relationship")
            .first()
            .and_then(|r| first_code(Some(r)))
            .map(Text::from),
        family_name: str_at(c, &["name", "family"]).map(Text::from),
        given_name: c
            .get("name")
            .and_then(|n| arr(n, "given").first())
            .and_then(Value::as_str)
            .map(Text::from),
        phone: arr(c, "telecom")
            .iter()
            .find(|t| str_at(t, &["system"]) == Some("phone"))
            .and_then(|t| str_at(t, &["value"]))
            .map(Text::from),
    }
}

pub(super) fn link(l: &Value) -> Option<Link> {
    let relation = Text::from(str_at(l, &["type"])?);
    let other = l.get("other")?;
    if let Some(id) = other.get("identifier").and_then(identifier) {
        return Some(Link {
            relation,
            system: id.system,
            value: id.value,
        });
    }
    Some(Link {
        relation,
        system: "reference".into(),
        value: strip_base(str_at(other, &["reference"])?).into(),
    })
}

/// An identifier with a system and a value; its kind from its type code.
pub(super) fn identifier(i: &Value) -> Option<Identifier> {
    let system = Text::from(str_at(i, &["system"])?);
    let value = Text::from(str_at(i, &["value"])?);
    let kind = match i.pointer("/type/coding/0/code").and_then(Value::as_str) {
        Some(code) => identifier_kind::from_type_code(code),
        None if system == US_SSN => identifier_kind::SSN,
        None => identifier_kind::OTHER,
    };
    Some(Identifier {
        system,
        value,
        kind: kind.into(),
        authority: str_at(i, &["assigner", "display"]).map(Text::from),
    })
}

/// The identifiers from systems `topology.yaml` maps: the subject's identity.
pub(super) fn mapped_ids(ids: &[Identifier], ctx: &Ctx<'_>) -> Vec<Identifier> {
    ids.iter()
        .filter(|i| ctx.mapped.contains(i.system.as_str()))
        .cloned()
        .collect()
}

/// One Coding per coding of each CodeableConcept.
pub(super) fn codings(concepts: &[Value], kind: &str) -> Vec<Coding> {
    concepts
        .iter()
        .flat_map(|cc| arr(cc, "coding"))
        .filter_map(|c| {
            Some(Coding {
                system: str_at(c, &["system"])?.into(),
                code: str_at(c, &["code"])?.into(),
                kind: Some(kind.into()),
                display: str_at(c, &["display"]).map(Text::from),
                ..Default::default()
            })
        })
        .collect()
}

pub(super) fn first_code(cc: Option<&Value>) -> Option<&str> {
    let cc = cc?;
    // A Coding has `code` directly; a CodeableConcept has `coding`.
    str_at(cc, &["code"]).or_else(|| arr(cc, "coding").iter().find_map(|c| str_at(c, &["code"])))
}

pub(super) fn number_text(v: &Value) -> Text {
    match v {
        Value::Number(n) => n.to_compact_string(),
        Value::String(s) => s.as_str().into(),
        other => other.to_compact_string(),
    }
}

pub fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

pub(super) fn arr<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}
