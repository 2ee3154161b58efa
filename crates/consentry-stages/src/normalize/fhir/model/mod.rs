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

use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// An element: its name, its type (a datatype, a backbone element or a
/// primitive) and whether it repeats.
pub struct E {
    pub name: &'static str,
    pub ty: &'static str,
    pub many: bool,
}

const fn e(name: &'static str, ty: &'static str) -> E {
    E {
        name,
        ty,
        many: false,
    }
}

const fn m(name: &'static str, ty: &'static str) -> E {
    E {
        name,
        ty,
        many: true,
    }
}

/// The resource types normalize maps to events.
pub const EVENT_RESOURCES: [&str; 10] = [
    "Patient",
    "Encounter",
    "Appointment",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "AllergyIntolerance",
    "MedicationRequest",
    "Consent",
    "Provenance",
];

/// Resources about the care around a patient, not about the patient:
/// who treated (Practitioner, PractitionerRole), where (Location,
/// Organization), with what (Medication, the product). US Core Bundles
/// carry them beside the patient's resources for their references to
/// resolve. Nothing of them is carried, so they are neither mapped nor
/// checked: in a Bundle they travel along, and alone they are
/// acknowledged (audited, `skip`) without output.
pub const CARE_CONTEXT_RESOURCES: [&str; 5] = [
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
];

const PRIMITIVES: [&str; 20] = [
    "string",
    "code",
    "uri",
    "url",
    "canonical",
    "id",
    "oid",
    "uuid",
    "markdown",
    "xhtml",
    "boolean",
    "decimal",
    "integer",
    "positiveInt",
    "unsignedInt",
    "date",
    "dateTime",
    "instant",
    "time",
    "base64Binary",
];

/// How an object's type is built, which decides its implicit elements.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Bundle: id, meta, implicitRules, language.
    Resource,
    /// The others: also text, extension, modifierExtension.
    DomainResource,
    /// Backbone elements: id, extension, modifierExtension.
    Backbone,
    /// Datatypes: id, extension.
    Datatype,
}

fn kind(ty: &str) -> Kind {
    match ty {
        "Bundle" => Kind::Resource,
        t if EVENT_RESOURCES.contains(&t) || t == "MessageHeader" => Kind::DomainResource,
        "Coding" | "CodeableConcept" | "Identifier" | "Reference" | "Period" | "HumanName"
        | "ContactPoint" | "Address" | "Meta" | "Narrative" | "Annotation" | "Quantity"
        | "Attachment" | "Range" | "Ratio" | "SampledData" | "Signature" | "Element" => {
            Kind::Datatype
        }
        _ => Kind::Backbone,
    }
}

/// A table as a `const`, so it lives for `'static`.
macro_rules! table {
    ($($x:expr),* $(,)?) => {{
        const T: &[E] = &[$($x),*];
        T
    }};
}

/// The elements of a type, beyond the implicit ones of its kind.
fn elements(ty: &str) -> Option<&'static [E]> {
    Some(match ty {
        // Datatypes.
        "Element" => table![],
        "Coding" => table![
            e("system", "uri"),
            e("version", "string"),
            e("code", "code"),
            e("display", "string"),
            e("userSelected", "boolean"),
        ],
        "CodeableConcept" => table![m("coding", "Coding"), e("text", "string")],
        "Identifier" => table![
            e("use", "code"),
            e("type", "CodeableConcept"),
            e("system", "uri"),
            e("value", "string"),
            e("period", "Period"),
            e("assigner", "Reference"),
        ],
        "Reference" => table![
            e("reference", "string"),
            e("type", "uri"),
            e("identifier", "Identifier"),
            e("display", "string"),
        ],
        "Period" => table![e("start", "dateTime"), e("end", "dateTime")],
        "HumanName" => table![
            e("use", "code"),
            e("text", "string"),
            e("family", "string"),
            m("given", "string"),
            m("prefix", "string"),
            m("suffix", "string"),
            e("period", "Period"),
        ],
        "ContactPoint" => table![
            e("system", "code"),
            e("value", "string"),
            e("use", "code"),
            e("rank", "positiveInt"),
            e("period", "Period"),
        ],
        "Address" => table![
            e("use", "code"),
            e("type", "code"),
            e("text", "string"),
            m("line", "string"),
            e("city", "string"),
            e("district", "string"),
            e("state", "string"),
            e("postalCode", "string"),
            e("country", "string"),
            e("period", "Period"),
        ],
        "Meta" => table![
            e("versionId", "id"),
            e("lastUpdated", "instant"),
            e("source", "uri"),
            m("profile", "canonical"),
            m("security", "Coding"),
            m("tag", "Coding"),
        ],
        "Narrative" => table![e("status", "code"), e("div", "xhtml")],
        "Annotation" => table![
            e("authorReference", "Reference"),
            e("authorString", "string"),
            e("time", "dateTime"),
            e("text", "markdown"),
        ],
        "Quantity" => table![
            e("value", "decimal"),
            e("comparator", "code"),
            e("unit", "string"),
            e("system", "uri"),
            e("code", "code"),
        ],
        "Attachment" => table![
            e("contentType", "code"),
            e("language", "code"),
            e("data", "base64Binary"),
            e("url", "url"),
            e("size", "unsignedInt"),
            e("hash", "base64Binary"),
            e("title", "string"),
            e("creation", "dateTime"),
        ],
        "Range" => table![e("low", "Quantity"), e("high", "Quantity")],
        "Ratio" => table![e("numerator", "Quantity"), e("denominator", "Quantity")],
        "SampledData" => table![
            e("origin", "Quantity"),
            e("period", "decimal"),
            e("factor", "decimal"),
            e("lowerLimit", "decimal"),
            e("upperLimit", "decimal"),
            e("dimensions", "positiveInt"),
            e("data", "string"),
        ],
        "Signature" => table![
            m("type", "Coding"),
            e("when", "instant"),
            e("who", "Reference"),
            e("onBehalfOf", "Reference"),
            e("targetFormat", "code"),
            e("sigFormat", "code"),
            e("data", "base64Binary"),
        ],
        "Timing" => table![
            m("event", "dateTime"),
            e("repeat", "TimingRepeat"),
            e("code", "CodeableConcept"),
        ],
        "TimingRepeat" => table![
            e("boundsDuration", "Quantity"),
            e("boundsRange", "Range"),
            e("boundsPeriod", "Period"),
            e("count", "positiveInt"),
            e("countMax", "positiveInt"),
            e("duration", "decimal"),
            e("durationMax", "decimal"),
            e("durationUnit", "code"),
            e("frequency", "positiveInt"),
            e("frequencyMax", "positiveInt"),
            e("period", "decimal"),
            e("periodMax", "decimal"),
            e("periodUnit", "code"),
            m("dayOfWeek", "code"),
            m("timeOfDay", "time"),
            m("when", "code"),
            e("offset", "unsignedInt"),
        ],
        "Dosage" => table![
            e("sequence", "integer"),
            e("text", "string"),
            m("additionalInstruction", "CodeableConcept"),
            e("patientInstruction", "string"),
            e("timing", "Timing"),
            e("asNeededBoolean", "boolean"),
            e("asNeededCodeableConcept", "CodeableConcept"),
            e("site", "CodeableConcept"),
            e("route", "CodeableConcept"),
            e("method", "CodeableConcept"),
            m("doseAndRate", "DosageDoseAndRate"),
            e("maxDosePerPeriod", "Ratio"),
            e("maxDosePerAdministration", "Quantity"),
            e("maxDosePerLifetime", "Quantity"),
        ],
        "DosageDoseAndRate" => table![
            e("type", "CodeableConcept"),
            e("doseRange", "Range"),
            e("doseQuantity", "Quantity"),
            e("rateRatio", "Ratio"),
            e("rateRange", "Range"),
            e("rateQuantity", "Quantity"),
        ],

        // Patient.
        "Patient" => table![
            m("identifier", "Identifier"),
            e("active", "boolean"),
            m("name", "HumanName"),
            m("telecom", "ContactPoint"),
            e("gender", "code"),
            e("birthDate", "date"),
            e("deceasedBoolean", "boolean"),
            e("deceasedDateTime", "dateTime"),
            m("address", "Address"),
            e("maritalStatus", "CodeableConcept"),
            e("multipleBirthBoolean", "boolean"),
            e("multipleBirthInteger", "integer"),
            m("photo", "Attachment"),
            m("contact", "PatientContact"),
            m("communication", "PatientCommunication"),
            m("generalPractitioner", "Reference"),
            e("managingOrganization", "Reference"),
            m("link", "PatientLink"),
        ],
        "PatientContact" => table![
            m("relationship", "CodeableConcept"),
            e("name", "HumanName"),
            m("telecom", "ContactPoint"),
            e("address", "Address"),
            e("gender", "code"),
            e("organization", "Reference"),
            e("period", "Period"),
        ],
        "PatientCommunication" => {
            table![e("language", "CodeableConcept"), e("preferred", "boolean")]
        }
        "PatientLink" => table![e("other", "Reference"), e("type", "code")],

        // Encounter.
        "Encounter" => table![
            m("identifier", "Identifier"),
            e("status", "code"),
            m("statusHistory", "EncounterStatusHistory"),
            e("class", "Coding"),
            m("classHistory", "EncounterClassHistory"),
            m("type", "CodeableConcept"),
            e("serviceType", "CodeableConcept"),
            e("priority", "CodeableConcept"),
            e("subject", "Reference"),
            m("episodeOfCare", "Reference"),
            m("basedOn", "Reference"),
            m("participant", "EncounterParticipant"),
            m("appointment", "Reference"),
            e("period", "Period"),
            e("length", "Quantity"),
            m("reasonCode", "CodeableConcept"),
            m("reasonReference", "Reference"),
            m("diagnosis", "EncounterDiagnosis"),
            m("account", "Reference"),
            e("hospitalization", "EncounterHospitalization"),
            m("location", "EncounterLocation"),
            e("serviceProvider", "Reference"),
            e("partOf", "Reference"),
        ],
        "EncounterStatusHistory" => table![e("status", "code"), e("period", "Period")],
        "EncounterClassHistory" => table![e("class", "Coding"), e("period", "Period")],
        "EncounterParticipant" => table![
            m("type", "CodeableConcept"),
            e("period", "Period"),
            e("individual", "Reference"),
        ],
        "EncounterDiagnosis" => table![
            e("condition", "Reference"),
            e("use", "CodeableConcept"),
            e("rank", "positiveInt"),
        ],
        "EncounterHospitalization" => table![
            e("preAdmissionIdentifier", "Identifier"),
            e("origin", "Reference"),
            e("admitSource", "CodeableConcept"),
            e("reAdmission", "CodeableConcept"),
            m("dietPreference", "CodeableConcept"),
            m("specialCourtesy", "CodeableConcept"),
            m("specialArrangement", "CodeableConcept"),
            e("destination", "Reference"),
            e("dischargeDisposition", "CodeableConcept"),
        ],
        "EncounterLocation" => table![
            e("location", "Reference"),
            e("status", "code"),
            e("physicalType", "CodeableConcept"),
            e("period", "Period"),
        ],

        // Appointment.
        "Appointment" => table![
            m("identifier", "Identifier"),
            e("status", "code"),
            e("cancelationReason", "CodeableConcept"),
            m("serviceCategory", "CodeableConcept"),
            m("serviceType", "CodeableConcept"),
            m("specialty", "CodeableConcept"),
            e("appointmentType", "CodeableConcept"),
            m("reasonCode", "CodeableConcept"),
            m("reasonReference", "Reference"),
            e("priority", "unsignedInt"),
            e("description", "string"),
            m("supportingInformation", "Reference"),
            e("start", "instant"),
            e("end", "instant"),
            e("minutesDuration", "positiveInt"),
            m("slot", "Reference"),
            e("created", "dateTime"),
            e("comment", "string"),
            e("patientInstruction", "string"),
            m("basedOn", "Reference"),
            m("participant", "AppointmentParticipant"),
            m("requestedPeriod", "Period"),
        ],
        "AppointmentParticipant" => table![
            m("type", "CodeableConcept"),
            e("actor", "Reference"),
            e("required", "code"),
            e("status", "code"),
            e("period", "Period"),
        ],

        // Condition.
        "Condition" => table![
            m("identifier", "Identifier"),
            e("clinicalStatus", "CodeableConcept"),
            e("verificationStatus", "CodeableConcept"),
            m("category", "CodeableConcept"),
            e("severity", "CodeableConcept"),
            e("code", "CodeableConcept"),
            m("bodySite", "CodeableConcept"),
            e("subject", "Reference"),
            e("encounter", "Reference"),
            e("onsetDateTime", "dateTime"),
            e("onsetAge", "Quantity"),
            e("onsetPeriod", "Period"),
            e("onsetRange", "Range"),
            e("onsetString", "string"),
            e("abatementDateTime", "dateTime"),
            e("abatementAge", "Quantity"),
            e("abatementPeriod", "Period"),
            e("abatementRange", "Range"),
            e("abatementString", "string"),
            e("recordedDate", "dateTime"),
            e("recorder", "Reference"),
            e("asserter", "Reference"),
            m("stage", "ConditionStage"),
            m("evidence", "ConditionEvidence"),
            m("note", "Annotation"),
        ],
        "ConditionStage" => table![
            e("summary", "CodeableConcept"),
            m("assessment", "Reference"),
            e("type", "CodeableConcept"),
        ],
        "ConditionEvidence" => table![m("code", "CodeableConcept"), m("detail", "Reference")],

        // Observation.
        "Observation" => table![
            m("identifier", "Identifier"),
            m("basedOn", "Reference"),
            m("partOf", "Reference"),
            e("status", "code"),
            m("category", "CodeableConcept"),
            e("code", "CodeableConcept"),
            e("subject", "Reference"),
            m("focus", "Reference"),
            e("encounter", "Reference"),
            e("effectiveDateTime", "dateTime"),
            e("effectivePeriod", "Period"),
            e("effectiveTiming", "Timing"),
            e("effectiveInstant", "instant"),
            e("issued", "instant"),
            m("performer", "Reference"),
            e("valueQuantity", "Quantity"),
            e("valueCodeableConcept", "CodeableConcept"),
            e("valueString", "string"),
            e("valueBoolean", "boolean"),
            e("valueInteger", "integer"),
            e("valueRange", "Range"),
            e("valueRatio", "Ratio"),
            e("valueSampledData", "SampledData"),
            e("valueTime", "time"),
            e("valueDateTime", "dateTime"),
            e("valuePeriod", "Period"),
            e("dataAbsentReason", "CodeableConcept"),
            m("interpretation", "CodeableConcept"),
            m("note", "Annotation"),
            e("bodySite", "CodeableConcept"),
            e("method", "CodeableConcept"),
            e("specimen", "Reference"),
            e("device", "Reference"),
            m("referenceRange", "ObservationReferenceRange"),
            m("hasMember", "Reference"),
            m("derivedFrom", "Reference"),
            m("component", "ObservationComponent"),
        ],
        "ObservationReferenceRange" => table![
            e("low", "Quantity"),
            e("high", "Quantity"),
            e("type", "CodeableConcept"),
            m("appliesTo", "CodeableConcept"),
            e("age", "Range"),
            e("text", "string"),
        ],
        "ObservationComponent" => table![
            e("code", "CodeableConcept"),
            e("valueQuantity", "Quantity"),
            e("valueCodeableConcept", "CodeableConcept"),
            e("valueString", "string"),
            e("valueBoolean", "boolean"),
            e("valueInteger", "integer"),
            e("valueRange", "Range"),
            e("valueRatio", "Ratio"),
            e("valueSampledData", "SampledData"),
            e("valueTime", "time"),
            e("valueDateTime", "dateTime"),
            e("valuePeriod", "Period"),
            e("dataAbsentReason", "CodeableConcept"),
            m("interpretation", "CodeableConcept"),
            m("referenceRange", "ObservationReferenceRange"),
        ],

        // MedicationRequest.
        "MedicationRequest" => table![
            m("identifier", "Identifier"),
            e("status", "code"),
            e("statusReason", "CodeableConcept"),
            e("intent", "code"),
            m("category", "CodeableConcept"),
            e("priority", "code"),
            e("doNotPerform", "boolean"),
            e("reportedBoolean", "boolean"),
            e("reportedReference", "Reference"),
            e("medicationCodeableConcept", "CodeableConcept"),
            e("medicationReference", "Reference"),
            e("subject", "Reference"),
            e("encounter", "Reference"),
            m("supportingInformation", "Reference"),
            e("authoredOn", "dateTime"),
            e("requester", "Reference"),
            e("performer", "Reference"),
            e("performerType", "CodeableConcept"),
            e("recorder", "Reference"),
            m("reasonCode", "CodeableConcept"),
            m("reasonReference", "Reference"),
            m("instantiatesCanonical", "canonical"),
            m("instantiatesUri", "uri"),
            m("basedOn", "Reference"),
            e("groupIdentifier", "Identifier"),
            e("courseOfTherapyType", "CodeableConcept"),
            m("insurance", "Reference"),
            m("note", "Annotation"),
            m("dosageInstruction", "Dosage"),
            e("dispenseRequest", "MedicationRequestDispenseRequest"),
            e("substitution", "MedicationRequestSubstitution"),
            e("priorPrescription", "Reference"),
            m("detectedIssue", "Reference"),
            m("eventHistory", "Reference"),
        ],
        "MedicationRequestDispenseRequest" => table![
            e("initialFill", "MedicationRequestInitialFill"),
            e("dispenseInterval", "Quantity"),
            e("validityPeriod", "Period"),
            e("numberOfRepeatsAllowed", "unsignedInt"),
            e("quantity", "Quantity"),
            e("expectedSupplyDuration", "Quantity"),
            e("performer", "Reference"),
        ],
        "MedicationRequestInitialFill" => {
            table![e("quantity", "Quantity"), e("duration", "Quantity")]
        }
        "MedicationRequestSubstitution" => table![
            e("allowedBoolean", "boolean"),
            e("allowedCodeableConcept", "CodeableConcept"),
            e("reason", "CodeableConcept"),
        ],

        // Consent.
        "Consent" => table![
            m("identifier", "Identifier"),
            e("status", "code"),
            e("scope", "CodeableConcept"),
            m("category", "CodeableConcept"),
            e("patient", "Reference"),
            e("dateTime", "dateTime"),
            m("performer", "Reference"),
            m("organization", "Reference"),
            e("sourceAttachment", "Attachment"),
            e("sourceReference", "Reference"),
            m("policy", "ConsentPolicy"),
            e("policyRule", "CodeableConcept"),
            m("verification", "ConsentVerification"),
            e("provision", "ConsentProvision"),
        ],
        "ConsentPolicy" => table![e("authority", "uri"), e("uri", "uri")],
        "ConsentVerification" => table![
            e("verified", "boolean"),
            e("verifiedWith", "Reference"),
            e("verificationDate", "dateTime"),
        ],
        "ConsentProvision" => table![
            e("type", "code"),
            e("period", "Period"),
            m("actor", "ConsentProvisionActor"),
            m("action", "CodeableConcept"),
            m("securityLabel", "Coding"),
            m("purpose", "Coding"),
            m("class", "Coding"),
            m("code", "CodeableConcept"),
            e("dataPeriod", "Period"),
            m("data", "ConsentProvisionData"),
            m("provision", "ConsentProvision"),
        ],
        "ConsentProvisionActor" => {
            table![e("role", "CodeableConcept"), e("reference", "Reference")]
        }
        "ConsentProvisionData" => table![e("meaning", "code"), e("reference", "Reference")],

        // Provenance.
        "Provenance" => table![
            m("target", "Reference"),
            e("occurredPeriod", "Period"),
            e("occurredDateTime", "dateTime"),
            e("recorded", "instant"),
            m("policy", "uri"),
            e("location", "Reference"),
            m("reason", "CodeableConcept"),
            e("activity", "CodeableConcept"),
            m("agent", "ProvenanceAgent"),
            m("entity", "ProvenanceEntity"),
            m("signature", "Signature"),
        ],
        "ProvenanceAgent" => table![
            e("type", "CodeableConcept"),
            m("role", "CodeableConcept"),
            e("who", "Reference"),
            e("onBehalfOf", "Reference"),
        ],
        "ProvenanceEntity" => table![
            e("role", "code"),
            e("what", "Reference"),
            m("agent", "ProvenanceAgent"),
        ],

        // DiagnosticReport.
        "DiagnosticReport" => table![
            m("identifier", "Identifier"),
            m("basedOn", "Reference"),
            e("status", "code"),
            m("category", "CodeableConcept"),
            e("code", "CodeableConcept"),
            e("subject", "Reference"),
            e("encounter", "Reference"),
            e("effectiveDateTime", "dateTime"),
            e("effectivePeriod", "Period"),
            e("issued", "instant"),
            m("performer", "Reference"),
            m("resultsInterpreter", "Reference"),
            m("specimen", "Reference"),
            m("result", "Reference"),
            m("imagingStudy", "Reference"),
            m("media", "DiagnosticReportMedia"),
            e("conclusion", "string"),
            m("conclusionCode", "CodeableConcept"),
            m("presentedForm", "Attachment"),
        ],
        "DiagnosticReportMedia" => table![e("comment", "string"), e("link", "Reference")],

        // AllergyIntolerance.
        "AllergyIntolerance" => table![
            m("identifier", "Identifier"),
            e("clinicalStatus", "CodeableConcept"),
            e("verificationStatus", "CodeableConcept"),
            e("type", "code"),
            m("category", "code"),
            e("criticality", "code"),
            e("code", "CodeableConcept"),
            e("patient", "Reference"),
            e("encounter", "Reference"),
            e("onsetDateTime", "dateTime"),
            e("onsetAge", "Quantity"),
            e("onsetPeriod", "Period"),
            e("onsetRange", "Range"),
            e("onsetString", "string"),
            e("recordedDate", "dateTime"),
            e("recorder", "Reference"),
            e("asserter", "Reference"),
            e("lastOccurrence", "dateTime"),
            m("note", "Annotation"),
            m("reaction", "AllergyIntoleranceReaction"),
        ],
        "AllergyIntoleranceReaction" => table![
            e("substance", "CodeableConcept"),
            m("manifestation", "CodeableConcept"),
            e("description", "string"),
            e("onset", "dateTime"),
            e("severity", "code"),
            e("exposureRoute", "CodeableConcept"),
            m("note", "Annotation"),
        ],

        // Bundle and MessageHeader.
        "Bundle" => table![
            e("identifier", "Identifier"),
            e("type", "code"),
            e("timestamp", "instant"),
            e("total", "unsignedInt"),
            m("link", "BundleLink"),
            m("entry", "BundleEntry"),
            e("signature", "Signature"),
        ],
        "BundleLink" => table![e("relation", "string"), e("url", "uri")],
        "BundleEntry" => table![
            m("link", "BundleLink"),
            e("fullUrl", "uri"),
            e("resource", "Resource"),
            e("search", "BundleEntrySearch"),
            e("request", "BundleEntryRequest"),
            e("response", "BundleEntryResponse"),
        ],
        "BundleEntrySearch" => table![e("mode", "code"), e("score", "decimal")],
        "BundleEntryRequest" => table![
            e("method", "code"),
            e("url", "uri"),
            e("ifNoneMatch", "string"),
            e("ifModifiedSince", "instant"),
            e("ifMatch", "string"),
            e("ifNoneExist", "string"),
        ],
        "BundleEntryResponse" => table![
            e("status", "string"),
            e("location", "uri"),
            e("etag", "string"),
            e("lastModified", "instant"),
        ],
        "MessageHeader" => table![
            e("eventCoding", "Coding"),
            e("eventUri", "uri"),
            m("destination", "MessageHeaderDestination"),
            e("sender", "Reference"),
            e("enterer", "Reference"),
            e("author", "Reference"),
            e("source", "MessageHeaderSource"),
            e("responsible", "Reference"),
            e("reason", "CodeableConcept"),
            e("response", "MessageHeaderResponse"),
            m("focus", "Reference"),
            e("definition", "canonical"),
        ],
        "MessageHeaderDestination" => table![
            e("name", "string"),
            e("target", "Reference"),
            e("endpoint", "url"),
            e("receiver", "Reference"),
        ],
        "MessageHeaderSource" => table![
            e("name", "string"),
            e("software", "string"),
            e("version", "string"),
            e("contact", "ContactPoint"),
            e("endpoint", "url"),
        ],
        "MessageHeaderResponse" => table![
            e("identifier", "id"),
            e("code", "code"),
            e("details", "Reference"),
        ],
        _ => return None,
    })
}

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
enum ExtDef {
    Value(&'static str, &'static str),
    Complex(&'static [(&'static str, &'static str, &'static str)]),
}

const OMB: &[(&str, &str, &str)] = &[
    ("ombCategory", "valueCoding", "Coding"),
    ("detailed", "valueCoding", "Coding"),
    ("text", "valueString", "string"),
];

fn extension(context: &str, url: &str) -> Option<ExtDef> {
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

#[cfg(test)]
mod tests {
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
}
