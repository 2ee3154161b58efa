//! What the FHIR mapping knows: every element of the ten resources it maps
//! (and Bundle and MessageHeader) and of the datatypes they use, with
//! cardinality, and the extensions it understands by where they appear.
//!
//! `check` walks a resource against these tables before anything is
//! mapped. An element or extension not in them is schema drift, reported
//! by path (never by value) unless `topology.yaml` allow-lists the path; a
//! value of the wrong JSON shape (an array where one value belongs, an
//! object where a primitive does) is malformed. Known elements the mapping
//! does not carry are dropped on purpose (see ARCHITECTURE.md).
//!
//! The tables are `elements` (a data table) and `extensions`; this file is
//! the checker.

mod elements;
mod extensions;
#[cfg(test)]
mod tests;

pub use elements::{CARE_CONTEXT_RESOURCES, EVENT_RESOURCES};
pub use extensions::ext;

use elements::{elements, kind, Kind, PRIMITIVES};
use extensions::{extension, ExtDef};

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Why a resource cannot be mapped as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Something the mapping does not know, at this path.
    Drift(String),
    /// A value of the wrong shape; the detail names the path.
    Malformed(String),
    /// A resource type the mapping does not handle (inside a Bundle).
    Unsupported(String),
}

/// Checks a resource (or a Bundle, and every resource in it) against the
/// tables, with `allow` the topology's allow-listed extra paths.
pub fn check(v: &Value, allow: &BTreeSet<String>) -> Result<(), Problem> {
    Checker { allow }.resource(v, None)
}

struct Checker<'a> {
    allow: &'a BTreeSet<String>,
}

/// Element names are camelCase identifiers. Anything else in a key is
/// reported as `<invalid-name>`, so a path never carries arbitrary text.
fn safe_name(k: &str) -> &str {
    let ok = k.len() <= 64
        && k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        k
    } else {
        "<invalid-name>"
    }
}

/// Extension URLs are reported as written when they look like URLs (they
/// name a definition, not a person); otherwise as `<invalid-url>`.
fn safe_url(u: &str) -> &str {
    let ok = !u.is_empty()
        && u.len() <= 200
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":/._-#~%".contains(c));
    if ok {
        u
    } else {
        "<invalid-url>"
    }
}

impl Checker<'_> {
    /// True if `path` or one of its ancestors is allow-listed.
    fn allowed(&self, path: &str) -> bool {
        if self.allow.is_empty() {
            return false;
        }
        let parts = consentry_core::topology::split_fhir_path(path);
        (1..=parts.len()).any(|n| self.allow.contains(&parts[..n].join(".")))
    }

    fn drift(&self, path: String) -> Result<(), Problem> {
        if self.allowed(&path) {
            Ok(())
        } else {
            Err(Problem::Drift(path))
        }
    }

    /// A resource: `resourceType` picks its table. `within` is the path of
    /// the element holding it (a Bundle entry), for messages.
    fn resource(&self, v: &Value, within: Option<&str>) -> Result<(), Problem> {
        let at = within.unwrap_or("resource");
        let Value::Object(obj) = v else {
            return Err(Problem::Malformed(format!("{at}: not a JSON object")));
        };
        let Some(rt) = obj.get("resourceType").and_then(Value::as_str) else {
            return Err(Problem::Malformed(format!("{at}.resourceType")));
        };
        if CARE_CONTEXT_RESOURCES.contains(&rt) {
            return Ok(());
        }
        let known = EVENT_RESOURCES.contains(&rt)
            || (rt == "Bundle" && within.is_none())
            || (rt == "MessageHeader" && within.is_some());
        if !known {
            // A site may send other resources in its Bundles on purpose
            // (allow-list the type's name); they are then skipped whole.
            let name = if rt.chars().all(|c| c.is_ascii_alphanumeric()) {
                rt
            } else {
                "<invalid-name>"
            };
            return if within.is_some() && self.allowed(name) {
                Ok(())
            } else {
                Err(Problem::Unsupported(format!("{at}.resourceType")))
            };
        }
        // Paths start at the resource type wherever the resource sits, so
        // one allow-list entry covers it standalone and inside a Bundle.
        self.object(obj, rt, rt)
    }

    fn object(&self, obj: &Map<String, Value>, ty: &str, path: &str) -> Result<(), Problem> {
        let elems = elements(ty).unwrap_or(&[]);
        let k = kind(ty);
        for (key, value) in obj {
            let key = key.as_str();
            match key {
                "resourceType" if matches!(k, Kind::Resource | Kind::DomainResource) => {}
                "id" => self.value(value, "string", false, &format!("{path}.id"))?,
                "meta" | "implicitRules" | "language"
                    if matches!(k, Kind::Resource | Kind::DomainResource) =>
                {
                    let ty = match key {
                        "meta" => "Meta",
                        "implicitRules" => "uri",
                        _ => "code",
                    };
                    self.value(value, ty, false, &format!("{path}.{key}"))?;
                }
                "text" if k == Kind::DomainResource => {
                    self.value(value, "Narrative", false, &format!("{path}.text"))?
                }
                "extension" if k != Kind::Resource => self.extensions(value, path)?,
                "modifierExtension" if matches!(k, Kind::DomainResource | Kind::Backbone) => {
                    // A modifier changes what the element means: never ignored.
                    self.modifier_extensions(value, path)?
                }
                _ => {
                    if let Some(el) = elems.iter().find(|el| el.name == key) {
                        self.value(value, el.ty, el.many, &format!("{path}.{key}"))?;
                    } else if let Some(base) = key.strip_prefix('_') {
                        // A primitive's id and extensions (`_birthDate`).
                        let p = format!("{path}._{}", safe_name(base).trim_start_matches('_'));
                        match elems.iter().find(|el| el.name == base) {
                            Some(el) if PRIMITIVES.contains(&el.ty) => {
                                self.value(value, "Element", el.many, &p)?
                            }
                            _ => self.drift(p)?,
                        }
                    } else {
                        self.drift(format!("{path}.{}", safe_name(key)))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn value(&self, v: &Value, ty: &str, many: bool, path: &str) -> Result<(), Problem> {
        if self.allowed(path) {
            return Ok(());
        }
        match (v, many) {
            (Value::Array(items), true) => {
                for item in items {
                    // Arrays of primitives may hold null where only `_x` has content.
                    if !(item.is_null() && PRIMITIVES.contains(&ty)) {
                        self.single(item, ty, path)?;
                    }
                }
                Ok(())
            }
            (Value::Array(_), false) => Err(Problem::Malformed(format!(
                "{path}: an array where one value belongs"
            ))),
            (_, true) if ty == "Element" => self.single(v, ty, path),
            (_, true) => Err(Problem::Malformed(format!(
                "{path}: one value where an array belongs"
            ))),
            (v, false) => self.single(v, ty, path),
        }
    }

    fn single(&self, v: &Value, ty: &str, path: &str) -> Result<(), Problem> {
        if PRIMITIVES.contains(&ty) {
            return match v {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
                _ => Err(Problem::Malformed(format!("{path}: not a primitive value"))),
            };
        }
        if ty == "Resource" {
            return self.resource(v, Some(path));
        }
        match v {
            Value::Object(obj) => self.object(obj, ty, path),
            _ => Err(Problem::Malformed(format!("{path}: not a JSON object"))),
        }
    }

    fn ext_list<'v>(&self, v: &'v Value, path: &str) -> Result<&'v [Value], Problem> {
        match v {
            Value::Array(a) => Ok(a),
            _ => Err(Problem::Malformed(format!(
                "{path}: extension is not an array"
            ))),
        }
    }

    fn ext_url<'v>(&self, x: &'v Value, path: &str) -> Result<&'v str, Problem> {
        x.get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| Problem::Malformed(format!("{path}.extension.url")))
    }

    fn extensions(&self, v: &Value, context: &str) -> Result<(), Problem> {
        // The extension's context is its element path without the resource
        // type's own backbone naming: `Patient.address`.
        for x in self.ext_list(v, context)? {
            let url = self.ext_url(x, context)?;
            let p = format!("{context}.extension({})", safe_url(url));
            match extension(context, url) {
                None => self.drift(p)?,
                Some(def) => self.known_extension(x, &def, &p)?,
            }
        }
        Ok(())
    }

    fn modifier_extensions(&self, v: &Value, context: &str) -> Result<(), Problem> {
        for x in self.ext_list(v, context)? {
            let url = self.ext_url(x, context)?;
            self.drift(format!("{context}.modifierExtension({})", safe_url(url)))?;
        }
        Ok(())
    }

    fn known_extension(&self, x: &Value, def: &ExtDef, path: &str) -> Result<(), Problem> {
        let Value::Object(obj) = x else {
            return Err(Problem::Malformed(format!("{path}: not a JSON object")));
        };
        for (k, v) in obj {
            match (k.as_str(), def) {
                ("url", _) | ("id", _) => {}
                (key, ExtDef::Value(name, ty)) if key == *name => self.value(v, ty, false, path)?,
                ("extension", ExtDef::Complex(subs)) => {
                    for sub in self.ext_list(v, path)? {
                        let url = self.ext_url(sub, path)?;
                        let sp = format!("{path}.extension({})", safe_url(url));
                        let Some((_, value_key, ty)) = subs.iter().find(|(u, _, _)| *u == url)
                        else {
                            self.drift(sp)?;
                            continue;
                        };
                        let Value::Object(so) = sub else {
                            return Err(Problem::Malformed(format!("{sp}: not a JSON object")));
                        };
                        for (sk, sv) in so {
                            match sk.as_str() {
                                "url" | "id" => {}
                                k if k == *value_key => self.value(sv, ty, false, &sp)?,
                                k => self.drift(format!("{sp}.{}", safe_name(k)))?,
                            }
                        }
                    }
                }
                (key, _) => self.drift(format!("{path}.{}", safe_name(key)))?,
            }
        }
        Ok(())
    }
}
