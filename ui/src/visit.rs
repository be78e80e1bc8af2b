//! The visit region: the selected visit's details. Video for virtual visits runs in this
//! pane once the visit service is connected.

use crate::schedule::{modality_label, status_label};
use hearth_ipc::{AppointmentRow, Modality, VisitStatus};
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct VisitProps {
    pub appointment: Option<AppointmentRow>,
}

#[function_component(VisitPane)]
pub fn visit_pane(props: &VisitProps) -> Html {
    let body = match &props.appointment {
        None => html! { <p class="muted">{ "Select a visit in the schedule." }</p> },
        Some(a) => {
            let (status, status_class) = status_label(a.status);
            let (modality, modality_class) = modality_label(a.modality);
            let guidance = match (a.modality, a.status) {
                (Modality::Virtual, VisitStatus::InWaitingRoom) => {
                    "The patient is in the virtual waiting room."
                }
                (Modality::Virtual, _) => {
                    "Video runs here through Hearth's visit service, which is not connected in this session."
                }
                (Modality::InPerson, VisitStatus::Arrived) => "The patient has arrived.",
                (Modality::InPerson, _) => "In-person visit.",
            };
            html! {
                <dl id="visit-details" class="details">
                    <dt>{ "Patient" }</dt><dd id="visit-patient">{ &a.patient_name }</dd>
                    <dt>{ "Time" }</dt><dd>{ format!("{} ({} min)", a.start_label, a.duration_minutes) }</dd>
                    <dt>{ "Clinician" }</dt><dd>{ &a.practitioner_name }</dd>
                    <dt>{ "Kind" }</dt><dd><span class={classes!("badge", modality_class)}>{ modality }</span></dd>
                    <dt>{ "Status" }</dt><dd><span class={classes!("badge", status_class)}>{ status }</span></dd>
                    if let Some(reason) = &a.reason {
                        <dt>{ "Reason" }</dt><dd>{ reason }</dd>
                    }
                    if let Some(location) = &a.location {
                        <dt>{ "Room" }</dt><dd>{ location }</dd>
                    }
                    <dt class="sr-only">{ "Note" }</dt><dd class="guidance">{ guidance }</dd>
                </dl>
            }
        }
    };
    html! {
        <>
            <h2 id="visit-heading">{ "Visit" }</h2>
            { body }
        </>
    }
}
