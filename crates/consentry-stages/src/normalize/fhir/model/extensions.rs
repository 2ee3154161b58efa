//! The extensions the FHIR mapping understands, by where they appear.

/// Extension URLs the mapping carries.
pub mod ext {
    pub const US_CORE_RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
    pub const US_CORE_ETHNICITY: &str =
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
    pub const US_CORE_BIRTHSEX: &str =
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex";
    pub const MOTHERS_MAIDEN_NAME: &str =
        "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName";
    pub const GEOLOCATION: &str = "http://hl7.org/fhir/StructureDefinition/geolocation";
}

/// An extension the mapping knows in a context: either one value element,
/// or sub-extensions (each with one value element).
pub(super) enum ExtDef {
    Value(&'static str, &'static str),
    Complex(&'static [(&'static str, &'static str, &'static str)]),
}

const OMB: &[(&str, &str, &str)] = &[
    ("ombCategory", "valueCoding", "Coding"),
    ("detailed", "valueCoding", "Coding"),
    ("text", "valueString", "string"),
];

pub(super) fn extension(context: &str, url: &str) -> Option<ExtDef> {
    Some(match (context, url) {
        ("Patient", ext::US_CORE_RACE) | ("Patient", ext::US_CORE_ETHNICITY) => {
            ExtDef::Complex(OMB)
        }
        ("Patient", ext::US_CORE_BIRTHSEX) => ExtDef::Value("valueCode", "code"),
        ("Patient", ext::MOTHERS_MAIDEN_NAME) => ExtDef::Value("valueString", "string"),
        ("Patient.address", ext::GEOLOCATION) => ExtDef::Complex(&[
            ("latitude", "valueDecimal", "decimal"),
            ("longitude", "valueDecimal", "decimal"),
        ]),
        _ => return None,
    })
}
