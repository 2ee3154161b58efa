//! HL7 v2.5 ADT messages (A01, A03, A04, A08, A31, A40) for a synthetic
//! patient: MSH, EVN, PID, NK1, MRG, PV1, DG1, OBX, IN1 and an NTE with
//! the free-text note, segments separated by `\r`.

use crate::patient::note;
use crate::time::hl7_ts;
use crate::{Patient, SynthConfig};

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

#[cfg(test)]
mod tests {
    use crate::{generate, Feed, SynthConfig};

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
}
