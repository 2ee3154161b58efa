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
        family,
        given,
    }
}

/// Generates the whole feed in a stable order: per patient its HL7 messages,
/// its FHIR resources and its consents.
pub fn generate(cfg: &SynthConfig) -> Vec<SynthRecord> {
    let mut out = Vec::new();
    for p in patients(cfg) {
        let key = keys::subject_key(&cfg.subject_system, &p.mrn);
        let first = if p.index % 2 == 0 { "A01" } else { "A04" };
        for (n, trigger) in [first, "A08", "A03"].into_iter().enumerate() {
            out.push(SynthRecord {
                feed: Feed::Hl7v2,
                key: key.clone(),
                kind: format!("ADT^{trigger}"),
                payload: hl7_adt(cfg, &p, trigger, n).into_bytes(),
            });
        }
        for (kind, resource) in [
            ("Patient", fhir_patient(cfg, &p)),
            ("Encounter", fhir_encounter(cfg, &p)),
            ("Condition", fhir_condition(cfg, &p)),
        ] {
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

pub fn hl7_adt(cfg: &SynthConfig, p: &Patient, trigger: &str, n: usize) -> String {
    let at = match trigger {
        "A03" => p.discharge,
        _ => p.admit + n as i64 * 600,
    };
    let control = format!("CS{:08}{trigger}", p.index);
    let (area, local) = ("217", p.phone.replace('-', ""));
    let class = if trigger == "A04" { "O" } else { "I" };
    let discharge = if trigger == "A03" {
        hl7_ts(p.discharge)
    } else {
        String::new()
    };
    let segments = [
        format!("MSH|^~\\&|CSEHR|CSHOSP|CONSENTRY|CSBOUNDARY|{}||ADT^{trigger}^ADT_A01|{control}|P|2.5", hl7_ts(at)),
        format!("EVN|{trigger}|{}", hl7_ts(at)),
        format!(
            "PID|1||{mrn}^^^{ma}^MR~{acct}^^^{aa}^AN||{family}^{given}||{dob}|{sex}|||{street}^^{city}^{state}^{zip}^USA||{phone}^PRN^PH^^^{area}^{local}~^NET^Internet^{email}~{fax}^WPN^FX|||||{acct}^^^{aa}^AN|{ssn}|{dl}^{state}",
            mrn = p.mrn,
            ma = cfg.mrn_authority,
            acct = p.account,
            aa = cfg.account_authority,
            family = p.family,
            given = p.given,
            dob = p.birth_date,
            sex = p.sex,
            street = p.street,
            city = p.city,
            state = p.state,
            zip = p.zip,
            phone = p.phone,
            email = p.email,
            fax = p.fax,
            ssn = p.ssn,
            dl = p.drivers_license,
        ),
        format!("PV1|1|{class}|W{}^{}^A||||||||||||||||V{}{}|||||||||||||||||||||||||{}|{discharge}", p.index % 9, 100 + p.index % 50, p.index, trigger, hl7_ts(p.admit)),
        format!("DG1|1||{}^{}^I10", p.diagnosis.0, p.diagnosis.1),
        format!("IN1|1|PLAN01|CSPAYER|Synthetic Health Plan||||||||||||{}^{}|||||||||||||||||||{}", p.family, p.given, p.plan_beneficiary),
        format!("NTE|1||{}", hl7_escape(&note(p))),
    ];
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

pub fn fhir_patient(cfg: &SynthConfig, p: &Patient) -> Value {
    let b = &p.birth_date;
    json!({
        "resourceType": "Patient",
        "id": format!("pat-{}", p.index),
        "meta": meta("1", p.admit),
        "identifier": [
            {"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
             "system": cfg.subject_system, "value": p.mrn},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "AN"}]},
             "system": cfg.account_system, "value": p.account},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}]},
             "system": "http://hl7.org/fhir/sid/us-ssn", "value": p.ssn},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "DL"}]},
             "system": format!("urn:synthetic:dl:{}", p.state), "value": p.drivers_license}
        ],
        "active": true,
        "name": [{"use": "official", "family": p.family, "given": [p.given]}],
        "telecom": [
            {"system": "phone", "value": p.phone, "use": "home"},
            {"system": "fax", "value": p.fax, "use": "work"},
            {"system": "email", "value": p.email},
            {"system": "url", "value": p.portal_url}
        ],
        "gender": if p.sex == "F" { "female" } else { "male" },
        "birthDate": format!("{}-{}-{}", &b[..4], &b[4..6], &b[6..8]),
        "address": [{"use": "home", "line": [p.street], "city": p.city, "state": p.state, "postalCode": p.zip, "country": "US"}],
        "photo": [{"contentType": "image/jpeg", "url": format!("https://portal.example.org/photos/{}.jpg", p.index)}]
    })
}

pub fn fhir_encounter(cfg: &SynthConfig, p: &Patient) -> Value {
    json!({
        "resourceType": "Encounter",
        "id": format!("enc-{}", p.index),
        "meta": meta("1", p.discharge),
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"},
        "subject": subject_ref(cfg, p),
        "period": {"start": iso(p.admit), "end": iso(p.discharge)},
        "location": [{"location": {"display": format!("Ward {}", p.index % 9)}}]
    })
}

pub fn fhir_condition(cfg: &SynthConfig, p: &Patient) -> Value {
    json!({
        "resourceType": "Condition",
        "id": format!("cond-{}", p.index),
        "meta": meta("1", p.admit + 3_600),
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": p.diagnosis.0, "display": p.diagnosis.1}]},
        "subject": subject_ref(cfg, p),
        "recordedDate": iso(p.admit + 3_600),
        "note": [{"text": note(p)}]
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
            "period": {"start": iso(p.admit - 86_400), "end": iso(p.admit + 365 * 86_400)},
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
        assert_eq!(a.len(), 5 * 7);
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
            // The note is escaped: exactly one NTE segment, one line.
            assert_eq!(s.matches("\rNTE|").count(), 1);
        }
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(BASE_EPOCH_S), "2026-10-01T00:00:00Z");
        assert_eq!(hl7_ts(BASE_EPOCH_S + 3661), "20261001010101");
    }
}
