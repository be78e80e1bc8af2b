//! Hearth's demo data: a deterministic, synthetic clinic as FHIR R4 resources shaped after
//! US Core 6.1 — patients, practitioners, problems, medications, allergies, years of vital
//! signs and labs with reference ranges, past encounters, and today's schedule of virtual and
//! in-person visits relative to the clock.
//!
//! The same seed and the same `now` always give byte-identical resources. The resources are
//! plain FHIR JSON, so they go through exactly the code paths that data synced from an EHR takes.

mod catalog;
mod rng;

use catalog::*;
use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveTime, TimeZone};
use rng::Rng;
use serde_json::{json, Value};

/// The URL of the extension that marks an Appointment as a virtual visit (FHIR R5's
/// `Appointment.virtualService`, carried in R4 as a cross-version extension).
pub const VIRTUAL_SERVICE_EXTENSION: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService";
/// Identifier system of the demo clinic's medical record numbers.
pub const MRN_SYSTEM: &str = "urn:hearth:demo:mrn";
/// The seed used when none is configured.
pub const DEFAULT_SEED: u64 = 20_260_101;

/// What to generate.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub seed: u64,
    /// The clinic's present moment; today's schedule and every date are relative to it.
    pub now: DateTime<FixedOffset>,
    pub patients: usize,
}

impl DemoOptions {
    pub fn new(seed: u64, now: DateTime<FixedOffset>) -> Self {
        Self {
            seed,
            now,
            patients: 48,
        }
    }
}

/// Generates the demo clinic. Resources come in dependency order (practitioners, locations,
/// patients, their clinical data, then schedules, slots and appointments).
pub fn generate(opts: &DemoOptions) -> Vec<Value> {
    let root = Rng::new(opts.seed);
    let mut out = Vec::new();
    let stamp = opts.now.to_rfc3339();
    let meta = || json!({ "versionId": "1", "lastUpdated": stamp });

    for p in PRACTITIONERS {
        out.push(practitioner(p, meta()));
    }
    for room in 1..=4 {
        out.push(json!({
            "resourceType": "Location",
            "id": format!("demo-room-{room}"),
            "meta": meta(),
            "status": "active",
            "name": format!("Exam Room {room}"),
            "mode": "instance",
        }));
    }

    let today = opts.now.date_naive();
    let mut patients = Vec::new();
    for i in 0..opts.patients {
        let mut rng = root.fork(1_000 + i as u64);
        let person = Person::new(&mut rng, i, today);
        out.push(person.resource(meta()));
        clinical_history(&mut rng, &person, opts, &mut out, &meta);
        patients.push(person);
    }

    let mut rng = root.fork(7);
    schedule_today(&mut rng, opts, &patients, &mut out, &meta);
    out
}

struct Person {
    id: String,
    given: String,
    family: String,
    gender: &'static str,
    birth: NaiveDate,
    mrn: String,
    conditions: Vec<usize>,
    allergies: Vec<usize>,
    address: (String, &'static str, &'static str, &'static str),
    phone: String,
}

impl Person {
    fn new(rng: &mut Rng, index: usize, today: NaiveDate) -> Self {
        let female = rng.chance(0.5);
        let given = if female {
            rng.pick(FEMALE_GIVEN)
        } else {
            rng.pick(MALE_GIVEN)
        };
        let family = FAMILY[index % FAMILY.len()];
        let age_days = rng.range(19 * 365, 88 * 365);
        let birth = today - Duration::days(age_days);
        let n_conditions = rng.range(1, 4) as usize;
        let conditions = rng.sample_indices(CONDITIONS.len(), n_conditions);
        let n_allergies = if rng.chance(0.35) {
            0
        } else {
            rng.range(1, 2) as usize
        };
        let allergies = rng.sample_indices(ALLERGIES.len(), n_allergies);
        let (city, state, zip) = *rng.pick(CITIES);
        let street = format!("{} {}", rng.range(10, 990), rng.pick(STREETS));
        Self {
            id: format!("demo-pat-{:02}", index + 1),
            given: given.to_string(),
            family: family.to_string(),
            gender: if female { "female" } else { "male" },
            birth,
            mrn: format!("{:07}", 4_100_000 + rng.range(0, 899_999)),
            conditions,
            allergies,
            address: (street, city, state, zip),
            phone: format!("555-01{:02}", rng.range(0, 99)),
        }
    }

    fn reference(&self) -> Value {
        json!({ "reference": format!("Patient/{}", self.id), "display": self.display() })
    }

    fn display(&self) -> String {
        format!("{} {}", self.given, self.family)
    }

    fn has(&self, snomed: &str) -> bool {
        self.conditions
            .iter()
            .any(|c| CONDITIONS[*c].snomed == snomed)
    }

    fn resource(&self, meta: Value) -> Value {
        let (street, city, state, zip) = &self.address;
        json!({
            "resourceType": "Patient",
            "id": self.id,
            "meta": {
                "versionId": meta["versionId"],
                "lastUpdated": meta["lastUpdated"],
                "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
            },
            "extension": [{
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                "valueCode": if self.gender == "female" { "F" } else { "M" },
            }],
            "identifier": [{
                "use": "usual",
                "type": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                    "code": "MR",
                    "display": "Medical Record Number",
                }], "text": "MRN" },
                "system": MRN_SYSTEM,
                "value": self.mrn,
            }],
            "active": true,
            "name": [{ "use": "official", "family": self.family, "given": [self.given] }],
            "telecom": [{ "system": "phone", "value": self.phone, "use": "mobile" }],
            "gender": self.gender,
            "birthDate": self.birth.to_string(),
            "address": [{
                "use": "home",
                "line": [street],
                "city": city,
                "state": state,
                "postalCode": zip,
                "country": "US",
            }],
        })
    }
}

fn practitioner(p: &PractitionerDef, meta: Value) -> Value {
    let mut name = json!({ "use": "official", "family": p.family, "given": [p.given] });
    if let Some(prefix) = p.prefix {
        name["prefix"] = json!([prefix]);
    }
    if let Some(suffix) = p.suffix {
        name["suffix"] = json!([suffix]);
    }
    json!({
        "resourceType": "Practitioner",
        "id": p.id,
        "meta": meta,
        "identifier": [{ "system": "http://hl7.org/fhir/sid/us-npi", "value": p.npi }],
        "active": true,
        "name": [name],
    })
}

fn codeable(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }], "text": display })
}

fn category(system: &str, code: &str, display: &str) -> Value {
    json!([{ "coding": [{ "system": system, "code": code, "display": display }] }])
}

/// A Quantity with a UCUM code and the unit as people write it.
fn quantity(value: f64, ucum: &str, decimals: u32) -> Value {
    let unit = match ucum {
        "mm[Hg]" => "mmHg",
        "/min" => "beats/min",
        "Cel" => "°C",
        "m[IU]/L" => "mIU/L",
        other => other,
    };
    json!({ "value": round_to(value, decimals), "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum })
}

fn round_to(value: f64, decimals: u32) -> f64 {
    let factor = 10f64.powi(decimals as i32);
    (value * factor).round() / factor
}

/// Midday on `date` in the clinic's offset, as RFC 3339.
fn at_clinic(
    date: NaiveDate,
    hour: u32,
    minute: u32,
    offset: FixedOffset,
) -> DateTime<FixedOffset> {
    let time = NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or(NaiveTime::MIN);
    offset
        .from_local_datetime(&date.and_time(time))
        .single()
        .unwrap_or_else(|| offset.from_utc_datetime(&date.and_time(time)))
}

fn clinical_history(
    rng: &mut Rng,
    person: &Person,
    opts: &DemoOptions,
    out: &mut Vec<Value>,
    meta: &dyn Fn() -> Value,
) {
    let today = opts.now.date_naive();
    let offset = *opts.now.offset();
    let pid = &person.id;
    let subject = person.reference();

    // Problems and their treatments.
    for (n, &ci) in person.conditions.iter().enumerate() {
        let c = &CONDITIONS[ci];
        let onset = today - Duration::days(rng.range(200, 3_000));
        out.push(json!({
            "resourceType": "Condition",
            "id": format!("{pid}-cond-{n}"),
            "meta": meta(),
            "clinicalStatus": codeable("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
            "verificationStatus": codeable("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
            "category": category("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item", "Problem List Item"),
            "code": { "coding": [
                { "system": SNOMED, "code": c.snomed, "display": c.display },
                { "system": ICD10, "code": c.icd10, "display": c.display },
            ], "text": c.display },
            "subject": subject,
            "onsetDateTime": onset.to_string(),
            "recordedDate": onset.to_string(),
        }));
        if let Some(mi) = c.medication {
            let m = &MEDICATIONS[mi];
            out.push(json!({
                "resourceType": "MedicationRequest",
                "id": format!("{pid}-med-{n}"),
                "meta": meta(),
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": codeable(RXNORM, m.rxnorm, m.display),
                "subject": subject,
                "authoredOn": (onset + Duration::days(rng.range(0, 30))).to_string(),
                "requester": { "reference": format!("Practitioner/{}", rng.pick(PRACTITIONERS).id) },
                "dosageInstruction": [{ "text": m.dosage }],
                "reasonCode": [codeable(SNOMED, c.snomed, c.display)],
            }));
        }
    }

    for (n, &ai) in person.allergies.iter().enumerate() {
        let a = &ALLERGIES[ai];
        out.push(json!({
            "resourceType": "AllergyIntolerance",
            "id": format!("{pid}-allergy-{n}"),
            "meta": meta(),
            "clinicalStatus": codeable("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"),
            "verificationStatus": codeable("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed"),
            "category": [a.category],
            "criticality": a.criticality,
            "code": codeable(a.system, a.code, a.display),
            "patient": subject,
            "reaction": [{ "manifestation": [{ "text": a.reaction }] }],
        }));
    }

    // Visits every few months over up to six years, each with vital signs; labs about yearly.
    let hypertensive = person.has("38341003");
    let diabetic = person.has("44054006");
    let hypothyroid = person.has("40930008");
    let lipid = person.has("55822004");
    let ckd = person.has("433144002");
    let height_cm = if person.gender == "female" {
        163.0
    } else {
        177.0
    } + rng.gauss() * 6.0;
    let mut weight = if person.has("414916001") { 104.0 } else { 76.0 } + rng.gauss() * 8.0;
    let mut systolic = if hypertensive { 148.0 } else { 120.0 } + rng.gauss() * 5.0;
    let earliest = (today - Duration::days(6 * 365)).max(person.birth + Duration::days(18 * 365));
    let mut date = earliest + Duration::days(rng.range(0, 60));
    let mut visit = 0;
    let mut last_lab: Option<NaiveDate> = None;
    while date < today - Duration::days(7) {
        let virtual_visit = date.year() >= today.year() - 2 && rng.chance(0.35);
        let eid = format!("{pid}-enc-{visit}");
        let start = at_clinic(date, rng.range(8, 16) as u32, 0, offset);
        let reason = &CONDITIONS[*rng.pick(&person.conditions)];
        out.push(encounter(
            &eid,
            person,
            start,
            virtual_visit,
            reason,
            meta(),
        ));

        weight += rng.gauss() * 1.2;
        systolic += rng.gauss() * 3.0 + if hypertensive { -0.8 } else { 0.1 };
        let sys = systolic + rng.gauss() * 4.0;
        let dia = sys * 0.62 + rng.gauss() * 3.0;
        let when = start.to_rfc3339();
        let vital = |code: &str, display: &str, n: usize| -> Value {
            json!({
                "resourceType": "Observation",
                "id": format!("{eid}-vs-{n}"),
                "meta": { "versionId": "1", "lastUpdated": opts.now.to_rfc3339() },
                "status": "final",
                "category": category("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "Vital Signs"),
                "code": codeable(LOINC, code, display),
                "subject": subject,
                "encounter": { "reference": format!("Encounter/{eid}") },
                "effectiveDateTime": when,
            })
        };
        let mut bp = vital(
            "85354-9",
            "Blood pressure panel with all children optional",
            0,
        );
        bp["component"] = json!([
            { "code": codeable(LOINC, "8480-6", "Systolic blood pressure"), "valueQuantity": quantity(sys, "mm[Hg]", 0) },
            { "code": codeable(LOINC, "8462-4", "Diastolic blood pressure"), "valueQuantity": quantity(dia, "mm[Hg]", 0) },
        ]);
        out.push(bp);
        let mut hr = vital("8867-4", "Heart rate", 1);
        hr["valueQuantity"] = quantity(72.0 + rng.gauss() * 8.0, "/min", 0);
        out.push(hr);
        if !virtual_visit {
            let mut w = vital("29463-7", "Body weight", 2);
            w["valueQuantity"] = quantity(weight, "kg", 1);
            out.push(w);
            let mut bmi = vital("39156-5", "Body mass index (BMI) [Ratio]", 3);
            bmi["valueQuantity"] = quantity(weight / (height_cm / 100.0).powi(2), "kg/m2", 1);
            out.push(bmi);
            let mut temp = vital("8310-5", "Body temperature", 4);
            temp["valueQuantity"] = quantity(36.8 + rng.gauss() * 0.25, "Cel", 1);
            out.push(temp);
        }

        if !virtual_visit && last_lab.is_none_or(|d| (date - d).num_days() > 330) {
            last_lab = Some(date);
            for (n, lab) in LABS.iter().enumerate() {
                let shift = match lab.loinc {
                    "4548-4" if diabetic => 2.0,
                    "2345-7" if diabetic => 45.0,
                    "3016-3" if hypothyroid => 2.5,
                    "18262-6" if lipid => 45.0,
                    "2160-0" if ckd => 0.7,
                    _ => 0.0,
                };
                let value = round_to(
                    (lab.mean + shift + rng.gauss() * lab.sd).max(0.1),
                    lab.decimals,
                );
                out.push(lab_result(
                    &format!("{eid}-lab-{n}"),
                    lab,
                    value,
                    &subject,
                    &eid,
                    &when,
                    meta(),
                ));
            }
        }
        visit += 1;
        date += Duration::days(rng.range(90, 240));
    }
}

fn encounter(
    id: &str,
    person: &Person,
    start: DateTime<FixedOffset>,
    virtual_visit: bool,
    reason: &ConditionDef,
    meta: Value,
) -> Value {
    let (class, class_display, type_code, type_display) = if virtual_visit {
        (
            "VR",
            "virtual",
            "448337001",
            "Telemedicine consultation with patient",
        )
    } else {
        ("AMB", "ambulatory", "185349003", "Encounter for check up")
    };
    json!({
        "resourceType": "Encounter",
        "id": id,
        "meta": meta,
        "status": "finished",
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class, "display": class_display },
        "type": [codeable(SNOMED, type_code, type_display)],
        "subject": person.reference(),
        "period": { "start": start.to_rfc3339(), "end": (start + Duration::minutes(25)).to_rfc3339() },
        "reasonCode": [codeable(SNOMED, reason.snomed, reason.display)],
    })
}

fn lab_result(
    id: &str,
    lab: &LabDef,
    value: f64,
    subject: &Value,
    eid: &str,
    when: &str,
    meta: Value,
) -> Value {
    let (code, display) = if value > lab.high {
        ("H", "High")
    } else if lab.low.is_some_and(|low| value < low) {
        ("L", "Low")
    } else {
        ("N", "Normal")
    };
    let mut range = json!({ "high": quantity(lab.high, lab.unit, lab.decimals) });
    if let Some(low) = lab.low {
        range["low"] = quantity(low, lab.unit, lab.decimals);
    }
    json!({
        "resourceType": "Observation",
        "id": id,
        "meta": meta,
        "status": "final",
        "category": category("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory", "Laboratory"),
        "code": codeable(LOINC, lab.loinc, lab.display),
        "subject": subject,
        "encounter": { "reference": format!("Encounter/{eid}") },
        "effectiveDateTime": when,
        "valueQuantity": quantity(value, lab.unit, lab.decimals),
        "referenceRange": [range],
        "interpretation": [codeable("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", code, display)],
    })
}

/// Today's clinic: one Schedule per practitioner, half-hour Slots from 08:00 to 17:00 with a
/// lunch break, and Appointments in most of them, about two in five virtual. Statuses follow
/// the clock: earlier visits were seen (a few no-shows), current and imminent patients have
/// arrived or wait in the virtual waiting room, later ones are booked or still unconfirmed.
fn schedule_today(
    rng: &mut Rng,
    opts: &DemoOptions,
    patients: &[Person],
    out: &mut Vec<Value>,
    meta: &dyn Fn() -> Value,
) {
    let today = opts.now.date_naive();
    let offset = *opts.now.offset();
    // Each visit of the day is a different patient (the clinic has more patients than slots).
    let mut next_patient = rng
        .sample_indices(patients.len(), patients.len())
        .into_iter();
    for (pi, p) in PRACTITIONERS.iter().enumerate() {
        let schedule_id = format!("{}-schedule-{}", p.id, today.format("%Y%m%d"));
        out.push(json!({
            "resourceType": "Schedule",
            "id": schedule_id,
            "meta": meta(),
            "active": true,
            "actor": [{ "reference": format!("Practitioner/{}", p.id) }],
            "planningHorizon": {
                "start": at_clinic(today, 8, 0, offset).to_rfc3339(),
                "end": at_clinic(today, 17, 0, offset).to_rfc3339(),
            },
        }));
        for half_hour in 0..18u32 {
            let (hour, minute) = (8 + half_hour / 2, (half_hour % 2) * 30);
            if hour == 12 {
                continue; // lunch
            }
            let start = at_clinic(today, hour, minute, offset);
            let end = start + Duration::minutes(30);
            let slot_id = format!("{schedule_id}-slot-{hour:02}{minute:02}");
            let booked = rng.chance(0.75);
            out.push(json!({
                "resourceType": "Slot",
                "id": slot_id,
                "meta": meta(),
                "schedule": { "reference": format!("Schedule/{schedule_id}") },
                "status": if booked { "busy" } else { "free" },
                "start": start.to_rfc3339(),
                "end": end.to_rfc3339(),
            }));
            if !booked {
                continue;
            }
            let person = match next_patient.next() {
                Some(i) => &patients[i],
                None => continue,
            };
            let virtual_visit = rng.chance(0.4);
            let status = status_for(rng, start, end, opts.now, virtual_visit);
            let mut participants = vec![
                json!({ "actor": person.reference(), "required": "required", "status": "accepted" }),
                json!({ "actor": { "reference": format!("Practitioner/{}", p.id), "display": format!("{} {}", p.given, p.family) }, "required": "required", "status": "accepted" }),
            ];
            let appointment_id = format!(
                "demo-appt-{}-{}-{hour:02}{minute:02}",
                today.format("%Y%m%d"),
                pi + 1
            );
            let mut appt = json!({
                "resourceType": "Appointment",
                "id": appointment_id,
                "meta": meta(),
                "status": status,
                "serviceCategory": [codeable("http://terminology.hl7.org/CodeSystem/service-category", "17", "General Practice")],
                "appointmentType": codeable("http://terminology.hl7.org/CodeSystem/v2-0276", "FOLLOWUP", "A follow up visit from a previous appointment"),
                "reasonCode": [{ "text": rng.pick(VISIT_REASONS) }],
                "start": start.to_rfc3339(),
                "end": end.to_rfc3339(),
                "minutesDuration": 30,
                "slot": [{ "reference": format!("Slot/{slot_id}") }],
            });
            if virtual_visit {
                appt["serviceType"] = json!([codeable(
                    SNOMED,
                    "448337001",
                    "Telemedicine consultation with patient"
                )]);
                appt["extension"] = json!([{
                    "url": VIRTUAL_SERVICE_EXTENSION,
                    "extension": [
                        { "url": "channelType", "valueCoding": { "system": "http://hl7.org/fhir/virtual-service-type", "code": "hearth-visit", "display": "Hearth virtual visit" } },
                    ],
                }]);
            } else {
                let room = (pi % 4) + 1;
                participants.push(json!({ "actor": { "reference": format!("Location/demo-room-{room}"), "display": format!("Exam Room {room}") }, "required": "required", "status": "accepted" }));
            }
            appt["participant"] = Value::Array(participants);
            out.push(appt);
        }
    }
}

/// FHIR Appointment.status for a visit given the clock. A virtual patient who has joined the
/// waiting room is `checked-in`; an in-person patient at the desk is `arrived`. Draws the same
/// random numbers whatever the time, so which slots are booked depends on the seed and the
/// date only, never on the hour the demo starts.
fn status_for(
    rng: &mut Rng,
    start: DateTime<FixedOffset>,
    end: DateTime<FixedOffset>,
    now: DateTime<FixedOffset>,
    virtual_visit: bool,
) -> &'static str {
    let (outcome, early, unconfirmed) = (rng.range(0, 99), rng.chance(0.6), rng.chance(0.15));
    let present = if virtual_visit {
        "checked-in"
    } else {
        "arrived"
    };
    if end <= now {
        match outcome {
            0..=79 => "fulfilled",
            80..=91 => "noshow",
            _ => "cancelled",
        }
    } else if start <= now + Duration::minutes(30) {
        if start <= now || early {
            present
        } else {
            "booked"
        }
    } else if unconfirmed {
        "pending"
    } else {
        "booked"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-03-10T11:10:00-05:00").unwrap()
    }

    fn of_type<'a>(all: &'a [Value], ty: &str) -> Vec<&'a Value> {
        all.iter().filter(|r| r["resourceType"] == ty).collect()
    }

    #[test]
    fn same_seed_and_clock_give_identical_resources() {
        let a = generate(&DemoOptions::new(42, now()));
        let b = generate(&DemoOptions::new(42, now()));
        assert_eq!(a, b);
        let c = generate(&DemoOptions::new(43, now()));
        assert_ne!(a, c);
    }

    #[test]
    fn the_days_bookings_depend_on_seed_and_date_not_the_hour() {
        let ids = |hour: u32| -> Vec<String> {
            let at = now().date_naive().and_hms_opt(hour, 0, 0).unwrap();
            let now = now().offset().from_local_datetime(&at).unwrap();
            let all = generate(&DemoOptions::new(5, now));
            of_type(&all, "Appointment")
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(7), ids(16));
    }

    #[test]
    fn ids_are_unique_per_type() {
        let all = generate(&DemoOptions::new(1, now()));
        let mut seen = std::collections::HashSet::new();
        for r in &all {
            let key = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            assert!(seen.insert(key.clone()), "duplicate {key}");
        }
    }

    #[test]
    fn every_patient_is_us_core_shaped_with_history() {
        let all = generate(&DemoOptions::new(DEFAULT_SEED, now()));
        let patients = of_type(&all, "Patient");
        assert_eq!(patients.len(), 48);
        for p in patients {
            assert_eq!(p["identifier"][0]["type"]["coding"][0]["code"], "MR");
            assert!(p["name"][0]["family"].is_string());
            assert!(p["gender"].is_string());
            assert!(p["birthDate"].is_string());
            let reference = format!("Patient/{}", p["id"].as_str().unwrap());
            let vitals = all
                .iter()
                .filter(|r| r["subject"]["reference"] == reference.as_str())
                .filter(|r| r["category"][0]["coding"][0]["code"] == "vital-signs")
                .count();
            assert!(vitals >= 5, "{reference} has {vitals} vital signs");
            assert!(all.iter().any(|r| r["resourceType"] == "Condition"
                && r["subject"]["reference"] == reference.as_str()));
        }
        let labs: Vec<_> = all
            .iter()
            .filter(|r| r["category"][0]["coding"][0]["code"] == "laboratory")
            .collect();
        assert!(!labs.is_empty());
        assert!(labs
            .iter()
            .all(|l| l["referenceRange"][0]["high"]["value"].is_number()));
    }

    #[test]
    fn todays_schedule_mixes_virtual_and_in_person_and_follows_the_clock() {
        let all = generate(&DemoOptions::new(DEFAULT_SEED, now()));
        let appts = of_type(&all, "Appointment");
        assert!(appts.len() >= 20, "only {} appointments", appts.len());
        let virtual_count = appts
            .iter()
            .filter(|a| a.get("extension").is_some())
            .count();
        assert!(virtual_count > 0 && virtual_count < appts.len());
        for a in &appts {
            let start = DateTime::parse_from_rfc3339(a["start"].as_str().unwrap()).unwrap();
            assert_eq!(start.date_naive(), now().date_naive());
            let end = DateTime::parse_from_rfc3339(a["end"].as_str().unwrap()).unwrap();
            let status = a["status"].as_str().unwrap();
            if end <= now() {
                assert!(
                    ["fulfilled", "noshow", "cancelled"].contains(&status),
                    "{status}"
                );
            } else if start > now() + Duration::minutes(30) {
                assert!(["booked", "pending"].contains(&status), "{status}");
            }
        }
        assert_eq!(of_type(&all, "Schedule").len(), PRACTITIONERS.len());
        let mut patients: Vec<_> = appts
            .iter()
            .map(|a| a["participant"][0]["actor"]["reference"].as_str().unwrap())
            .collect();
        patients.sort_unstable();
        patients.dedup();
        assert_eq!(
            patients.len(),
            appts.len(),
            "a patient is booked twice today"
        );
    }
}
