//! The synthetic patients: one `Patient` per index, every field drawn
//! from the seeded generator in a fixed order (the order is the feed's
//! bytes: reordering a draw changes every later value), and the free-text
//! note that carries their identifiers inside prose.

use crate::{words, SynthConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
pub(crate) const BASE_EPOCH_S: i64 = 1_790_812_800;

pub fn patients(cfg: &SynthConfig) -> Vec<Patient> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    (cfg.first_patient..cfg.first_patient.saturating_add(cfg.patients))
        .map(|i| patient(&mut rng, i))
        .collect()
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

/// The free-text note: identifiers inside prose, as clinicians write them.
pub(crate) fn note(p: &Patient) -> String {
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
