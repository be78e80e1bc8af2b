//! The unified schedule: FHIR Appointments of one day, virtual and in person, with the live
//! status nurses and clinicians act on.

use crate::clock::Zone;
use crate::fhir::{concept_has, concept_text, human_name, reference_id, Resource};
use crate::store::ClinicalStore;
use crate::CoreError;
use chrono::{DateTime, NaiveDate, Utc};
use hearth_ipc::{AppointmentRow, Modality, PractitionerSummary, ScheduleDay, VisitStatus};
use serde_json::Value;
use std::collections::BTreeMap;

/// The extension that marks a virtual visit in R4 (R5's `Appointment.virtualService`).
pub use hearth_model::fhir::VIRTUAL_SERVICE_EXTENSION;
const SNOMED_TELEMEDICINE: &str = "448337001";

/// Whether an Appointment is a virtual visit: it carries the virtual-service extension, or
/// its service or appointment type says telemedicine (SNOMED 448337001, v3 ActCode `VR`).
pub fn is_virtual(appt: &Resource<'_>) -> bool {
    let has_extension = appt
        .get("extension")
        .and_then(Value::as_array)
        .is_some_and(|exts| {
            exts.iter()
                .any(|e| e.get("url").and_then(Value::as_str) == Some(VIRTUAL_SERVICE_EXTENSION))
        });
    let typed =
        |c: Option<&Value>| concept_has(c, None, SNOMED_TELEMEDICINE) || concept_has(c, None, "VR");
    has_extension
        || typed(appt.get("appointmentType"))
        || appt
            .get("serviceType")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|c| typed(Some(c))))
}

/// Maps FHIR `Appointment.status` to what the schedule shows. A virtual patient who is
/// `checked-in` or `arrived` is in the virtual waiting room. `None`: not shown
/// (`entered-in-error`).
pub fn visit_status(
    appt: &Resource<'_>,
    modality: Modality,
) -> Result<Option<VisitStatus>, CoreError> {
    let status = appt.required_str("status")?;
    let present = match modality {
        Modality::Virtual => VisitStatus::InWaitingRoom,
        Modality::InPerson => VisitStatus::Arrived,
    };
    Ok(Some(match status {
        "proposed" | "pending" | "waitlist" => VisitStatus::Pending,
        "booked" => VisitStatus::Booked,
        "arrived" | "checked-in" => present,
        "fulfilled" => VisitStatus::Fulfilled,
        "noshow" => VisitStatus::NoShow,
        "cancelled" => VisitStatus::Cancelled,
        "entered-in-error" => return Ok(None),
        _ => {
            return Err(appt
                .error("status", "is not an Appointment status code")
                .into())
        }
    }))
}

/// One day's schedule for `practitioner_ids` (empty: all), sorted by start time then
/// practitioner. The day is `date` in the clinic's time `zone` (midnight to midnight, 23 or
/// 25 hours on a daylight-saving change) and times are that zone's wall-clock times.
/// Appointments that cannot be read are left out and described in `data_issues`, so one bad
/// record never hides the rest of the day.
pub fn day(
    store: &dyn ClinicalStore,
    date: NaiveDate,
    zone: Zone,
    practitioner_ids: &[String],
) -> Result<ScheduleDay, CoreError> {
    let hours = zone.day(date);
    let mut rows = Vec::new();
    let mut data_issues = Vec::new();
    let mut names = Names::new(store);
    // Everyone with visits that day, whatever the filter, so the view can offer them all.
    let mut everyone = BTreeMap::new();
    for json in store.all_of_type("Appointment")? {
        match row(&json, &hours, zone, &mut names) {
            Ok(Some(r)) => {
                everyone.insert(r.practitioner_id.clone(), r.practitioner_name.clone());
                if practitioner_ids.is_empty() || practitioner_ids.contains(&r.practitioner_id) {
                    rows.push(r)
                }
            }
            Ok(None) => {}
            Err(e) => data_issues.push(e.to_string()),
        }
    }
    // By instant: on the night clocks go back, 01:15 (second time) comes after 01:30 (first).
    let instant = |r: &AppointmentRow| DateTime::parse_from_rfc3339(&r.start).ok();
    rows.sort_by(|a, b| {
        (instant(a), &a.practitioner_name).cmp(&(instant(b), &b.practitioner_name))
    });
    let mut practitioners: Vec<PractitionerSummary> = everyone
        .into_iter()
        .map(|(practitioner_id, display_name)| PractitionerSummary {
            practitioner_id,
            display_name,
        })
        .collect();
    practitioners.sort_by(|a, b| a.display_name.cmp(&b.display_name));
    Ok(ScheduleDay {
        date: date.to_string(),
        date_label: date.format("%A %-d %B %Y").to_string(),
        practitioners,
        appointments: rows,
        data_issues,
    })
}

fn row(
    json: &Value,
    hours: &std::ops::Range<DateTime<Utc>>,
    zone: Zone,
    names: &mut Names<'_>,
) -> Result<Option<AppointmentRow>, CoreError> {
    let appt = Resource::new(json)?;
    // Proposed, cancelled and waitlisted appointments may lack times (FHIR app-3); they are
    // not on anyone's day.
    if appt.get("start").is_none()
        && matches!(
            appt.str("status"),
            Some("proposed" | "cancelled" | "waitlist")
        )
    {
        return Ok(None);
    }
    let start = appt.required_instant("start")?;
    if !hours.contains(&start.to_utc()) {
        return Ok(None);
    }
    let start = zone.local(&start);
    let end = zone.local(&appt.required_instant("end")?);
    if end < start {
        return Err(appt.error("end", "is before `start`").into());
    }
    let modality = if is_virtual(&appt) {
        Modality::Virtual
    } else {
        Modality::InPerson
    };
    let Some(status) = visit_status(&appt, modality)? else {
        return Ok(None);
    };
    let participants = appt
        .get("participant")
        .and_then(Value::as_array)
        .ok_or_else(|| appt.error("participant", "is missing"))?;
    let actor = |ty: &str| {
        participants
            .iter()
            .map(|p| p.get("actor"))
            .find(|a| reference_id(*a, ty).is_some())
            .flatten()
    };
    let patient = actor("Patient").ok_or_else(|| appt.error("participant", "has no Patient"))?;
    let practitioner =
        actor("Practitioner").ok_or_else(|| appt.error("participant", "has no Practitioner"))?;
    let patient_id = reference_id(Some(patient), "Patient").unwrap_or_default();
    let practitioner_id = reference_id(Some(practitioner), "Practitioner").unwrap_or_default();
    let location = actor("Location").and_then(|l| {
        let id = reference_id(Some(l), "Location")?;
        names
            .location(id)
            .or_else(|| l.get("display").and_then(Value::as_str).map(str::to_string))
    });
    Ok(Some(AppointmentRow {
        appointment_id: appt.id().to_string(),
        start: start.to_rfc3339(),
        end: end.to_rfc3339(),
        start_label: start.format("%H:%M").to_string(),
        duration_minutes: u32::try_from((end - start).num_minutes()).unwrap_or(0),
        patient_name: names
            .patient(patient_id)
            .unwrap_or_else(|| display_or(patient, "Unknown patient")),
        patient_id: patient_id.to_string(),
        practitioner_name: names
            .practitioner(practitioner_id)
            .unwrap_or_else(|| display_or(practitioner, "Unknown clinician")),
        practitioner_id: practitioner_id.to_string(),
        modality,
        status,
        reason: appt
            .get("reasonCode")
            .and_then(|r| r.get(0))
            .and_then(|c| concept_text(Some(c)))
            .or_else(|| appt.str("description").map(str::to_string)),
        location,
    }))
}

fn display_or(reference: &Value, fallback: &str) -> String {
    reference
        .get("display")
        .and_then(Value::as_str)
        .unwrap_or(fallback)
        .to_string()
}

/// Resolves and memoises the names of the people and places a schedule refers to.
struct Names<'s> {
    store: &'s dyn ClinicalStore,
    cache: BTreeMap<(&'static str, String), Option<String>>,
}

impl<'s> Names<'s> {
    fn new(store: &'s dyn ClinicalStore) -> Self {
        Self {
            store,
            cache: BTreeMap::new(),
        }
    }

    fn lookup(&mut self, ty: &'static str, id: &str) -> Option<String> {
        let store = self.store;
        self.cache
            .entry((ty, id.to_string()))
            .or_insert_with(|| {
                let json = store.get(ty, id).ok().flatten()?;
                match ty {
                    "Location" => json.get("name").and_then(Value::as_str).map(str::to_string),
                    "Practitioner" => human_name(json.get("name"), true),
                    _ => human_name(json.get("name"), false),
                }
            })
            .clone()
    }

    fn patient(&mut self, id: &str) -> Option<String> {
        self.lookup("Patient", id)
    }

    fn practitioner(&mut self, id: &str) -> Option<String> {
        self.lookup("Practitioner", id)
    }

    fn location(&mut self, id: &str) -> Option<String> {
        self.lookup("Location", id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use serde_json::json;

    /// A zone five hours behind UTC all year (the tests' times are written at -05:00).
    fn offset() -> Zone {
        Zone::named("Etc/GMT+5").unwrap()
    }

    fn appt(id: &str, start: &str, status: &str, extra: Value) -> Value {
        let mut a = json!({
            "resourceType": "Appointment", "id": id, "status": status,
            "start": start, "end": "2026-03-10T23:59:00-05:00",
            "participant": [
                {"actor": {"reference": "Patient/p1", "display": "From display"}},
                {"actor": {"reference": "Practitioner/d1"}},
            ]
        });
        if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        a
    }

    /// The whole clinic's schedule on the test day.
    fn march_10(s: &MemoryStore) -> ScheduleDay {
        day(
            s,
            NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
            offset(),
            &[],
        )
        .unwrap()
    }

    fn store() -> MemoryStore {
        let s = MemoryStore::new();
        s.upsert(json!({"resourceType": "Patient", "id": "p1", "name": [{"given": ["Ada"], "family": "Lovelace"}]})).unwrap();
        s.upsert(json!({"resourceType": "Practitioner", "id": "d1", "name": [{"prefix": ["Dr."], "given": ["Amara"], "family": "Okafor"}]})).unwrap();
        s
    }

    #[test]
    fn lists_the_days_appointments_in_order_with_names_and_modality() {
        let s = store();
        s.upsert(appt(
            "late",
            "2026-03-10T15:00:00-05:00",
            "booked",
            json!({}),
        ))
        .unwrap();
        s.upsert(appt("early", "2026-03-10T09:00:00-05:00", "checked-in",
            json!({"serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "448337001"}]}]}))).unwrap();
        s.upsert(appt(
            "other-day",
            "2026-03-11T09:00:00-05:00",
            "booked",
            json!({}),
        ))
        .unwrap();
        let d = march_10(&s);
        assert!(d.data_issues.is_empty());
        let ids: Vec<_> = d
            .appointments
            .iter()
            .map(|a| a.appointment_id.as_str())
            .collect();
        assert_eq!(ids, ["early", "late"]);
        let early = &d.appointments[0];
        assert_eq!(early.patient_name, "Ada Lovelace");
        assert_eq!(early.practitioner_name, "Dr. Amara Okafor");
        assert_eq!(early.modality, Modality::Virtual);
        assert_eq!(early.status, VisitStatus::InWaitingRoom);
        assert_eq!(early.start_label, "09:00");
        assert_eq!(d.appointments[1].modality, Modality::InPerson);
        assert_eq!(d.appointments[1].status, VisitStatus::Booked);
        assert_eq!(d.practitioners.len(), 1);
        assert_eq!(d.date_label, "Tuesday 10 March 2026");
    }

    /// A booked one-hour visit of p1 with d1 starting at `start` (UTC).
    fn visit_at(id: &str, start: &str) -> Value {
        let start = DateTime::parse_from_rfc3339(start).unwrap();
        let end = start + chrono::Duration::hours(1);
        appt(
            id,
            &start.to_rfc3339(),
            "booked",
            json!({"end": end.to_rfc3339()}),
        )
    }

    /// (id, wall-clock label, start as shown, minutes) of the day's visits, in order.
    fn shown(day: &ScheduleDay) -> Vec<(&str, &str, &str, u32)> {
        day.appointments
            .iter()
            .map(|a| {
                (
                    a.appointment_id.as_str(),
                    a.start_label.as_str(),
                    a.start.as_str(),
                    a.duration_minutes,
                )
            })
            .collect()
    }

    // The expected wall-clock times are written by hand from the US rules for
    // America/New_York: EST (UTC-5) until 02:00 on 2026-03-08, then EDT (UTC-4) until 02:00
    // on 2026-11-01, then EST again.
    #[test]
    fn a_day_across_a_daylight_saving_change_shows_wall_clock_times() {
        use crate::clock::ManualClock;
        use crate::Workstation;
        use hearth_ipc::{DataMode, ScheduleRequest};
        use std::sync::Arc;

        let s = store();
        for (id, start) in [
            ("spring-before", "2026-03-08T04:30:00Z"), // 23:30 EST on the 7th
            ("spring-midnight", "2026-03-08T05:00:00Z"),
            ("spring-0130", "2026-03-08T06:30:00Z"),
            ("spring-0300", "2026-03-08T07:00:00Z"),
            ("spring-0900", "2026-03-08T13:00:00Z"),
            ("spring-2345", "2026-03-09T03:45:00Z"),
            ("spring-after", "2026-03-09T04:00:00Z"), // 00:00 EDT on the 9th
            ("autumn-before", "2026-11-01T03:59:00Z"), // 23:59 EDT on 31 October
            ("autumn-midnight", "2026-11-01T04:00:00Z"),
            ("autumn-0130-edt", "2026-11-01T05:30:00Z"),
            ("autumn-0115-est", "2026-11-01T06:15:00Z"),
            ("autumn-2359", "2026-11-02T04:59:00Z"),
            ("autumn-after", "2026-11-02T05:00:00Z"), // 00:00 EST on 2 November
        ] {
            s.upsert(visit_at(id, start)).unwrap();
        }
        let zone = Zone::named("America/New_York").unwrap();
        let clock = Arc::new(ManualClock::new(
            DateTime::parse_from_rfc3339("2026-03-08T15:00:00Z").unwrap(),
        ));
        let ws =
            Workstation::with_store(DataMode::Demo { seed: 1 }, Arc::new(s), clock.clone(), zone);

        let spring = ws.schedule(&ScheduleRequest::default()).unwrap();
        assert!(spring.data_issues.is_empty(), "{:?}", spring.data_issues);
        assert_eq!(spring.date, "2026-03-08");
        assert_eq!(
            shown(&spring),
            [
                ("spring-midnight", "00:00", "2026-03-08T00:00:00-05:00", 60),
                ("spring-0130", "01:30", "2026-03-08T01:30:00-05:00", 60),
                ("spring-0300", "03:00", "2026-03-08T03:00:00-04:00", 60),
                ("spring-0900", "09:00", "2026-03-08T09:00:00-04:00", 60),
                ("spring-2345", "23:45", "2026-03-08T23:45:00-04:00", 60),
            ]
        );

        // 23:30 local on the evening before is still the 1st of November by UTC's clock.
        clock.set(DateTime::parse_from_rfc3339("2026-11-02T03:30:00Z").unwrap());
        assert_eq!(ws.status().unwrap().today, "2026-11-01");
        let autumn = ws.schedule(&ScheduleRequest::default()).unwrap();
        assert_eq!(autumn.date, "2026-11-01");
        assert_eq!(
            shown(&autumn),
            [
                ("autumn-midnight", "00:00", "2026-11-01T00:00:00-04:00", 60),
                ("autumn-0130-edt", "01:30", "2026-11-01T01:30:00-04:00", 60),
                ("autumn-0115-est", "01:15", "2026-11-01T01:15:00-05:00", 60),
                ("autumn-2359", "23:59", "2026-11-01T23:59:00-05:00", 60),
            ]
        );
    }

    #[test]
    fn the_demo_clinic_marks_virtual_visits_as_hearth_reads_them() {
        assert_eq!(
            hearth_demo::VIRTUAL_SERVICE_EXTENSION,
            VIRTUAL_SERVICE_EXTENSION
        );
    }

    #[test]
    fn a_bad_appointment_is_reported_and_the_rest_still_shows() {
        let s = store();
        s.upsert(appt(
            "good",
            "2026-03-10T09:00:00-05:00",
            "booked",
            json!({}),
        ))
        .unwrap();
        s.upsert(appt("bad", "not a time", "booked", json!({})))
            .unwrap();
        s.upsert(appt(
            "weird",
            "2026-03-10T10:00:00-05:00",
            "maybe",
            json!({}),
        ))
        .unwrap();
        let d = march_10(&s);
        assert_eq!(d.appointments.len(), 1);
        let msgs = &d.data_issues;
        assert!(
            msgs.contains(&"Appointment/bad: field `start` is not an RFC 3339 instant".to_string()),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(
                &"Appointment/weird: field `status` is not an Appointment status code".to_string()
            ),
            "{msgs:?}"
        );
    }

    #[test]
    fn filters_by_practitioner_and_hides_entered_in_error() {
        let s = store();
        s.upsert(appt("a", "2026-03-10T09:00:00-05:00", "booked", json!({})))
            .unwrap();
        s.upsert(appt(
            "b",
            "2026-03-10T09:30:00-05:00",
            "entered-in-error",
            json!({}),
        ))
        .unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
        assert_eq!(
            day(&s, date, offset(), &["d1".into()])
                .unwrap()
                .appointments
                .len(),
            1
        );
        let other = day(&s, date, offset(), &["d2".into()]).unwrap();
        assert!(other.appointments.is_empty());
        assert_eq!(
            other.practitioners.len(),
            1,
            "the filter still offers every clinician of the day"
        );
    }
}
