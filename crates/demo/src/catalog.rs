//! Code lists the generator draws from. Codes are real terminology codes (SNOMED CT,
//! ICD-10-CM, RxNorm, LOINC) so the demo exercises the same display logic as real data;
//! every person, name, address and number is invented.

pub const FEMALE_GIVEN: &[&str] = &[
    "Ada", "Beatriz", "Chioma", "Dana", "Elena", "Farah", "Grace", "Hana", "Ines", "Joy", "Keiko",
    "Leah", "Maren", "Nadia", "Olive", "Priya",
];
pub const MALE_GIVEN: &[&str] = &[
    "Arjun", "Bruno", "Caleb", "Diego", "Elias", "Felix", "Gustavo", "Henrik", "Ivan", "Jonah",
    "Kofi", "Liam", "Mateo", "Nikhil", "Omar", "Pavel",
];
pub const FAMILY: &[&str] = &[
    "Abernathy",
    "Brightwater",
    "Castellano",
    "Delacroix",
    "Eastwood",
    "Fairbanks",
    "Galloway",
    "Hollister",
    "Ingram",
    "Jovanovic",
    "Kowalczyk",
    "Lindqvist",
    "Marchetti",
    "Nakamura",
    "Okonkwo",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Sorensen",
    "Thibodeaux",
];
pub const STREETS: &[&str] = &[
    "Maple Ave",
    "Harbor St",
    "Orchard Ln",
    "Quarry Rd",
    "Willow Ct",
    "Summit Dr",
    "Mill St",
];
pub const CITIES: &[(&str, &str, &str)] = &[
    ("Northfield", "MA", "01360"),
    ("Riverton", "MA", "01201"),
    ("Lakeside", "MA", "01420"),
    ("Fairhaven", "MA", "02719"),
];

pub struct ConditionDef {
    pub snomed: &'static str,
    pub icd10: &'static str,
    pub display: &'static str,
    /// Index into [`MEDICATIONS`] of the usual treatment, if any.
    pub medication: Option<usize>,
}

pub const CONDITIONS: &[ConditionDef] = &[
    ConditionDef {
        snomed: "38341003",
        icd10: "I10",
        display: "Essential hypertension",
        medication: Some(0),
    },
    ConditionDef {
        snomed: "44054006",
        icd10: "E11.9",
        display: "Type 2 diabetes mellitus without complications",
        medication: Some(1),
    },
    ConditionDef {
        snomed: "55822004",
        icd10: "E78.5",
        display: "Hyperlipidemia",
        medication: Some(2),
    },
    ConditionDef {
        snomed: "195967001",
        icd10: "J45.909",
        display: "Asthma, uncomplicated",
        medication: Some(3),
    },
    ConditionDef {
        snomed: "35489007",
        icd10: "F32.A",
        display: "Depression",
        medication: Some(4),
    },
    ConditionDef {
        snomed: "40930008",
        icd10: "E03.9",
        display: "Hypothyroidism",
        medication: Some(5),
    },
    ConditionDef {
        snomed: "235595009",
        icd10: "K21.9",
        display: "Gastro-esophageal reflux disease",
        medication: Some(6),
    },
    ConditionDef {
        snomed: "239873007",
        icd10: "M17.9",
        display: "Osteoarthritis of knee",
        medication: Some(7),
    },
    ConditionDef {
        snomed: "414916001",
        icd10: "E66.9",
        display: "Obesity",
        medication: None,
    },
    ConditionDef {
        snomed: "197480006",
        icd10: "F41.9",
        display: "Anxiety disorder",
        medication: None,
    },
    ConditionDef {
        snomed: "37796009",
        icd10: "G43.909",
        display: "Migraine",
        medication: Some(8),
    },
    ConditionDef {
        snomed: "433144002",
        icd10: "N18.30",
        display: "Chronic kidney disease stage 3",
        medication: None,
    },
];

pub struct MedicationDef {
    pub rxnorm: &'static str,
    pub display: &'static str,
    pub dosage: &'static str,
}

pub const MEDICATIONS: &[MedicationDef] = &[
    MedicationDef {
        rxnorm: "314076",
        display: "lisinopril 10 MG Oral Tablet",
        dosage: "1 tablet by mouth once daily",
    },
    MedicationDef {
        rxnorm: "860975",
        display: "metformin hydrochloride 500 MG Extended Release Oral Tablet",
        dosage: "1 tablet by mouth twice daily with meals",
    },
    MedicationDef {
        rxnorm: "617310",
        display: "atorvastatin 20 MG Oral Tablet",
        dosage: "1 tablet by mouth at bedtime",
    },
    MedicationDef {
        rxnorm: "745679",
        display: "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        dosage: "2 puffs every 4 to 6 hours as needed",
    },
    MedicationDef {
        rxnorm: "312940",
        display: "sertraline 50 MG Oral Tablet",
        dosage: "1 tablet by mouth once daily",
    },
    MedicationDef {
        rxnorm: "966222",
        display: "levothyroxine sodium 0.05 MG Oral Tablet",
        dosage: "1 tablet by mouth every morning",
    },
    MedicationDef {
        rxnorm: "198053",
        display: "omeprazole 20 MG Delayed Release Oral Capsule",
        dosage: "1 capsule by mouth before breakfast",
    },
    MedicationDef {
        rxnorm: "198013",
        display: "naproxen 500 MG Oral Tablet",
        dosage: "1 tablet by mouth twice daily as needed",
    },
    MedicationDef {
        rxnorm: "1372693",
        display: "sumatriptan 50 MG Oral Tablet",
        dosage: "1 tablet at onset of migraine, may repeat once",
    },
];

pub struct AllergyDef {
    pub code: &'static str,
    pub system: &'static str,
    pub display: &'static str,
    pub category: &'static str,
    pub reaction: &'static str,
    pub criticality: &'static str,
}

pub const SNOMED: &str = "http://snomed.info/sct";
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub const LOINC: &str = "http://loinc.org";
pub const ICD10: &str = "http://hl7.org/fhir/sid/icd-10-cm";

pub const ALLERGIES: &[AllergyDef] = &[
    AllergyDef {
        code: "7980",
        system: RXNORM,
        display: "Penicillin G",
        category: "medication",
        reaction: "Hives",
        criticality: "high",
    },
    AllergyDef {
        code: "10180",
        system: RXNORM,
        display: "Sulfamethoxazole",
        category: "medication",
        reaction: "Rash",
        criticality: "low",
    },
    AllergyDef {
        code: "256349002",
        system: SNOMED,
        display: "Peanut",
        category: "food",
        reaction: "Anaphylaxis",
        criticality: "high",
    },
    AllergyDef {
        code: "111088007",
        system: SNOMED,
        display: "Latex",
        category: "environment",
        reaction: "Contact dermatitis",
        criticality: "low",
    },
    AllergyDef {
        code: "1191",
        system: RXNORM,
        display: "Aspirin",
        category: "medication",
        reaction: "Wheezing",
        criticality: "high",
    },
];

pub struct LabDef {
    pub loinc: &'static str,
    pub display: &'static str,
    pub unit: &'static str,
    pub low: Option<f64>,
    pub high: f64,
    /// Typical value and spread for a healthy adult.
    pub mean: f64,
    pub sd: f64,
    pub decimals: u32,
}

pub const LABS: &[LabDef] = &[
    LabDef {
        loinc: "4548-4",
        display: "Hemoglobin A1c/Hemoglobin.total in Blood",
        unit: "%",
        low: Some(4.0),
        high: 5.6,
        mean: 5.4,
        sd: 0.4,
        decimals: 1,
    },
    LabDef {
        loinc: "2345-7",
        display: "Glucose [Mass/volume] in Serum or Plasma",
        unit: "mg/dL",
        low: Some(70.0),
        high: 99.0,
        mean: 92.0,
        sd: 12.0,
        decimals: 0,
    },
    LabDef {
        loinc: "2160-0",
        display: "Creatinine [Mass/volume] in Serum or Plasma",
        unit: "mg/dL",
        low: Some(0.6),
        high: 1.3,
        mean: 0.95,
        sd: 0.2,
        decimals: 2,
    },
    LabDef {
        loinc: "2823-3",
        display: "Potassium [Moles/volume] in Serum or Plasma",
        unit: "mmol/L",
        low: Some(3.5),
        high: 5.1,
        mean: 4.2,
        sd: 0.4,
        decimals: 1,
    },
    LabDef {
        loinc: "18262-6",
        display: "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
        unit: "mg/dL",
        low: None,
        high: 99.0,
        mean: 105.0,
        sd: 25.0,
        decimals: 0,
    },
    LabDef {
        loinc: "718-7",
        display: "Hemoglobin [Mass/volume] in Blood",
        unit: "g/dL",
        low: Some(12.0),
        high: 17.5,
        mean: 14.2,
        sd: 1.2,
        decimals: 1,
    },
    LabDef {
        loinc: "3016-3",
        display: "Thyrotropin [Units/volume] in Serum or Plasma",
        unit: "m[IU]/L",
        low: Some(0.4),
        high: 4.0,
        mean: 1.9,
        sd: 0.9,
        decimals: 2,
    },
];

pub struct PractitionerDef {
    pub id: &'static str,
    pub given: &'static str,
    pub family: &'static str,
    pub prefix: Option<&'static str>,
    pub suffix: Option<&'static str>,
    pub npi: &'static str,
}

pub const PRACTITIONERS: &[PractitionerDef] = &[
    PractitionerDef {
        id: "demo-pract-okafor",
        given: "Amara",
        family: "Okafor",
        prefix: Some("Dr."),
        suffix: Some("MD"),
        npi: "1999000011",
    },
    PractitionerDef {
        id: "demo-pract-brennan",
        given: "Lucas",
        family: "Brennan",
        prefix: Some("Dr."),
        suffix: Some("DO"),
        npi: "1999000029",
    },
    PractitionerDef {
        id: "demo-pract-raman",
        given: "Priya",
        family: "Raman",
        prefix: None,
        suffix: Some("NP"),
        npi: "1999000037",
    },
];

pub const VISIT_REASONS: &[&str] = &[
    "Follow-up: blood pressure",
    "Diabetes check",
    "Medication review",
    "Annual wellness visit",
    "Cough for two weeks",
    "Knee pain",
    "Lab results discussion",
    "Anxiety follow-up",
    "Headache",
    "Thyroid follow-up",
];
