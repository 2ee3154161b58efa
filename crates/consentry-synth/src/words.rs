//! Word lists for synthetic patients. Common names and real place names are
//! combined at random with fabricated numbers; no real person's record.

pub const FAMILY: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
];

pub const GIVEN: &[&str] = &[
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Maria", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark", "Sandra", "Aaliyah",
];

pub const STREETS: &[&str] = &[
    "Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Pine Rd", "Washington Blvd", "Lake View Dr",
    "Hillcrest Rd", "Sunset Ave", "Park Pl", "River Rd",
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
    ("C50.911", "Malignant neoplasm of unspecified site of right female breast"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("N18.3", "Chronic kidney disease, stage 3"),
    ("G35", "Multiple sclerosis"),
    ("E84.0", "Cystic fibrosis with pulmonary manifestations"),
];
