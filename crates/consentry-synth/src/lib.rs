//! A deterministic, realistic synthetic EHR feed. Same seed, same bytes.
//!
//! Every identifier kind HIPAA Safe Harbor names appears somewhere: names,
//! street addresses, cities and ZIP codes, dates, phone and fax numbers,
//! email addresses, SSNs, MRNs, health-plan beneficiary numbers, account
//! numbers, licence numbers, vehicle and device ids, URLs, IP addresses, a
//! biometric id and a photo reference, in structured fields and inside free
//! text. All values are fabricated: 555-01xx phones, 9xx SSNs, example.org
//! mail and URLs, documentation-range IPs.
//!
//! Architecture invariant: pure generation; writing to Kafka or files is the
//! caller's business.

use consentry_core::envelope::identifier_kind;
use consentry_core::keys;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

mod words;

/// Where the generated records belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Hl7v2,
    Fhir,
    Consent,
}

/// One generated record.
#[derive(Clone, PartialEq, Eq)]
pub struct SynthRecord {
    pub feed: Feed,
    /// Kafka key: the subject's partitioning digest.
    pub key: String,
    /// `ADT^A01`, `fhir:Patient`, ...
    pub kind: String,
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for SynthRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SynthRecord({:?}, {}, {} bytes)",
            self.feed,
            self.kind,
            self.payload.len()
        )
    }
}

/// How identities are written: the same systems `topology.yaml` maps.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub seed: u64,
    pub patients: usize,
    pub subject_system: String,
    pub mrn_authority: String,
    pub account_authority: String,
    pub account_system: String,
    pub visit_authority: String,
    pub visit_system: String,
}

impl SynthConfig {
    pub fn new(seed: u64, patients: usize) -> SynthConfig {
        SynthConfig {
            seed,
            patients,
            subject_system: "urn:oid:2.16.840.1.113883.3.7777.1".into(),
            mrn_authority: "CSHOSP".into(),
            account_authority: "CSACCT".into(),
            account_system: "urn:oid:2.16.840.1.113883.3.7777.2".into(),
            visit_authority: "CSVISIT".into(),
            visit_system: "urn:oid:2.16.840.1.113883.3.7777.3".into(),
        }
    }
}

/// One synthetic patient. Its fields are PHI-shaped though fabricated, so
/// `Debug` prints only the index.
#[derive(Clone)]
pub struct Patient {
    pub index: usize,
    pub mrn: String,
    pub account: String,
    pub ssn: String,
    pub drivers_license: String,
    pub plan_beneficiary: String,
    pub family: String,
    pub given: String,
    pub sex: &'static str,
    /// YYYYMMDD
    pub birth_date: String,
    pub street: String,
    pub city: &'static str,
    pub state: &'static str,
    pub zip: String,
    pub phone: String,
    pub fax: String,
    pub email: String,
    pub portal_url: String,
    pub ip: String,
    pub device_id: String,
    pub vehicle_id: String,
    pub biometric_id: String,
    /// Admission, epoch seconds.
    pub admit: i64,
    pub discharge: i64,
    pub diagnosis: (&'static str, &'static str),
    pub consented: Vec<&'static str>,
    pub race: (&'static str, &'static str),
    pub ethnicity: (&'static str, &'static str),
    pub marital: (&'static str, &'static str),
    pub language: &'static str,
    /// Next of kin: family, given, relationship (table 0063), phone.
    pub kin: (String, String, (&'static str, &'static str), String),
    /// Attending clinician: id, family, given.
    pub attending: (String, String, String),
    pub visit: String,
    pub service: &'static str,
    /// Point of care, room, bed.
    pub location: (String, String, String),
    /// LOINC, display, unit, value.
    pub observation: (&'static str, &'static str, &'static str, u32),
    pub medication: (&'static str, &'static str),
    /// A medical record number this patient had before a merge (A40), if any.
    pub merged_mrn: Option<String>,
}

impl Patient {
    /// Every value of a direct identifier this patient's records carry,
    /// with its kind: what HIPAA's limited data set removes (names of the
    /// patient and relatives, street, phone, fax, e-mail, SSN, record,
    /// plan, account, licence, vehicle, device, biometric numbers, URL, IP
    /// address). No output of any profile may carry one except as a token.
    pub fn direct_identifiers(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("name", self.family.clone()),
            ("name", self.given.clone()),
            ("street", self.street.clone()),
            ("phone", self.phone.clone()),
            ("fax", self.fax.clone()),
            ("email", self.email.clone()),
            ("ssn", self.ssn.clone()),
            ("mrn", self.mrn.clone()),
            ("health_plan", self.plan_beneficiary.clone()),
            ("account", self.account.clone()),
            ("visit", self.visit.clone()),
            ("licence", self.drivers_license.clone()),
            ("vehicle", self.vehicle_id.clone()),
            ("device", self.device_id.clone()),
            ("url", self.portal_url.clone()),
            ("ip", self.ip.clone()),
            ("biometric", self.biometric_id.clone()),
            (
                "photo",
                format!("https://portal.example.org/photos/{}.jpg", self.index),
            ),
            ("relative_name", self.kin.0.clone()),
            ("relative_name", self.kin.1.clone()),
            ("relative_phone", self.kin.3.clone()),
        ];
        if let Some(old) = &self.merged_mrn {
            v.push(("mrn", old.clone()));
        }
        v
    }

    /// The values a limited data set may keep but Safe Harbor may not:
    /// the 5-digit ZIP, the city, the full birth date (as HL7 and FHIR
    /// write it).
    pub fn limited_identifiers(&self) -> Vec<(&'static str, String)> {
        let b = &self.birth_date;
        vec![
            ("zip", self.zip.clone()),
            ("city", self.city.to_string()),
            ("birth_date", b.clone()),
            (
                "birth_date",
                format!("{}-{}-{}", &b[..4], &b[4..6], &b[6..8]),
            ),
        ]
    }
}

impl std::fmt::Debug for Patient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Patient(#{}, [redacted])", self.index)
    }
}

/// The four default purposes' consent codes.
pub const CONSENT_CODES: [&str; 4] = ["CAREMGT", "HRESCH", "HOPERAT", "HMARKT"];

/// 2026-10-01T00:00:00Z: the synthetic feed's epoch.
const BASE_EPOCH_S: i64 = 1_790_812_800;

pub fn patients(cfg: &SynthConfig) -> Vec<Patient> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    (0..cfg.patients).map(|i| patient(&mut rng, i)).collect()
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())]
}

fn digits(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn patient(rng: &mut ChaCha8Rng, index: usize) -> Patient {
    let family = pick(rng, words::FAMILY).to_string();
    let given = pick(rng, words::GIVEN).to_string();
    let (city, state, zip3) = pick(rng, words::PLACES);
    let birth_year = rng.random_range(1925..2008);
    let admit = BASE_EPOCH_S + rng.random_range(0..60 * 86_400);
    let mut consented: Vec<&'static str> = CONSENT_CODES
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.7))
        .collect();
    if consented.is_empty() {
        consented.push("HOPERAT");
    }
    let slug = format!(
        "{}.{}{}",
        given.to_lowercase(),
        family.to_lowercase(),
        index
    );
    let (obs_code, obs_display, obs_unit, (lo, hi)) = pick(rng, words::OBSERVATIONS);
    let kin = (
        pick(rng, words::FAMILY).to_string(),
        pick(rng, words::GIVEN).to_string(),
        pick(rng, words::RELATIONSHIPS),
        format!("555-01{}", digits(rng, 2)),
    );
    let attending = (
        format!("NPI{}", digits(rng, 7)),
        pick(rng, words::FAMILY).to_string(),
        pick(rng, words::GIVEN).to_string(),
    );
    Patient {
        index,
        mrn: format!("CS{:07}", 1_000_000 + index * 7 + rng.random_range(0..7)),
        account: format!("A{}", digits(rng, 9)),
        ssn: format!("9{}-{}-{}", digits(rng, 2), digits(rng, 2), digits(rng, 4)),
        drivers_license: format!("{state}D{}", digits(rng, 7)),
        plan_beneficiary: format!("HPB{}", digits(rng, 10)),
        sex: if rng.random_bool(0.5) { "F" } else { "M" },
        birth_date: format!(
            "{birth_year}{:02}{:02}",
            rng.random_range(1..13),
            rng.random_range(1..29)
        ),
        street: format!(
            "{} {}",
            rng.random_range(1..9999),
            pick(rng, words::STREETS)
        ),
        city,
        state,
        zip: format!("{zip3}{}", digits(rng, 2)),
        phone: format!("555-01{}", digits(rng, 2)),
        fax: format!("555-01{}", digits(rng, 2)),
        email: format!("{slug}@example.org"),
        portal_url: format!("https://portal.example.org/patients/{}", digits(rng, 8)),
        ip: format!("192.0.2.{}", rng.random_range(1..255)),
        device_id: format!("(01)00{}(21)SN{}", digits(rng, 12), digits(rng, 6)),
        vehicle_id: format!("1HGCM{}A{}", digits(rng, 5), digits(rng, 6)),
        biometric_id: format!("FP-{}", digits(rng, 12)),
        admit,
        discharge: admit + rng.random_range(3_600..10 * 86_400),
        diagnosis: pick(rng, words::DIAGNOSES),
        consented,
        race: pick(rng, words::RACES),
        ethnicity: pick(rng, words::ETHNICITIES),
        marital: pick(rng, words::MARITAL),
        language: pick(rng, words::LANGUAGES),
        kin,
        attending,
        visit: format!("V{}", digits(rng, 8)),
        service: pick(rng, words::SERVICES),
        location: (
            format!("W{}", index % 9),
            format!("{}", 100 + index % 50),
            pick(rng, &["A", "B"]).to_string(),
        ),
        observation: (obs_code, obs_display, obs_unit, rng.random_range(lo..hi)),
        medication: pick(rng, words::MEDICATIONS),
        merged_mrn: (index % 7 == 3).then(|| format!("CS{:07}", 9_000_000 + index)),
        family,
        given,
    }
}

/// Generates the whole feed in a stable order: per patient its HL7
/// messages, its FHIR resources and its consents. Every patient has ADT
/// A01 or A04, A08 and A03, a FHIR Patient, Encounter, Condition and
/// Observation; some also an A40 merge, an Appointment, or a transaction
/// Bundle (MedicationRequest and its Provenance). Every tenth patient's
/// Observation arrives before its Patient, so normalize must hold it until
/// the Patient comes.
pub fn generate(cfg: &SynthConfig) -> Vec<SynthRecord> {
    let mut out = Vec::new();
    for p in patients(cfg) {
        let key = keys::subject_key(&cfg.subject_system, &p.mrn).to_string();
        let first = if p.index % 2 == 0 { "A01" } else { "A04" };
        let mut triggers = vec![first, "A08", "A03"];
        if p.merged_mrn.is_some() {
            triggers.push("A40");
        }
        for (n, trigger) in triggers.into_iter().enumerate() {
            out.push(SynthRecord {
                feed: Feed::Hl7v2,
                key: key.clone(),
                kind: format!("ADT^{trigger}"),
                payload: hl7_adt(cfg, &p, trigger, n).into_bytes(),
            });
        }
        let mut fhir: Vec<(&str, Value)> = vec![
            ("Patient", fhir_patient(cfg, &p)),
            ("Encounter", fhir_encounter(cfg, &p)),
            ("Condition", fhir_condition(cfg, &p)),
            ("Observation", fhir_observation(cfg, &p)),
        ];
        if p.index % 10 == 9 {
            // The Observation names its Patient by id only, and comes first.
            fhir.swap(0, 3);
        }
        if p.index % 3 == 1 {
            fhir.push(("Appointment", fhir_appointment(cfg, &p)));
        }
        if p.index % 4 == 2 {
            fhir.push(("Bundle", fhir_medication_bundle(cfg, &p)));
        }
        for (kind, resource) in fhir {
            out.push(SynthRecord {
                feed: Feed::Fhir,
                key: key.clone(),
                kind: format!("fhir:{kind}"),
                payload: resource.to_string().into_bytes(),
            });
        }
        out.push(SynthRecord {
            feed: Feed::Consent,
            key: key.clone(),
            kind: "fhir:Consent".into(),
            payload: fhir_consent(cfg, &p).to_string().into_bytes(),
        });
    }
    out
}

/// How many canonical events a record yields (a Bundle, one per resource).
pub fn events_in(r: &SynthRecord) -> usize {
    match r.kind.as_str() {
        "fhir:Bundle" => 2,
        _ => 1,
    }
}

fn hl7_ts(epoch_s: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(epoch_s);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

fn iso(epoch_s: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(epoch_s);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn civil(epoch_s: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = epoch_s.div_euclid(86_400);
    let sod = epoch_s.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60)
}

/// The free-text note: identifiers inside prose, as clinicians write them.
fn note(p: &Patient) -> String {
    format!(
        "Pt {} {} (MRN {}) seen {}. Called back on {}, fax {}, email {}. Lives at {}, {} {} {}. \
         Pacemaker device {}; drives vehicle VIN {}. Portal {} accessed from {}. Biometric enrolment {}. \
         Insurance member {}, licence {}.",
        p.given,
        p.family,
        p.mrn,
        &p.birth_date,
        p.phone,
        p.fax,
        p.email,
        p.street,
        p.city,
        p.state,
        p.zip,
        p.device_id,
        p.vehicle_id,
        p.portal_url,
        p.ip,
        p.biometric_id,
        p.plan_beneficiary,
        p.drivers_license
    )
}

/// Escapes HL7 delimiters in free text so it stays one field.
fn hl7_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            c => out.push(c),
        }
    }
    out
}

/// One HL7 segment from numbered fields (1-based; gaps stay empty).
fn segment(id: &str, fields: &[(usize, String)]) -> String {
    let max = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut out = vec![String::new(); max + 1];
    out[0] = id.to_string();
    for (n, v) in fields {
        out[*n] = v.clone();
    }
    out.join("|")
}

/// An ADT message of `trigger` (A01, A03, A04, A08, A31, A40) for `p`;
/// `n` orders messages of one patient in time.
pub fn hl7_adt(cfg: &SynthConfig, p: &Patient, trigger: &str, n: usize) -> String {
    let at = match trigger {
        "A03" => p.discharge,
        _ => p.admit + n as i64 * 600,
    };
    let control = format!("CS{:08}{trigger}", p.index);
    let (area, local) = ("217", p.phone.replace('-', ""));
    let class = if trigger == "A04" { "O" } else { "I" };
    let mrn_rep = |mrn: &str| format!("{mrn}^^^{}^MR", cfg.mrn_authority);
    let acct = format!("{}^^^{}^AN", p.account, cfg.account_authority);
    let mut segments = vec![
        format!(
            "MSH|^~\\&|CSEHR|CSHOSP|CONSENTRY|CSBOUNDARY|{}||ADT^{trigger}^ADT_A01|{control}|P|2.5",
            hl7_ts(at)
        ),
        format!("EVN|{trigger}|{}", hl7_ts(at)),
        segment(
            "PID",
            &[
                (1, "1".into()),
                (3, format!("{}~{acct}", mrn_rep(&p.mrn))),
                (5, format!("{}^{}^^^^^L", p.family, p.given)),
                (7, p.birth_date.clone()),
                (8, p.sex.into()),
                (10, format!("{}^{}^CDCREC", p.race.0, p.race.1)),
                (
                    11,
                    format!("{}^^{}^{}^{}^USA^H", p.street, p.city, p.state, p.zip),
                ),
                (
                    13,
                    format!(
                        "{}^PRN^PH^^^{area}^{local}~^NET^Internet^{}~{}^PRN^FX~^NET^Internet^{}",
                        p.phone, p.email, p.fax, p.portal_url
                    ),
                ),
                (15, format!("{}^^ISO639", p.language)),
                (16, format!("{}^{}^HL70002", p.marital.0, p.marital.1)),
                (18, acct.clone()),
                (19, p.ssn.clone()),
                (20, format!("{}^{}", p.drivers_license, p.state)),
                (22, format!("{}^{}^CDCREC", p.ethnicity.0, p.ethnicity.1)),
            ],
        ),
        segment(
            "NK1",
            &[
                (1, "1".into()),
                (2, format!("{}^{}", p.kin.0, p.kin.1)),
                (3, format!("{}^{}^HL70063", p.kin.2 .0, p.kin.2 .1)),
                (5, format!("{}^PRN^PH", p.kin.3)),
            ],
        ),
    ];
    if trigger == "A40" {
        if let Some(old) = &p.merged_mrn {
            segments.push(format!("MRG|{}", mrn_rep(old)));
        }
    }
    if !matches!(trigger, "A31" | "A40") {
        let (att_id, att_family, att_given) = &p.attending;
        let mut pv1 = vec![
            (1, "1".to_string()),
            (2, class.into()),
            (
                3,
                format!("{}^{}^{}", p.location.0, p.location.1, p.location.2),
            ),
            (7, format!("{att_id}^{att_family}^{att_given}")),
            (10, p.service.into()),
            (14, "7".into()),
            (19, format!("{}^^^{}^VN", p.visit, cfg.visit_authority)),
            (44, hl7_ts(p.admit)),
        ];
        if trigger == "A03" {
            pv1.push((36, "01".into()));
            pv1.push((45, hl7_ts(p.discharge)));
        }
        segments.push(segment("PV1", &pv1));
        segments.push(format!(
            "DG1|1||{}^{}^I10||{}|A",
            p.diagnosis.0,
            p.diagnosis.1,
            hl7_ts(p.admit + 3_600)
        ));
    }
    let sex_display = if p.sex == "F" { "Female" } else { "Male" };
    segments.push(format!(
        "OBX|1|CWE|76689-9^Sex assigned at birth^LN||{}^{sex_display}^HL70001||||||F",
        p.sex
    ));
    if matches!(trigger, "A01" | "A04") {
        let (code, display, unit, value) = p.observation;
        segments.push(format!(
            "OBX|2|NM|{code}^{display}^LN||{value}|{unit}^^UCUM|||||F|||{}",
            hl7_ts(p.admit + 1_800)
        ));
    }
    if !matches!(trigger, "A31" | "A40") {
        segments.push(segment(
            "IN1",
            &[
                (1, "1".into()),
                (2, "PLAN01".into()),
                (3, "CSPAYER".into()),
                (4, "Synthetic Health Plan".into()),
                (16, format!("{}^{}", p.family, p.given)),
                (17, "SEL".into()),
                (36, p.plan_beneficiary.clone()),
            ],
        ));
        segments.push(format!("NTE|1||{}", hl7_escape(&note(p))));
    }
    segments.join("\r") + "\r"
}

fn meta(version: &str, at: i64) -> Value {
    json!({"versionId": version, "lastUpdated": iso(at), "source": "CSEHR"})
}

fn subject_ref(cfg: &SynthConfig, p: &Patient) -> Value {
    json!({
        "reference": format!("Patient/pat-{}", p.index),
        "identifier": {"system": cfg.subject_system, "value": p.mrn},
        "display": format!("{} {}", p.given, p.family)
    })
}

const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const CDC_RACE: &str = "urn:oid:2.16.840.1.113883.6.238";

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

pub fn fhir_patient(cfg: &SynthConfig, p: &Patient) -> Value {
    let b = &p.birth_date;
    let omb = |url: &str, (code, display): (&str, &str)| {
        json!({"url": url, "extension": [
            {"url": "ombCategory", "valueCoding": coding(CDC_RACE, code, display)},
            {"url": "text", "valueString": display}
        ]})
    };
    json!({
        "resourceType": "Patient",
        "id": format!("pat-{}", p.index),
        "meta": meta("1", p.admit),
        "extension": [
            omb("http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", p.race),
            omb("http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity", p.ethnicity),
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": p.sex}
        ],
        "identifier": [
            {"use": "usual", "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
             "system": cfg.subject_system, "value": p.mrn, "assigner": {"display": cfg.mrn_authority}},
            {"type": {"coding": [{"system": V2_0203, "code": "AN"}]},
             "system": cfg.account_system, "value": p.account, "assigner": {"display": cfg.account_authority}},
            {"type": {"coding": [{"system": V2_0203, "code": "SS"}]},
             "system": "http://hl7.org/fhir/sid/us-ssn", "value": p.ssn},
            {"type": {"coding": [{"system": V2_0203, "code": "DL"}]},
             "system": identifier_kind::drivers_license_system(Some(p.state)), "value": p.drivers_license}
        ],
        "active": true,
        "name": [{"use": "official", "family": p.family, "given": [p.given]}],
        "telecom": [
            {"system": "phone", "value": p.phone, "use": "home"},
            {"system": "fax", "value": p.fax, "use": "home"},
            {"system": "email", "value": p.email},
            {"system": "url", "value": p.portal_url}
        ],
        "gender": if p.sex == "F" { "female" } else { "male" },
        "birthDate": format!("{}-{}-{}", &b[..4], &b[4..6], &b[6..8]),
        "address": [{"use": "home", "line": [p.street], "city": p.city, "state": p.state, "postalCode": p.zip, "country": "US"}],
        "maritalStatus": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", p.marital.0, p.marital.1)]},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": p.language}]}, "preferred": true}],
        "contact": [{
            "relationship": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0063", p.kin.2 .0, p.kin.2 .1)]}],
            "name": {"family": p.kin.0, "given": [p.kin.1]},
            "telecom": [{"system": "phone", "value": p.kin.3}]
        }],
        "photo": [{"contentType": "image/jpeg", "url": format!("https://portal.example.org/photos/{}.jpg", p.index)}]
    })
}

pub fn fhir_encounter(cfg: &SynthConfig, p: &Patient) -> Value {
    let (_, att_family, att_given) = &p.attending;
    json!({
        "resourceType": "Encounter",
        "id": format!("enc-{}", p.index),
        "meta": meta("1", p.discharge),
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "VN"}]},
                        "system": cfg.visit_system, "value": p.visit, "assigner": {"display": cfg.visit_authority}}],
        "status": "finished",
        "class": coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP", "inpatient encounter"),
        "serviceType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0069", "code": p.service}]},
        "subject": subject_ref(cfg, p),
        "participant": [{
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND"}]}],
            "individual": {"display": format!("{att_given} {att_family}")}
        }],
        "period": {"start": iso(p.admit), "end": iso(p.discharge)},
        "hospitalization": {
            "admitSource": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0023", "code": "7"}]},
            "dischargeDisposition": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0112", "code": "01"}]}
        },
        "location": [{"location": {"display": format!("{} {} {}", p.location.0, p.location.1, p.location.2)}}]
    })
}

pub fn fhir_condition(cfg: &SynthConfig, p: &Patient) -> Value {
    json!({
        "resourceType": "Condition",
        "id": format!("cond-{}", p.index),
        "meta": meta("1", p.admit + 3_600),
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis"}]}],
        "code": {"coding": [coding("http://hl7.org/fhir/sid/icd-10-cm", p.diagnosis.0, p.diagnosis.1)]},
        "subject": subject_ref(cfg, p),
        "recordedDate": iso(p.admit + 3_600),
        "note": [{"text": note(p)}]
    })
}

/// A vital sign or lab result that names its patient by id only: normalize
/// resolves it through its patient index.
pub fn fhir_observation(_cfg: &SynthConfig, p: &Patient) -> Value {
    let (code, display, unit, value) = p.observation;
    json!({
        "resourceType": "Observation",
        "id": format!("obs-{}", p.index),
        "meta": meta("1", p.admit + 1_800),
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [coding("http://loinc.org", code, display)]},
        "subject": {"reference": format!("Patient/pat-{}", p.index)},
        "effectiveDateTime": iso(p.admit + 1_800),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    })
}

pub fn fhir_appointment(_cfg: &SynthConfig, p: &Patient) -> Value {
    json!({
        "resourceType": "Appointment",
        "id": format!("appt-{}", p.index),
        "meta": meta("1", p.discharge),
        "status": "booked",
        "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-type", "code": "124", "display": "General Practice"}]}],
        "description": format!("Follow-up for {} {}", p.given, p.family),
        "start": iso(p.discharge + 14 * 86_400),
        "end": iso(p.discharge + 14 * 86_400 + 1_800),
        "participant": [
            {"actor": {"reference": format!("Patient/pat-{}", p.index), "type": "Patient", "display": format!("{} {}", p.given, p.family)}, "status": "accepted"},
            {"actor": {"display": format!("Dr {}", p.attending.1)}, "status": "accepted"}
        ]
    })
}

/// A transaction Bundle as an EHR posts a new prescription: the order and
/// its Provenance, linked by urn:uuid, without versions of their own.
pub fn fhir_medication_bundle(cfg: &SynthConfig, p: &Patient) -> Value {
    let order = format!(
        "urn:uuid:5f0c{:08x}-0000-4000-8000-{:012x}",
        p.index,
        cfg.seed & 0xffff_ffff_ffff
    );
    json!({
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:b0c1{:08x}-0000-4000-8000-{:012x}", p.index, cfg.seed & 0xffff_ffff_ffff)},
        "type": "transaction",
        "timestamp": iso(p.discharge),
        "entry": [
            {"fullUrl": order, "resource": {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"coding": [coding("http://www.nlm.nih.gov/research/umls/rxnorm", p.medication.0, p.medication.1)]},
                "subject": {"reference": format!("Patient/pat-{}", p.index)},
                "authoredOn": iso(p.discharge),
                "requester": {"display": format!("Dr {}", p.attending.1)},
                "dosageInstruction": [{"text": "1 tablet by mouth daily"}]
             }, "request": {"method": "POST", "url": "MedicationRequest"}},
            {"fullUrl": format!("urn:uuid:9a0e{:08x}-0000-4000-8000-{:012x}", p.index, cfg.seed & 0xffff_ffff_ffff), "resource": {
                "resourceType": "Provenance",
                "target": [{"reference": order}],
                "recorded": iso(p.discharge),
                "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]},
                "agent": [{"who": {"display": format!("Dr {}", p.attending.1)}}]
             }, "request": {"method": "POST", "url": "Provenance"}}
        ]
    })
}

pub fn fhir_consent(cfg: &SynthConfig, p: &Patient) -> Value {
    let purposes: Vec<Value> = p
        .consented
        .iter()
        .map(|c| json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": c}))
        .collect();
    json!({
        "resourceType": "Consent",
        "id": format!("consent-{}", p.index),
        "meta": meta("1", p.admit - 86_400),
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": subject_ref(cfg, p),
        "dateTime": iso(p.admit - 86_400),
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": iso(p.admit - 86_400), "end": iso(p.admit + 3650 * 86_400)},
            "purpose": purposes
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = generate(&SynthConfig::new(7, 5));
        let b = generate(&SynthConfig::new(7, 5));
        let c = generate(&SynthConfig::new(8, 5));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let per_patient: usize = patients(&SynthConfig::new(7, 5))
            .iter()
            .map(|p| {
                3 + 4
                    + 1
                    + usize::from(p.merged_mrn.is_some())
                    + usize::from(p.index % 3 == 1)
                    + usize::from(p.index % 4 == 2)
            })
            .sum();
        assert_eq!(a.len(), per_patient);
    }

    #[test]
    fn every_safe_harbor_kind_is_present() {
        let cfg = SynthConfig::new(1, 3);
        let feed = generate(&cfg);
        let all: String = feed
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        for p in patients(&cfg) {
            let d = &p.birth_date;
            for v in [
                &p.family,
                &p.given,
                &p.street,
                &p.zip,
                &p.phone,
                &p.fax,
                &p.email,
                &p.ssn,
                &p.mrn,
                &p.plan_beneficiary,
                &p.account,
                &p.drivers_license,
                &p.vehicle_id,
                &p.device_id,
                &p.portal_url,
                &p.ip,
                &p.biometric_id,
                d,
            ] {
                assert!(
                    all.contains(v.as_str()),
                    "value of patient {} missing from feed",
                    p.index
                );
            }
            assert!(all.contains(&format!(
                "https://portal.example.org/photos/{}.jpg",
                p.index
            )));
        }
    }

    #[test]
    fn hl7_is_well_formed() {
        let cfg = SynthConfig::new(3, 4);
        for r in generate(&cfg).iter().filter(|r| r.feed == Feed::Hl7v2) {
            let s = String::from_utf8(r.payload.clone()).unwrap();
            assert!(s.starts_with("MSH|^~\\&|"));
            for seg in s.split('\r').filter(|l| !l.is_empty()) {
                assert_eq!(seg.as_bytes()[3], b'|', "segment id is three characters");
            }
            // The note is escaped: one NTE segment, on one line (none in A40).
            let ntes = s.matches("\rNTE|").count();
            assert_eq!(ntes, usize::from(r.kind != "ADT^A40"), "{}", r.kind);
        }
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(BASE_EPOCH_S), "2026-10-01T00:00:00Z");
        assert_eq!(hl7_ts(BASE_EPOCH_S + 3661), "20261001010101");
    }
}
