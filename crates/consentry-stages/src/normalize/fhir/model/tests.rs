//! The checker against known, drifting and malformed resources.

use super::*;
use serde_json::json;

fn run(v: Value) -> Result<(), Problem> {
    check(&v, &BTreeSet::new())
}

#[test]
fn every_named_type_has_a_table() {
    fn walk(ty: &str, seen: &mut BTreeSet<String>) {
        if PRIMITIVES.contains(&ty) || ty == "Resource" || !seen.insert(ty.to_string()) {
            return;
        }
        let elems = elements(ty).unwrap_or_else(|| panic!("no table for {ty}"));
        for el in elems {
            walk(el.ty, seen);
        }
    }
    let mut seen = BTreeSet::new();
    for rt in EVENT_RESOURCES
        .iter()
        .chain(&["Bundle", "MessageHeader", "Element"])
    {
        walk(rt, &mut seen);
    }
    assert!(seen.len() > 50, "{}", seen.len());
}

#[test]
fn unknown_elements_and_extensions_are_drift_with_their_path() {
    let base = json!({"resourceType": "Patient", "id": "p", "gender": "female"});
    assert_eq!(run(base.clone()), Ok(()));
    let mut v = base.clone();
    v["favouriteColour"] = json!("blue");
    assert_eq!(
        run(v),
        Err(Problem::Drift("Patient.favouriteColour".into()))
    );
    let mut v = base.clone();
    v["name"] = json!([{"family": "X", "nickname": "Y"}]);
    assert_eq!(run(v), Err(Problem::Drift("Patient.name.nickname".into())));
    let mut v = base.clone();
    v["extension"] = json!([{"url": "http://example.org/vip", "valueBoolean": true}]);
    assert_eq!(
        run(v),
        Err(Problem::Drift(
            "Patient.extension(http://example.org/vip)".into()
        ))
    );
    let mut v = base.clone();
    v["extension"] = json!([{"url": ext::US_CORE_RACE, "extension": [
        {"url": "ombCategory", "valueCoding": {"code": "2106-3"}},
        {"url": "sparkle", "valueString": "z"}]}]);
    assert_eq!(
        run(v),
        Err(Problem::Drift(format!(
            "Patient.extension({}).extension(sparkle)",
            ext::US_CORE_RACE
        )))
    );
    let mut v = base.clone();
    v["modifierExtension"] = json!([{"url": "http://example.org/m", "valueBoolean": true}]);
    assert!(matches!(run(v), Err(Problem::Drift(p)) if p.contains("modifierExtension")));
    let mut v = base.clone();
    v["_gender"] = json!({"extension": [{"url": "http://example.org/x", "valueCode": "y"}]});
    assert_eq!(
        run(v),
        Err(Problem::Drift(
            "Patient._gender.extension(http://example.org/x)".into()
        ))
    );
    // A key that is not an element name never reaches the path as written.
    let mut v = base.clone();
    v["Jane Doe"] = json!(1);
    assert_eq!(run(v), Err(Problem::Drift("Patient.<invalid-name>".into())));
    let mut v = base;
    v["extension"] = json!([{"url": "Jane Doe 555-0100", "valueString": "x"}]);
    assert_eq!(
        run(v),
        Err(Problem::Drift("Patient.extension(<invalid-url>)".into()))
    );
}

#[test]
fn wrong_shapes_are_malformed() {
    let v = json!({"resourceType": "Patient", "gender": ["female"]});
    assert!(matches!(run(v), Err(Problem::Malformed(p)) if p.starts_with("Patient.gender")));
    let v = json!({"resourceType": "Patient", "name": {"family": "X"}});
    assert!(matches!(run(v), Err(Problem::Malformed(p)) if p.starts_with("Patient.name")));
    let v = json!({"resourceType": "Patient", "birthDate": {"x": 1}});
    assert!(matches!(run(v), Err(Problem::Malformed(_))));
    assert!(matches!(run(json!([1])), Err(Problem::Malformed(_))));
}

#[test]
fn allow_list_accepts_a_path_and_everything_under_it() {
    let allow: BTreeSet<String> = [
        "Patient.extension(http://example.org/vip)".to_string(),
        "Encounter.length".to_string(),
        "Patient.favouriteColour".to_string(),
    ]
    .into();
    let v = json!({"resourceType": "Patient",
        "extension": [{"url": "http://example.org/vip", "valueBoolean": true}],
        "favouriteColour": {"deep": [1, 2]}});
    assert_eq!(check(&v, &allow), Ok(()));
}

#[test]
fn bundles_check_every_entry_and_nested_provisions() {
    let v = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p"}},
        {"resource": {"resourceType": "Consent", "provision": {"type": "permit",
            "provision": [{"type": "deny", "class": [{"code": "x"}], "glitter": 1}]}}}]});
    assert_eq!(
        run(v),
        Err(Problem::Drift("Consent.provision.provision.glitter".into()))
    );
    let v = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Immunization", "status": "completed"}}]});
    assert_eq!(
        run(v.clone()),
        Err(Problem::Unsupported(
            "Bundle.entry.resource.resourceType".into()
        ))
    );
    assert_eq!(check(&v, &["Immunization".to_string()].into()), Ok(()));
    let nested =
        json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle"}}]});
    assert!(matches!(run(nested), Err(Problem::Unsupported(_))));
}
