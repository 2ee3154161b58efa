//! The ADT mapping's table of the format: trigger events, versions, and
//! each segment it reads with its highest v2.8 field and the fields it
//! carries.

/// Trigger events this mapping reads.
pub const ADT_EVENTS: [&str; 9] = [
    "A01", "A02", "A03", "A04", "A08", "A11", "A13", "A31", "A40",
];

/// Versions (MSH-12.1) this mapping reads.
pub const VERSIONS: [&str; 11] = [
    "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2",
];

/// A segment the mapping knows: its highest field number (v2.8.2) and the
/// fields it carries into the envelope.
pub struct SegmentDef {
    pub id: &'static str,
    pub max_field: usize,
    pub carried: &'static [usize],
}

pub const SEGMENTS: [SegmentDef; 14] = [
    SegmentDef {
        id: "MSH",
        max_field: 25,
        carried: &[3, 7, 9, 10, 12],
    },
    SegmentDef {
        id: "SFT",
        max_field: 6,
        carried: &[],
    },
    SegmentDef {
        id: "EVN",
        max_field: 7,
        carried: &[2, 6],
    },
    SegmentDef {
        id: "PID",
        max_field: 40,
        carried: &[
            2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 29, 30, 40,
        ],
    },
    SegmentDef {
        id: "PD1",
        max_field: 22,
        carried: &[12],
    },
    SegmentDef {
        id: "NK1",
        max_field: 41,
        carried: &[2, 3, 5, 7],
    },
    SegmentDef {
        id: "PV1",
        max_field: 54,
        carried: &[2, 3, 6, 7, 10, 14, 19, 36, 44, 45],
    },
    SegmentDef {
        id: "PV2",
        max_field: 50,
        carried: &[3],
    },
    SegmentDef {
        id: "DG1",
        max_field: 26,
        carried: &[3, 5],
    },
    SegmentDef {
        id: "AL1",
        max_field: 6,
        carried: &[2, 3, 4, 5, 6],
    },
    SegmentDef {
        id: "IN1",
        max_field: 56,
        carried: &[2, 3, 4, 17, 36, 49],
    },
    SegmentDef {
        id: "OBX",
        max_field: 33,
        carried: &[2, 3, 5, 6, 11, 14],
    },
    SegmentDef {
        id: "NTE",
        max_field: 8,
        carried: &[3],
    },
    SegmentDef {
        id: "MRG",
        max_field: 7,
        carried: &[1, 3],
    },
];

pub(super) fn segment_def(id: &str) -> Option<&'static SegmentDef> {
    let b = id.as_bytes();
    SEGMENTS
        .iter()
        .find(|d| d.id.len() == b.len() && d.id.bytes().zip(b).all(|(x, y)| x == *y))
}
