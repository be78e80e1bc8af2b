//! The visit note's workflow: open (a draft from the visit type's template), autosave, sign
//! (the note, the finished Encounter, the ChargeItems and the billing charge queued in one
//! durable transaction), amend, and correct a charge billing refused.

use super::{actor_of, check_id, Ready, Workstation};
use crate::billing::{self, DftContext};
use crate::fhir::Resource;
use crate::note::{self, Author, NoteBody, Visit};
use crate::{encounter, schedule, CoreError};
use hearth_ipc::{
    AmendNoteRequest, ChargeState, ChargeView, CodeOption, CodeSearchRequest, CorrectChargeRequest,
    Modality, NoteDelivery, NoteDiagnosis, NoteDraft, NoteInserts, NoteRequest, NoteRow, NoteSaved,
    NoteState, NoteVersion, NoteView, SaveNoteRequest, ServiceLine, SignNoteRequest,
};
use hearth_model::writes::{create_write, name_key, update_write};
use hearth_store::{
    ChargeRow, ChargeRowState, NoteVersionRow, OutboxState, OutboxWrite, ResourceRow, Signing,
    Store,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// What a charge row's body holds (the view's lines and diagnoses).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChargeBody {
    lines: Vec<ServiceLine>,
    diagnoses: Vec<NoteDiagnosis>,
    place_of_service: String,
}

/// A visit as the note needs it, read from the store.
struct VisitRecord {
    visit: Visit,
    appointment: Value,
    patient: Value,
    /// The EHR's Encounter for the appointment, when stored here.
    encounter: Option<Value>,
    visit_type: Option<String>,
}

/// The key of a signed version's DocumentReference: the visit, the version, and this
/// signing's own random id, so that two workstations signing "version 1" of one visit make two
/// notes rather than one silently standing for the other (a retry of this signing reuses the
/// key it stored).
fn document_key(appointment_id: &str, version: u32, signing: &str) -> String {
    name_key(&format!(
        "urn:hearth:visit-note:Appointment/{appointment_id}/{version}/{signing}"
    ))
}

/// A random id for one signing (RFC 9562 version 4 layout).
fn signing_id() -> Result<String, CoreError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| CoreError::Unavailable(format!("the system random source ({e})")))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(name_key(&format!("urn:hearth:signing:{hex}")))
}

/// The key of the ChargeItem of line `i` of a charge.
fn charge_item_key(charge_id: &str, i: usize) -> String {
    name_key(&format!("urn:hearth:charge-item:{charge_id}/{i}"))
}

fn json_error(what: &str, e: &serde_json::Error) -> CoreError {
    CoreError::Store(format!("the stored {what} cannot be read: {e}"))
}

impl Workstation {
    /// The store the notes are kept in: the encrypted profile store with an EHR; in demo
    /// mode a throwaway encrypted store (nothing is sent anywhere).
    fn note_desk(&self) -> Result<(&Ready, Arc<Store>), CoreError> {
        let ready = self.open_for_phi()?;
        if let Some(ehr) = &ready.ehr {
            return Ok((ready, ehr.store.clone()));
        }
        let (_, store) = ready
            .demo_notes
            .get_or_init(|| {
                let dir = tempfile::Builder::new()
                    .prefix("hearth-demo-notes-")
                    .tempdir()
                    .map_err(|e| {
                        CoreError::Store(format!("cannot make the demo's notes folder: {e}"))
                    })?;
                let key = hearth_store::DbKey::generate()?;
                let store = Store::open(&dir.path().join("notes.db"), &key)?;
                Ok((dir, Arc::new(store)))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        Ok((ready, store.clone()))
    }

    /// The visit, for a user who may work on its note.
    fn visit_record(&self, ready: &Ready, appointment_id: &str) -> Result<VisitRecord, CoreError> {
        let record = self.visit_record_unchecked(ready, appointment_id)?;
        self.check_on_visit(ready, &record.appointment)?;
        Ok(record)
    }

    fn visit_record_unchecked(
        &self,
        ready: &Ready,
        appointment_id: &str,
    ) -> Result<VisitRecord, CoreError> {
        check_id(appointment_id)?;
        let what = format!("Appointment/{appointment_id}");
        let appointment = ready
            .store
            .get("Appointment", appointment_id)?
            .ok_or(CoreError::NotFound { what })?;
        let patient_id = encounter::patient_of(&appointment)?;
        let patient =
            ready
                .store
                .get("Patient", &patient_id)?
                .ok_or_else(|| CoreError::NotFound {
                    what: format!("Patient/{patient_id}"),
                })?;
        let r = Resource::new(&appointment)?;
        let modality = if schedule::is_virtual(&r) {
            Modality::Virtual
        } else {
            Modality::InPerson
        };
        let key = encounter::encounter_key(appointment_id);
        let encounters = ready.store.for_patient("Encounter", &patient_id)?;
        let stored = encounter::stored_for_appointment(&encounters, appointment_id, &key).cloned();
        let visit_type = r
            .str("appointmentType.coding.0.code")
            .or_else(|| r.str("appointmentType.text"))
            .map(str::to_string);
        Ok(VisitRecord {
            visit: Visit {
                appointment_id: appointment_id.to_string(),
                patient_id,
                modality,
                start: r.str("start").map(str::to_string),
                end: r.str("end").map(str::to_string),
                encounter: stored
                    .as_ref()
                    .and_then(|e| e.get("id"))
                    .and_then(Value::as_str)
                    .map(|id| format!("Encounter/{id}")),
                encounter_key: key,
            },
            appointment: appointment.clone(),
            patient,
            encounter: stored,
            visit_type,
        })
    }

    /// Only a clinician of the visit writes its note and bills it: with sign-on, the user's
    /// fhirUser must be a Practitioner (or PractitionerRole) among the Appointment's
    /// participants (as the visit service requires to host it). Without sign-on (an EHR on
    /// this machine only, for tools and tests) there is no user to check.
    fn check_on_visit(&self, ready: &Ready, appointment: &Value) -> Result<(), CoreError> {
        let Some(signon) = &ready.signon else {
            return Ok(());
        };
        let refused = || {
            CoreError::InvalidInput(
                "only a clinician of this visit (a participant of its appointment) may write, \
                 sign or bill its note"
                    .into(),
            )
        };
        // A cancelled or voided visit is not documented or billed from Hearth.
        if matches!(
            appointment.get("status").and_then(Value::as_str),
            Some("cancelled" | "entered-in-error")
        ) {
            return Err(CoreError::InvalidInput(
                "this visit was cancelled or entered in error: it has no note to sign".into(),
            ));
        }
        let base = ready.ehr.as_ref().map(|e| e.fhir_base_url.as_str());
        let user = signon
            .user()
            .and_then(|u| u.fhir_user)
            .and_then(|u| local_reference(&u, base))
            .ok_or_else(refused)?;
        if !(user.starts_with("Practitioner/") || user.starts_with("PractitionerRole/")) {
            return Err(refused());
        }
        let on = appointment
            .get("participant")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("status").and_then(Value::as_str) != Some("declined"))
            .filter_map(|p| p.pointer("/actor/reference").and_then(Value::as_str))
            .filter_map(|r| local_reference(r, base))
            .any(|r| r == user);
        if on {
            Ok(())
        } else {
            Err(refused())
        }
    }

    fn author(&self, ready: &Ready) -> Author {
        match ready.signon.as_ref().and_then(|s| s.user()) {
            Some(u) => Author {
                reference: u.fhir_user,
                display: u.display_name,
            },
            None => Author {
                reference: None,
                display: "Hearth (no sign-in)".into(),
            },
        }
    }

    /// The template for a visit: by its type, else by its modality, else empty sections.
    fn template_for(&self, ready: &Ready, record: &VisitRecord) -> (String, note::NoteTemplate) {
        let by_modality = match record.visit.modality {
            Modality::Virtual => "virtual",
            Modality::InPerson => "in_person",
        };
        for name in record
            .visit_type
            .iter()
            .map(String::as_str)
            .chain([by_modality])
        {
            if let Some(t) = ready.notes.templates.get(name) {
                return (name.to_string(), t.clone());
            }
        }
        ("SOAP".into(), note::NoteTemplate::default())
    }

    /// Opens the visit's note: the draft being written (made from the template on first
    /// open), or the signed note, with its versions, charges and what can be inserted.
    pub fn note_open(&self, request: &NoteRequest) -> Result<NoteView, CoreError> {
        let (ready, store) = self.note_desk()?;
        let record = self.visit_record(ready, &request.appointment_id)?;
        ready.codes.preload();
        self.note_view(ready, &store, &record)
    }

    fn note_view(
        &self,
        ready: &Ready,
        store: &Store,
        record: &VisitRecord,
    ) -> Result<NoteView, CoreError> {
        let appointment_id = &record.visit.appointment_id;
        let versions = store.note_versions(appointment_id)?;
        let draft = store.note_draft(appointment_id)?;
        let (state, body, saved_at) = match (&draft, versions.last()) {
            (Some(d), _) => {
                let body: NoteBody =
                    serde_json::from_str(&d.body).map_err(|e| json_error("note draft", &e))?;
                let state = if body.amends.is_some() {
                    NoteState::Amending
                } else {
                    NoteState::Draft
                };
                (state, body, Some(d.saved_at.clone()))
            }
            (None, Some(v)) => {
                let body: NoteBody =
                    serde_json::from_str(&v.body).map_err(|e| json_error("signed note", &e))?;
                (NoteState::Signed, body, None)
            }
            (None, None) => {
                let (name, template) = self.template_for(ready, record);
                let body = NoteBody {
                    draft: NoteDraft {
                        appointment_id: appointment_id.clone(),
                        sections: template.sections(),
                        patient_at_home: true,
                        ..NoteDraft::default()
                    },
                    template: name,
                    amends: None,
                };
                (NoteState::Draft, body, None)
            }
        };
        let (modifiers, place) =
            billing::visit_billing(record.visit.modality, body.draft.patient_at_home);
        let documents = ready
            .store
            .for_patient("DocumentReference", &record.visit.patient_id)?;
        let versions = versions
            .iter()
            .map(|v| {
                Ok(NoteVersion {
                    version: v.version,
                    signed_at: v.signed_at.clone(),
                    signed_by: v.signed_by.clone(),
                    delivery: delivery(store, &documents, &v.write_key)?,
                })
            })
            .collect::<Result<Vec<_>, CoreError>>()?;
        let charges = store
            .charges_for(appointment_id)?
            .into_iter()
            .map(charge_view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NoteView {
            appointment_id: appointment_id.clone(),
            patient_id: record.visit.patient_id.clone(),
            modality: record.visit.modality,
            template: body.template,
            state,
            draft: body.draft,
            visit_modifiers: modifiers.iter().map(|m| (*m).to_string()).collect(),
            place_of_service: place.to_string(),
            versions,
            charges,
            inserts: self.inserts(ready, &record.visit.patient_id)?,
            saved_at,
            billing_configured: ready.billing.is_some(),
        })
    }

    /// The chart lines a clinician can insert: the latest of each vital sign, the active
    /// problems, the active medications.
    fn inserts(&self, ready: &Ready, patient_id: &str) -> Result<NoteInserts, CoreError> {
        let chart = crate::chart::chart(ready.store.as_ref(), patient_id, self.today())?;
        Ok(NoteInserts {
            vitals: chart
                .vitals
                .iter()
                .filter_map(|s| {
                    let p = s.points.last()?;
                    Some(format!(
                        "{}: {} {} ({})",
                        s.label,
                        round(p.value),
                        s.unit,
                        p.date
                    ))
                })
                .collect(),
            problems: chart
                .problems
                .iter()
                .map(|p| match &p.code {
                    Some(code) => format!("{} ({code})", p.display),
                    None => p.display.clone(),
                })
                .collect(),
            medications: chart
                .medications
                .iter()
                .map(|m| match &m.dosage {
                    Some(d) => format!("{}: {d}", m.display),
                    None => m.display.clone(),
                })
                .collect(),
        })
    }

    /// Saves the draft (every pause of the editor): durable before the answer; an older
    /// revision than the one stored changes nothing. A signed note is not a draft: amend it.
    pub fn note_save(&self, request: &SaveNoteRequest) -> Result<NoteSaved, CoreError> {
        let (ready, store) = self.note_desk()?;
        let draft = &request.draft;
        let record = self.visit_record(ready, &draft.appointment_id)?;
        let (template, amends) = match store.note_draft(&draft.appointment_id)? {
            Some(d) => {
                let body: NoteBody =
                    serde_json::from_str(&d.body).map_err(|e| json_error("note draft", &e))?;
                (body.template, body.amends)
            }
            None => (self.template_for(ready, &record).0, None),
        };
        let body = NoteBody {
            draft: draft.clone(),
            template,
            amends,
        };
        let text = serde_json::to_string(&body).map_err(|e| json_error("note draft", &e))?;
        let revision = i64::try_from(draft.revision)
            .map_err(|_| CoreError::InvalidInput("the draft's revision is out of range".into()))?;
        // The store refuses a draft beside a signed version unless it amends the latest (a
        // save racing the signature must not bring back an unsignable draft).
        let saved = store
            .save_note_draft(&draft.appointment_id, revision, &text, amends)
            .map_err(|e| match e {
                hearth_store::StoreError::NoteSigned => {
                    CoreError::InvalidInput("the note is signed: amend it to change it".into())
                }
                other => other.into(),
            })?;
        Ok(NoteSaved {
            saved_at: saved.saved_at,
            revision: u64::try_from(saved.revision).unwrap_or_default(),
        })
    }

    /// Starts an amendment: a draft from the signed note's text, signed as the next version.
    pub fn note_amend(&self, request: &AmendNoteRequest) -> Result<NoteView, CoreError> {
        let (ready, store) = self.note_desk()?;
        let record = self.visit_record(ready, &request.appointment_id)?;
        let versions = store.note_versions(&request.appointment_id)?;
        let last = versions.last().ok_or_else(|| {
            CoreError::InvalidInput("the note is not signed yet: there is nothing to amend".into())
        })?;
        if store.note_draft(&request.appointment_id)?.is_none() {
            let mut body: NoteBody =
                serde_json::from_str(&last.body).map_err(|e| json_error("signed note", &e))?;
            body.amends = Some(last.version);
            body.draft.revision = 0;
            let text = serde_json::to_string(&body).map_err(|e| json_error("note draft", &e))?;
            store.save_note_draft(&request.appointment_id, 0, &text, body.amends)?;
        }
        self.note_view(ready, &store, &record)
    }

    /// Signs the note (or its amendment). Refused without the author's attestation. The
    /// DocumentReference, for the first version the finished Encounter, one ChargeItem per
    /// service line and the charge for billing, and for an amendment the earlier version
    /// marked superseded, are queued with the signed version in one durable transaction,
    /// each write under a key derived from the visit and version: signing again, or after a
    /// crash, makes nothing twice. Works offline; the sync engine sends them.
    pub fn note_sign(&self, request: &SignNoteRequest) -> Result<NoteView, CoreError> {
        let (ready, store) = self.note_desk()?;
        if !request.attest {
            return Err(CoreError::InvalidInput(
                "signing needs your attestation that the note is accurate and complete".into(),
            ));
        }
        let mut draft = request.draft.clone();
        let record = self.visit_record(ready, &draft.appointment_id)?;
        let appointment_id = record.visit.appointment_id.clone();
        let versions = store.note_versions(&appointment_id)?;
        let stored = store.note_draft(&appointment_id)?;
        let amends = match &stored {
            Some(d) => {
                serde_json::from_str::<NoteBody>(&d.body)
                    .map_err(|e| json_error("note draft", &e))?
                    .amends
            }
            None => None,
        };
        if let (Some(last), None) = (versions.last(), amends) {
            // Signed already: the same text again is the same signature (a second click).
            let body: NoteBody =
                serde_json::from_str(&last.body).map_err(|e| json_error("signed note", &e))?;
            if same_note(&body.draft, &draft) {
                return self.note_view(ready, &store, &record);
            }
            return Err(CoreError::InvalidInput(
                "the note is signed: amend it to change it".into(),
            ));
        }
        let (modifiers, place) =
            billing::visit_billing(record.visit.modality, draft.patient_at_home);
        billing::check_note(&mut draft, &modifiers)?;
        ready
            .codes
            .check_codes(&mut draft.diagnoses, &mut draft.lines)?;
        if note::render_text(&draft).trim().is_empty() {
            return Err(CoreError::InvalidInput("the note is empty".into()));
        }
        let version = u32::try_from(versions.len() + 1).unwrap_or(u32::MAX);
        let author = self.author(ready);
        let signed_at = self
            .clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let signing = signing_id()?;
        let doc_key = document_key(&appointment_id, version, &signing);
        let mut writes: Vec<(Option<ResourceRow>, OutboxWrite)> = Vec::new();
        let mut replaces = None;
        if let Some(prev) = amends.and_then(|v| versions.iter().find(|x| x.version == v)) {
            let documents = ready
                .store
                .for_patient("DocumentReference", &record.visit.patient_id)?;
            match documents
                .iter()
                .find(|d| encounter::written_with(d, &prev.write_key))
            {
                Some(earlier) => {
                    let mut superseded = earlier.clone();
                    superseded["status"] = Value::String("superseded".into());
                    let key = name_key(&format!(
                        "urn:hearth:visit-note-superseded:{}",
                        prev.write_key
                    ));
                    let (row, write) = update_write(&key, superseded)?;
                    writes.push((Some(row), write));
                    replaces = Some((
                        earlier
                            .get("id")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        prev.write_key.clone(),
                    ));
                }
                // The EHR refused the earlier version: it is not in the chart, so this one
                // replaces it by its identifier only, with nothing to mark superseded.
                None if store
                    .outbox_entry_by_key(&prev.write_key)?
                    .is_some_and(|e| {
                        matches!(e.state, OutboxState::Failed | OutboxState::Discarded)
                    }) =>
                {
                    replaces = Some((None, prev.write_key.clone()));
                }
                None => {
                    return Err(CoreError::InvalidInput(format!(
                        "version {} of the note has not reached the EHR yet (it is queued): \
                         amend it once it has, so that the EHR can mark it superseded",
                        prev.version
                    )))
                }
            }
        }
        let document = note::document_reference(
            &draft,
            &record.visit,
            &author,
            &signed_at,
            replaces
                .as_ref()
                .map(|(id, key)| (id.as_deref(), key.as_str())),
        );
        writes.push((None, create_write(&doc_key, document)?));
        let mut charge = None;
        if version == 1 {
            match &record.encounter {
                Some(e) if e.get("status").and_then(Value::as_str) != Some("finished") => {
                    let key = name_key(&format!(
                        "urn:hearth:visit-note-encounter:Appointment/{appointment_id}"
                    ));
                    let finished = note::finished_encounter(Some(e), &record.visit, &author);
                    let (row, write) = update_write(&key, finished)?;
                    writes.push((Some(row), write));
                }
                Some(_) => {}
                None => {
                    let made = note::finished_encounter(None, &record.visit, &author);
                    writes.push((None, create_write(&record.visit.encounter_key, made)?));
                }
            }
        }
        // The visit is billed once: by the first signed version with services (an amendment
        // adds the charge when the note had none; later changes to a charge are corrections).
        if !draft.lines.is_empty() && store.charges_for(&appointment_id)?.is_empty() {
            // The visit's charge, named by the visit alone: two workstations signing it make
            // one control id and one set of ChargeItems (billing and the EHR drop the repeat;
            // a receiver that sees other bytes under it refuses it, and that shows).
            let charge_id = name_key(&format!("urn:hearth:charge:Appointment/{appointment_id}"));
            for (i, line) in draft.lines.iter().enumerate() {
                let item = note::charge_item(
                    line,
                    &draft.diagnoses,
                    place,
                    &record.visit,
                    &author,
                    &signed_at,
                );
                writes.push((None, create_write(&charge_item_key(&charge_id, i), item)?));
            }
            charge = Some(self.charge_row(
                ready,
                &record,
                &author,
                charge_id,
                None,
                &draft.lines,
                &draft.diagnoses,
                place,
            )?);
        }
        let body = NoteBody {
            draft,
            template: self.template_for(ready, &record).0,
            amends,
        };
        let version_row = NoteVersionRow {
            appointment_id: appointment_id.clone(),
            version,
            patient_id: record.visit.patient_id.clone(),
            body: serde_json::to_string(&body).map_err(|e| json_error("signed note", &e))?,
            signed_at,
            signed_by: author.display.clone(),
            write_key: doc_key,
        };
        store.sign_note(&Signing {
            version: &version_row,
            writes: &writes,
            charge: charge.as_ref(),
            actor: &actor_of(ready),
        })?;
        if let Some(sync) = self.sync.get() {
            sync.nudge();
        }
        self.notes_pulse.send_modify(|n| *n += 1);
        self.note_view(ready, &store, &record)
    }

    /// A charge row: the DFT^P03 built now (its bytes and control id fixed for every retry),
    /// or, without a billing interface, kept as not sent.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per kind of charge"
    )]
    fn charge_row(
        &self,
        ready: &Ready,
        record: &VisitRecord,
        author: &Author,
        charge_id: String,
        replaces: Option<String>,
        lines: &[ServiceLine],
        diagnoses: &[NoteDiagnosis],
        place: &str,
    ) -> Result<ChargeRow, CoreError> {
        let control_id = billing::control_id(&charge_id);
        let now = self.clock.now();
        let (message, state, reason) = match &ready.billing {
            Some(config) => {
                let practitioner = author
                    .reference
                    .as_deref()
                    .and_then(|r| r.strip_prefix("Practitioner/"))
                    .and_then(|id| ready.store.get("Practitioner", id).ok().flatten());
                let built = note::billing_patient(&record.patient, config.mrn_system.as_deref())
                    .and_then(|patient| {
                        billing::dft_message(&DftContext {
                            config,
                            control_id: &control_id,
                            at: now,
                            zone: self.zone,
                            patient: &patient,
                            visit: &record.visit,
                            author,
                            practitioner: practitioner.as_ref(),
                            lines,
                            diagnoses,
                            place_of_service: place,
                        })
                    });
                match built {
                    Ok(message) => (message, ChargeRowState::Queued, None),
                    // The note is signed whatever the charge's data: a charge Hearth cannot
                    // write as HL7 waits, refused with the reason, for correction.
                    Err(e) => (
                        String::new(),
                        ChargeRowState::Refused,
                        Some(format!(
                            "Hearth could not write this charge for billing: {e}"
                        )),
                    ),
                }
            }
            None => (String::new(), ChargeRowState::NotSent, None),
        };
        let body = ChargeBody {
            lines: lines.to_vec(),
            diagnoses: diagnoses.to_vec(),
            place_of_service: place.to_string(),
        };
        Ok(ChargeRow {
            charge_id,
            appointment_id: record.visit.appointment_id.clone(),
            control_id,
            body: serde_json::to_string(&body).map_err(|e| json_error("charge", &e))?,
            message,
            state,
            attempts: 0,
            next_attempt_ms: 0,
            reason,
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            acked_at: None,
            replaces,
        })
    }

    /// A charge billing refused, corrected: sent again as a new message (a new control id);
    /// the refused one is kept, marked corrected.
    pub fn charge_correct(&self, request: &CorrectChargeRequest) -> Result<NoteView, CoreError> {
        let (ready, store) = self.note_desk()?;
        let record = self.visit_record(ready, &request.appointment_id)?;
        let old = store
            .charge(&request.charge_id)?
            .filter(|c| c.appointment_id == request.appointment_id)
            .ok_or_else(|| CoreError::NotFound {
                what: format!("charge {}", request.charge_id),
            })?;
        if old.state != ChargeRowState::Refused {
            return Err(CoreError::InvalidInput(
                "only a charge billing refused can be corrected".into(),
            ));
        }
        let body: ChargeBody =
            serde_json::from_str(&old.body).map_err(|e| json_error("charge", &e))?;
        let patient_at_home = body.place_of_service != "02";
        let (modifiers, place) = billing::visit_billing(record.visit.modality, patient_at_home);
        let mut draft = NoteDraft {
            appointment_id: request.appointment_id.clone(),
            diagnoses: request.diagnoses.clone(),
            lines: request.lines.clone(),
            patient_at_home,
            ..NoteDraft::default()
        };
        billing::check_note(&mut draft, &modifiers)?;
        ready
            .codes
            .check_codes(&mut draft.diagnoses, &mut draft.lines)?;
        if draft.lines.is_empty() {
            return Err(CoreError::InvalidInput(
                "a charge needs at least one service".into(),
            ));
        }
        let author = self.author(ready);
        let charge_id = name_key(&format!("urn:hearth:charge-correction:{}", old.charge_id));
        // The EHR's ChargeItems follow billing: those of the refused charge become
        // entered-in-error (R4 ChargeItemStatus: "the charge item has been entered in error
        // and should not be processed for billing"), the corrected lines new ones.
        let items = ready
            .store
            .for_patient("ChargeItem", &record.visit.patient_id)?;
        let mut writes: Vec<(Option<ResourceRow>, OutboxWrite)> = Vec::new();
        for i in 0..body.lines.len() {
            let key = charge_item_key(&old.charge_id, i);
            let Some(item) = items.iter().find(|x| encounter::written_with(x, &key)) else {
                return Err(CoreError::InvalidInput(
                    "the EHR has not received this charge's items yet: correct it once the \
                     visit's records are sent"
                        .into(),
                ));
            };
            let mut voided = item.clone();
            voided["status"] = Value::String("entered-in-error".into());
            let (row, write) = update_write(
                &name_key(&format!("urn:hearth:charge-item-void:{key}")),
                voided,
            )?;
            writes.push((Some(row), write));
        }
        let signed_at = self
            .clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (i, line) in draft.lines.iter().enumerate() {
            let key = charge_item_key(&charge_id, i);
            let item = note::charge_item(
                line,
                &draft.diagnoses,
                place,
                &record.visit,
                &author,
                &signed_at,
            );
            writes.push((None, create_write(&key, item)?));
        }
        let corrected = self.charge_row(
            ready,
            &record,
            &author,
            charge_id,
            Some(old.charge_id.clone()),
            &draft.lines,
            &draft.diagnoses,
            place,
        )?;
        store.correct_charge(&corrected, &writes, &actor_of(ready))?;
        if let Some(sync) = self.sync.get() {
            sync.nudge();
        }
        self.notes_pulse.send_modify(|n| *n += 1);
        self.note_view(ready, &store, &record)
    }

    /// Searches the diagnosis (ICD-10-CM) or service code tables.
    pub fn code_search(&self, request: &CodeSearchRequest) -> Result<Vec<CodeOption>, CoreError> {
        let ready = self.open_for_phi()?;
        let limit = request.limit.clamp(1, 100) as usize;
        // A code or a few words: a pasted page is not a search (each word scans the table).
        if request.query.chars().count() > 100 || request.query.split_whitespace().count() > 8 {
            return Err(CoreError::InvalidInput(
                "a code search is a code or up to 8 words (100 characters)".into(),
            ));
        }
        ready.codes.search(request.kind, &request.query, limit)
    }

    /// Signed notes of this patient not yet in the EHR's chart (the chart shows them at once).
    pub(super) fn waiting_notes(
        &self,
        ready: &Ready,
        patient_id: &str,
    ) -> Result<Vec<NoteRow>, CoreError> {
        let (store, waiting) = match (&ready.ehr, ready.demo_notes.get()) {
            (Some(ehr), _) => (ehr.store.clone(), "signed, waiting to reach the EHR"),
            (None, Some(Ok((_, store)))) => {
                (store.clone(), "signed (demo: kept on this computer only)")
            }
            _ => return Ok(Vec::new()),
        };
        let mut rows = Vec::new();
        let versions = store.patient_note_versions(patient_id)?;
        for v in &versions {
            // A later version of the same note replaces this one.
            if versions
                .iter()
                .any(|o| o.appointment_id == v.appointment_id && o.version > v.version)
            {
                continue;
            }
            let sent = store
                .outbox_entry_by_key(&v.write_key)?
                .is_some_and(|e| e.state == OutboxState::Sent);
            if sent {
                continue;
            }
            let body: NoteBody =
                serde_json::from_str(&v.body).map_err(|e| json_error("signed note", &e))?;
            rows.push(NoteRow {
                date: v.signed_at.clone(),
                title: "Progress note".into(),
                author: Some(v.signed_by.clone()),
                text: Some(note::render_text(&body.draft)),
                status: waiting.into(),
                document_id: None,
            });
        }
        Ok(rows)
    }
}

/// A reference as `Type/id` on this EHR: relative as it is, absolute only under the EHR's own
/// base (another server's `.../Practitioner/x` is not this EHR's), a version-specific one
/// (`/_history/n`) as the resource it names; anything else none.
fn local_reference(reference: &str, base: Option<&str>) -> Option<String> {
    let r = reference.split("/_history/").next().unwrap_or(reference);
    let r = if r.contains("://") {
        let base = base?.trim_end_matches('/');
        r.strip_prefix(base)?.strip_prefix('/')?
    } else {
        r
    };
    let (kind, id) = r.split_once('/')?;
    let well_formed =
        !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphabetic()) && hearth_fhir::is_id(id);
    well_formed.then(|| r.to_string())
}

/// Whether two drafts are the same note (a second click on Sign).
fn same_note(a: &NoteDraft, b: &NoteDraft) -> bool {
    a.sections == b.sections
        && a.diagnoses == b.diagnoses
        && a.lines == b.lines
        && a.patient_at_home == b.patient_at_home
}

/// Where a signed version is: in the EHR's chart (its DocumentReference stored here, made
/// by this write), refused by the EHR, or queued.
fn delivery(store: &Store, documents: &[Value], key: &str) -> Result<NoteDelivery, CoreError> {
    if let Some(doc) = documents.iter().find(|d| encounter::written_with(d, key)) {
        return Ok(NoteDelivery::InChart {
            document_id: doc
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        });
    }
    Ok(match store.outbox_entry_by_key(key)? {
        Some(e) if e.state == OutboxState::Failed => NoteDelivery::Refused {
            reason: e
                .last_error
                .unwrap_or_else(|| "the EHR refused the note".into()),
        },
        _ => NoteDelivery::Queued,
    })
}

fn charge_view(c: ChargeRow) -> Result<ChargeView, CoreError> {
    let body: ChargeBody = serde_json::from_str(&c.body).map_err(|e| json_error("charge", &e))?;
    Ok(ChargeView {
        charge_id: c.charge_id,
        control_id: c.control_id,
        lines: body.lines,
        diagnoses: body.diagnoses,
        place_of_service: body.place_of_service,
        state: match c.state {
            ChargeRowState::Queued => ChargeState::Queued,
            ChargeRowState::Accepted => ChargeState::Accepted,
            ChargeRowState::Refused => ChargeState::Refused,
            ChargeRowState::Corrected => ChargeState::Corrected,
            ChargeRowState::NotSent => ChargeState::NotSent,
        },
        reason: c.reason,
        attempts: c.attempts,
        acknowledged_at: c.acked_at,
    })
}

/// A vital sign's value as a clinician reads it: whole numbers whole, else one decimal.
fn round(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_this_ehrs_relative_ones() {
        let base = Some("https://ehr.example.org/fhir/r4/");
        for (given, local) in [
            ("Practitioner/x", Some("Practitioner/x")),
            (
                "https://ehr.example.org/fhir/r4/Practitioner/x",
                Some("Practitioner/x"),
            ),
            ("Practitioner/x/_history/3", Some("Practitioner/x")),
            ("https://evil.example/fhir/Practitioner/x", None),
            ("https://ehr.example.org/fhir/r4-other/Practitioner/x", None),
            ("PractitionerRole/Practitioner/x", None),
            ("Practitioner/", None),
            ("x", None),
        ] {
            assert_eq!(local_reference(given, base).as_deref(), local, "{given}");
        }
        assert_eq!(
            local_reference("https://ehr.example.org/fhir/r4/Practitioner/x", None),
            None
        );
    }
}
