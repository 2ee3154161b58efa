//! The element table: every element of the resources the FHIR mapping
//! maps (and Bundle and MessageHeader) and of the datatypes they use, with
//! its type and whether it repeats. A data table, kept whole so one file
//! answers "does the mapping know this path?".

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

pub(super) const PRIMITIVES: [&str; 20] = [
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
pub(super) enum Kind {
    /// Bundle: id, meta, implicitRules, language.
    Resource,
    /// The others: also text, extension, modifierExtension.
    DomainResource,
    /// Backbone elements: id, extension, modifierExtension.
    Backbone,
    /// Datatypes: id, extension.
    Datatype,
}

pub(super) fn kind(ty: &str) -> Kind {
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
pub(super) fn elements(ty: &str) -> Option<&'static [E]> {
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
