//! The schedule region: one day's visits, virtual and in person, with live status; one
//! clinician's day or the shared view of all.

use crate::{error_notice, Load};
use hearth_ipc::{AppointmentRow, Modality, ScheduleDay, VisitStatus};
use wasm_bindgen::JsCast;
use web_sys::HtmlSelectElement;
use yew::prelude::*;

pub fn status_label(s: VisitStatus) -> (&'static str, &'static str) {
    match s {
        VisitStatus::Pending => ("Unconfirmed", "pending"),
        VisitStatus::Booked => ("Booked", "booked"),
        VisitStatus::Arrived => ("Arrived", "arrived"),
        VisitStatus::InWaitingRoom => ("In waiting room", "waiting"),
        VisitStatus::Fulfilled => ("Seen", "fulfilled"),
        VisitStatus::NoShow => ("No-show", "noshow"),
        VisitStatus::Cancelled => ("Cancelled", "cancelled"),
    }
}

pub fn modality_label(m: Modality) -> (&'static str, &'static str) {
    match m {
        Modality::Virtual => ("Virtual", "virtual"),
        Modality::InPerson => ("In person", "inperson"),
    }
}

#[derive(Properties, PartialEq)]
pub struct ScheduleProps {
    pub day: Load<ScheduleDay>,
    pub selected: Option<String>,
    pub practitioner: Option<String>,
    pub on_select: Callback<AppointmentRow>,
    pub on_filter: Callback<Option<String>>,
}

#[function_component(ScheduleView)]
pub fn schedule_view(props: &ScheduleProps) -> Html {
    let body = match &props.day {
        Load::Loading => html! { <p class="muted">{ "Loading today's schedule…" }</p> },
        Load::Failed(e) => error_notice(e),
        Load::Ready(day) => {
            let on_change = {
                let on_filter = props.on_filter.clone();
                Callback::from(move |e: Event| {
                    let value = e
                        .target()
                        .and_then(|t| t.dyn_into::<HtmlSelectElement>().ok())
                        .map(|s| s.value())
                        .filter(|v| !v.is_empty());
                    on_filter.emit(value);
                })
            };
            let waiting = day
                .appointments
                .iter()
                .filter(|a| a.status == VisitStatus::InWaitingRoom)
                .count();
            html! {
                <>
                    <label class="filter">
                        { "Clinician " }
                        <select id="practitioner-filter" onchange={on_change}>
                            <option value="" selected={props.practitioner.is_none()}>{ "All clinicians (shared view)" }</option>
                            { for day.practitioners.iter().map(|p| html! {
                                <option value={p.practitioner_id.clone()}
                                        selected={props.practitioner.as_deref() == Some(p.practitioner_id.as_str())}>
                                    { &p.display_name }
                                </option>
                            }) }
                        </select>
                    </label>
                    <p class="muted" id="schedule-date">{ &day.date_label }</p>
                    <p class="summary" id="schedule-summary">
                        { format!("{} visits", day.appointments.len()) }
                        if waiting > 0 {
                            <span class="badge waiting">{ format!("{waiting} in waiting room") }</span>
                        }
                    </p>
                    if !day.data_issues.is_empty() {
                        <div class="notice warn" role="status">
                            { format!("{} record(s) could not be shown: ", day.data_issues.len()) }
                            { day.data_issues.join("; ") }
                        </div>
                    }
                    if day.appointments.is_empty() {
                        <p class="muted">{ "No visits scheduled." }</p>
                    }
                    <ul id="appointment-list" class="appointments" aria-label="Visits">
                        { for day.appointments.iter().map(|a| row(a, props)) }
                    </ul>
                </>
            }
        }
    };
    html! {
        <>
            <h2 id="schedule-heading">{ "Today's schedule" }</h2>
            { body }
        </>
    }
}

fn row(a: &AppointmentRow, props: &ScheduleProps) -> Html {
    let selected = props.selected.as_deref() == Some(a.appointment_id.as_str());
    let onclick = {
        let on_select = props.on_select.clone();
        let a = a.clone();
        Callback::from(move |_| on_select.emit(a.clone()))
    };
    let (status, status_class) = status_label(a.status);
    let (modality, modality_class) = modality_label(a.modality);
    html! {
        <li>
            <button type="button"
                    class={classes!("appointment", selected.then_some("selected"))}
                    data-appointment-id={a.appointment_id.clone()}
                    data-patient-id={a.patient_id.clone()}
                    aria-pressed={selected.to_string()}
                    {onclick}>
                <span class="time">{ &a.start_label }</span>
                <span class="who">
                    <span class="patient">{ &a.patient_name }</span>
                    <span class="practitioner">{ &a.practitioner_name }</span>
                </span>
                <span class="badges">
                    <span class={classes!("badge", modality_class)}>{ modality }</span>
                    <span class={classes!("badge", status_class)}>{ status }</span>
                </span>
            </button>
        </li>
    }
}
