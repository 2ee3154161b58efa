//! Word lists for synthetic patients. Common names and real place names are
//! combined at random with fabricated numbers; no real person's record.

pub const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
];

pub const GIVEN: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Maria",
    "Daniel",
    "Nancy",
    "Matthew",
    "Lisa",
    "Anthony",
    "Betty",
    "Mark",
    "Sandra",
    "Aaliyah",
];

pub const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Pine Rd",
    "Washington Blvd",
    "Lake View Dr",
    "Hillcrest Rd",
    "Sunset Ave",
    "Park Pl",
    "River Rd",
];

/// (city, state, ZIP3). Some ZIP3s are on the HHS list of areas under
/// 20,000 people (036, 059, 102, 203, 556, 692, 790, 821, 823, 830, 831,
/// 878, 879, 884, 890, 893), so de-identification can be tested on them.
pub const PLACES: &[(&str, &str, &str)] = &[
    ("Springfield", "IL", "627"),
    ("Boston", "MA", "021"),
    ("Austin", "TX", "787"),
    ("Denver", "CO", "802"),
    ("Portland", "OR", "972"),
    ("Columbus", "OH", "432"),
    ("Madison", "WI", "537"),
    ("Lancaster", "NH", "036"),
    ("Cody", "WY", "824"),
    ("Rock Springs", "WY", "829"),
    ("Pampa", "TX", "790"),
    ("Ely", "NV", "893"),
    ("Duluth", "MN", "556"),
    ("Lewistown", "MT", "594"),
];

/// (ICD-10-CM code, display).
pub const DIAGNOSES: &[(&str, &str)] = &[
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
    (
        "C50.911",
        "Malignant neoplasm of unspecified site of right female breast",
    ),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("N18.3", "Chronic kidney disease, stage 3"),
    ("G35", "Multiple sclerosis"),
    ("E84.0", "Cystic fibrosis with pulmonary manifestations"),
];

/// CDC Race and Ethnicity codes (OMB categories).
pub const RACES: &[(&str, &str)] = &[
    ("2106-3", "White"),
    ("2054-5", "Black or African American"),
    ("2028-9", "Asian"),
    ("1002-5", "American Indian or Alaska Native"),
    ("2076-8", "Native Hawaiian or Other Pacific Islander"),
];

pub const ETHNICITIES: &[(&str, &str)] = &[
    ("2135-2", "Hispanic or Latino"),
    ("2186-5", "Not Hispanic or Latino"),
];

/// HL7 marital status codes (table 0002; the same letters in FHIR's v3 set).
pub const MARITAL: &[(&str, &str)] = &[
    ("M", "Married"),
    ("S", "Never Married"),
    ("D", "Divorced"),
    ("W", "Widowed"),
];

/// BCP 47 language tags.
pub const LANGUAGES: &[&str] = &["en", "es", "zh", "vi"];

/// Next-of-kin relationships (HL7 table 0063).
pub const RELATIONSHIPS: &[(&str, &str)] = &[
    ("SPO", "Spouse"),
    ("MTH", "Mother"),
    ("FTH", "Father"),
    ("SIB", "Sibling"),
    ("CHD", "Child"),
];

/// Vital signs and labs: LOINC code, display, UCUM unit, value range.
pub const OBSERVATIONS: &[(&str, &str, &str, (u32, u32))] = &[
    ("29463-7", "Body weight", "kg", (45, 130)),
    ("8867-4", "Heart rate", "/min", (50, 110)),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", (95, 170)),
    (
        "2339-0",
        "Glucose [Mass/volume] in Blood",
        "mg/dL",
        (70, 240),
    ),
];

/// RxNorm clinical drugs.
pub const MEDICATIONS: &[(&str, &str)] = &[
    ("860975", "metformin hydrochloride 500 MG Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("617312", "atorvastatin 40 MG Oral Tablet"),
    ("745679", "albuterol 90 MCG/ACTUATE Metered Dose Inhaler"),
];

/// Hospital services (HL7 table 0069).
pub const SERVICES: &[&str] = &["MED", "SUR", "CAR", "PUL", "URO"];
