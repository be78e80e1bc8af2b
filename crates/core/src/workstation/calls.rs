//! The visit pane's video call: start (as the visit's clinician, with media), the controls,
//! and its end, which records the visit's Encounter.

use super::{check_id, no_visit_service, EncounterRecord, Workstation};
use crate::call::{CallDesk, FrameFeed};
use crate::CoreError;
use hearth_ipc::{CallDevices, CallStartRequest, CallView};
use std::sync::Arc;

impl Workstation {
    fn call_desk(&self) -> Result<Arc<CallDesk>, CoreError> {
        self.open_for_phi()?
            .calls
            .clone()
            .ok_or_else(no_visit_service)
    }

    /// Joins the virtual visit with camera and microphone, as its clinician (the visit
    /// service checks the clinician is on the Appointment). Call from within a tokio runtime.
    ///
    /// In demo mode (no visit service, no EHR) the call is a simulated visit on this machine:
    /// the appointment's patient, played by a second engine with the test pattern, waits to
    /// be admitted.
    pub async fn call_start(&self, request: &CallStartRequest) -> Result<(), CoreError> {
        check_id(&request.appointment_id)?;
        let ready = self.open_for_phi()?;
        let calls = self.call_desk()?;
        match ready.visits.clone() {
            Some(desk) => {
                calls
                    .start(desk.client(), &request.appointment_id, self.zone)
                    .await
            }
            None => {
                let what = format!("Appointment/{}", request.appointment_id);
                let appt = ready
                    .store
                    .get("Appointment", &request.appointment_id)?
                    .ok_or(CoreError::NotFound { what })?;
                // The patient as the appointment names them, else a plain stand-in.
                let name = appt
                    .get("participant")
                    .and_then(|p| p.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.get("actor"))
                    .find(|a| {
                        a.get("reference")
                            .and_then(|r| r.as_str())
                            .is_some_and(|r| r.starts_with("Patient/"))
                    })
                    .and_then(|a| a.get("display"))
                    .and_then(|d| d.as_str())
                    .unwrap_or("Simulated patient")
                    .to_owned();
                calls
                    .start_demo(&request.appointment_id, &name, self.zone)
                    .await
            }
        }
    }

    /// The pre-call device check: the cameras, microphones and speakers this computer has
    /// (listed off the async runtime: the OS calls block), and what the call will use.
    pub async fn call_devices(&self) -> Result<CallDevices, CoreError> {
        self.call_desk()?;
        let lists = tokio::task::spawn_blocking(|| {
            use hearth_media::devices::{cameras, microphones, speakers};
            [cameras(), microphones(), speakers()]
        })
        .await
        .map_err(|_| CoreError::Media("the device check stopped".into()))?;
        let mut problems = Vec::new();
        let mut names = |r: Result<Vec<hearth_media::devices::Device>, _>| match r {
            Ok(list) => list.into_iter().map(|d| d.name).collect(),
            Err(e) => {
                problems.push(format!("{e}"));
                Vec::new()
            }
        };
        let [c, m, s] = lists;
        let (cameras, microphones, speakers) = (names(c), names(m), names(s));
        let devices = self.call_desk()?.uses_devices();
        let using = if devices && !cameras.is_empty() {
            format!("The call uses {}.", cameras[0])
        } else if devices {
            "No camera here: the call sends a moving test pattern (and a tone where there is no \
             microphone)."
                .into()
        } else {
            "This workstation sends a moving test pattern and a tone (its configuration selects \
             synthetic sources)."
                .into()
        };
        Ok(CallDevices {
            cameras,
            microphones,
            speakers,
            using,
            problems,
        })
    }

    /// Lets a participant waiting for the call in.
    pub fn call_admit(&self, participant_id: &str) -> Result<(), CoreError> {
        check_id(participant_id)?;
        self.call_desk()?.admit(participant_id)
    }

    pub fn call_mute(&self, off: bool) -> Result<(), CoreError> {
        self.call_desk()?.set_mic_muted(off)
    }

    pub fn call_camera(&self, off: bool) -> Result<(), CoreError> {
        self.call_desk()?.set_camera_off(off)
    }

    pub fn call_chat(&self, text: &str) -> Result<(), CoreError> {
        self.call_desk()?.chat(text, self.zone)
    }

    /// Leaves the call; the others carry on.
    pub fn call_leave(&self) -> Result<(), CoreError> {
        self.call_desk()?.leave()
    }

    /// Ends the visit for everyone; once the service confirms, the visit's Encounter (who was
    /// there, when) goes to the EHR through the outbox, exactly once.
    pub async fn call_end(&self) -> Result<(), CoreError> {
        let calls = self.call_desk()?;
        let appointment_id = calls.end().await?;
        let note = match self.record_visit_encounter(&appointment_id).await {
            Ok(EncounterRecord::Queued { .. } | EncounterRecord::AlreadyQueued { .. }) => {
                "The visit's Encounter is on its way to the EHR.".to_owned()
            }
            Ok(EncounterRecord::AlreadyAtEhr { .. }) => {
                "The visit's Encounter was already in the EHR.".to_owned()
            }
            Err(e) => format!("The visit's Encounter could not be recorded: {e}"),
        };
        calls.set_encounter_note(note);
        Ok(())
    }

    /// The call as the pane shows it (idle without one).
    pub fn call_view(&self) -> Result<CallView, CoreError> {
        Ok(match self.open_for_phi()?.calls.as_ref() {
            Some(calls) => calls.view(),
            None => CallView::idle(),
        })
    }

    /// The next frame for the pane; `None` when the call is over or the window may no longer
    /// show it (locked, signed out).
    pub async fn next_call_frame(
        &self,
        feed: &mut FrameFeed,
        encoding: hearth_ipc::FrameEncoding,
    ) -> Option<Vec<u8>> {
        let frame = feed.next(encoding).await?;
        self.open_for_phi().ok()?;
        Some(frame)
    }

    /// The pane painted (or dropped) frames up to `seq`.
    pub fn call_frame_ack(&self, seq: u32) -> Result<(), CoreError> {
        self.call_desk()?.ack_frame(seq);
        Ok(())
    }

    /// The call's frames, packed for the pane; `None` without a call.
    pub fn call_frames(&self) -> Result<Option<FrameFeed>, CoreError> {
        Ok(self.call_desk()?.frames())
    }
}
