//! Properties over generated and mutated input: HL7 and FHIR agree, and
//! no input can panic the stage.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// One patient, one subject: the HL7 A31 and the FHIR Patient of a
    /// generated patient normalize to the same envelope, up to the fields
    /// that say where and when it came from; the A03's visit and the FHIR
    /// Encounter to the same encounter; the DG1 and the Condition to the
    /// same diagnosis.
    #[test]
    fn hl7_and_fhir_normalize_to_the_same_envelope(seed in any::<u64>(), index in 0usize..12) {
        let (cfg, p) = patient(seed, index);
        let source_free = |o: &Outcome| {
            let mut ev = event(o).clone();
            ev.event_id.clear();
            ev.event_type.clear();
            ev.event_time_ms = None;
            ev.source_system.clear();
            ev.source_format.clear();
            ev.correlation_id.clear();
            ev
        };
        let a31 = source_free(&run("ehr.hl7v2", hl7_adt(&cfg, &p, "A31", 0).as_bytes()));
        let fhir = source_free(&run("ehr.fhir", fhir_patient(&cfg, &p).to_string().as_bytes()));
        prop_assert_eq!(&a31, &fhir);

        let a03 = run("ehr.hl7v2", hl7_adt(&cfg, &p, "A03", 2).as_bytes());
        let enc = run("ehr.fhir", fhir_encounter(&cfg, &p).to_string().as_bytes());
        let (a03, enc) = (event(&a03), event(&enc));
        prop_assert_eq!(&a03.encounter, &enc.encounter);
        prop_assert_eq!(&a03.subject_key, &enc.subject_key);
        let visit = |e: &CanonicalEvent| e.identifiers.iter().find(|i| i.kind == "visit").cloned();
        prop_assert_eq!(visit(a03), visit(enc));

        let cond = run("ehr.fhir", fhir_condition(&cfg, &p).to_string().as_bytes());
        let mut dx = event(&cond).codes[0].clone();
        dx.status = None;
        prop_assert_eq!(&a03.codes[0], &dx);
    }

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600), hl7 in any::<bool>()) {
        let o = Normalize::new(&topology()).process(&input(if hl7 { "ehr.hl7v2" } else { "ehr.fhir" }, &bytes), &NoState);
        prop_assert!(!o.is_empty());
        for u in &o {
            prop_assert!(u.quarantine.is_some() || u.outputs.len() == 1);
        }
    }

    /// Mutating a valid message never panics and never lets an event out
    /// without a subject key.
    #[test]
    fn never_panics_on_mutated_messages(seed in any::<u64>(), cut in 0usize..1500, insert in "[|^~\\\\&\\r{}\\[\\]\",:a-zA-Z0-9]{0,12}", hl7 in any::<bool>()) {
        let (cfg, p) = patient(seed, 0);
        let text = if hl7 { hl7_adt(&cfg, &p, "A01", 0) } else { fhir_patient(&cfg, &p).to_string() };
        let mut b = text.into_bytes();
        let at = cut.min(b.len());
        b.splice(at..at, insert.bytes());
        let o = Normalize::new(&topology()).process(&input(if hl7 { "ehr.hl7v2" } else { "ehr.fhir" }, &b), &NoState);
        for u in &o {
            for out in &u.outputs {
                prop_assert!(!out.event.subject_key.is_empty());
            }
        }
    }
}
