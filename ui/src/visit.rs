//! The visit region: the selected visit's details. Video for virtual visits runs in this
//! pane once the visit service is connected; the visit note is below.

use crate::schedule::{modality_label, status_label};
use crate::{bridge, error_notice};
use hearth_ipc::{
    command, AppointmentRow, InviteRole, IpcError, Modality, RoomParticipant, RoomRole,
    RoomService, RoomStanding, VisitAdmitRequest, VisitInvite, VisitInviteRequest, VisitRoom,
    VisitRoomRequest, VisitStatus,
};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen_futures::spawn_local;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct VisitProps {
    pub appointment: Option<AppointmentRow>,
    /// Changes when what the core holds may have changed (the note is read again).
    pub generation: u64,
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
                    "Start video below; whoever you admit from the waiting room joins the call."
                }
                (Modality::InPerson, VisitStatus::Arrived) => "The patient has arrived.",
                (Modality::InPerson, _) => "In-person visit.",
            };
            html! {
                <>
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
                if a.modality == Modality::Virtual {
                    <RoomView appointment_id={a.appointment_id.clone()} />
                }
                <crate::note::NotePane appointment_id={a.appointment_id.clone()} generation={props.generation} />
                </>
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

#[derive(Properties, PartialEq)]
struct RoomProps {
    appointment_id: String,
}

fn role_label(role: RoomRole) -> &'static str {
    match role {
        RoomRole::Patient => "Patient",
        RoomRole::Guest => "Guest",
        RoomRole::Clinician => "Clinician",
    }
}

/// The visit service's room for this visit: who waits (with Admit), who is in, who left;
/// join links for the patient and a guest. Pushed by the shell as it changes.
#[function_component(RoomView)]
fn room_view(props: &RoomProps) -> Html {
    let room = use_state(|| None::<Result<VisitRoom, IpcError>>);
    let invite = use_state(|| None::<Result<VisitInvite, IpcError>>);
    let action_error = use_state(|| None::<IpcError>);
    {
        let room = room.clone();
        let invite = invite.clone();
        use_effect_with(props.appointment_id.clone(), move |id| {
            invite.set(None);
            let alive = Rc::new(Cell::new(true));
            let running = alive.clone();
            let request = VisitRoomRequest {
                appointment_id: id.clone(),
            };
            spawn_local(async move {
                // The shell pushes the room whenever its roster changes (no polling); this
                // subscription replaces the one of the visit shown before.
                let shown = running.clone();
                let pushed = room.clone();
                let answer = bridge::subscribe::<_, VisitRoom>(
                    command::WATCH_VISIT_ROOM,
                    Some(&request),
                    move |r| {
                        if shown.get() {
                            pushed.set(Some(r));
                        }
                    },
                )
                .await;
                if let Err(e) = answer {
                    if running.get() {
                        room.set(Some(Err(e)));
                    }
                }
            });
            move || alive.set(false)
        });
    }
    let ask_link = {
        let invite = invite.clone();
        let id = props.appointment_id.clone();
        Callback::from(move |role: InviteRole| {
            let invite = invite.clone();
            let request = VisitInviteRequest {
                appointment_id: id.clone(),
                role,
            };
            spawn_local(async move {
                invite.set(Some(bridge::call(command::VISIT_INVITE, &request).await));
            });
        })
    };
    let admit = {
        let id = props.appointment_id.clone();
        let action_error = action_error.clone();
        Callback::from(move |participant_id: String| {
            let action_error = action_error.clone();
            let request = VisitAdmitRequest {
                appointment_id: id.clone(),
                participant_id,
            };
            spawn_local(async move {
                let answer: Result<(), IpcError> =
                    bridge::call(command::VISIT_ADMIT, &request).await;
                action_error.set(answer.err());
            });
        })
    };
    let room_html = match &*room {
        None => html! { <p class="muted">{ "Connecting to the visit service…" }</p> },
        Some(Err(e)) => error_notice(e),
        Some(Ok(r)) => match r.service {
            RoomService::NotConfigured => {
                // Demo mode: no visit service; the call is a simulated visit on this machine.
                return html! {
                    <section id="visit-room" aria-labelledby="call-heading">
                        <p class="muted" id="demo-call-note">{ "Demo: a simulated patient (a second video engine on this computer, showing a test pattern) joins this visit's waiting room when you start video." }</p>
                        <crate::call::CallPane appointment_id={props.appointment_id.clone()} demo=true />
                    </section>
                };
            }
            RoomService::Connecting => {
                html! { <p class="muted" id="room-status">{ "Connecting to the visit service…" }</p> }
            }
            RoomService::Trouble => html! {
                <p class="notice error" id="room-status" role="status">{ r.message.clone().unwrap_or_default() }</p>
            },
            RoomService::Ended => html! { <p id="room-status">{ "The visit has ended." }</p> },
            RoomService::Live => people(&r.participants, &admit),
        },
    };
    let live = matches!(&*room, Some(Ok(r)) if matches!(r.service, RoomService::Live | RoomService::Ended));
    let on_patient = ask_link.reform(|_: MouseEvent| InviteRole::Patient);
    let on_guest = ask_link.reform(|_: MouseEvent| InviteRole::Guest);
    html! {
        <section id="visit-room" aria-labelledby="room-heading">
            <h3 id="room-heading">{ "Virtual waiting room" }</h3>
            { room_html }
            if let Some(e) = &*action_error {
                { error_notice(e) }
            }
            <div class="room-actions">
                <button id="invite-patient" type="button" onclick={on_patient}>{ "Link for the patient" }</button>
                <button id="invite-guest" type="button" onclick={on_guest}>{ "Link for an interpreter or family member" }</button>
            </div>
            {
                match &*invite {
                    None => html! {},
                    Some(Err(e)) => error_notice(e),
                    Some(Ok(link)) => html! {
                        <div class="invite">
                            <label for="invite-link">{ "Join link (send it to them; it opens the waiting room)" }</label>
                            <input id="invite-link" type="text" readonly=true value={link.url.clone()} />
                            <p class="muted">{ format!("Works from {} until {}.", link.opens_label, link.expires_label) }</p>
                            if link.saved_to_appointment {
                                <p class="muted" id="invite-saved">{ "Also saved to the appointment, for the EHR's reminders." }</p>
                            }
                        </div>
                    },
                }
            }
            if live {
                <crate::call::CallPane appointment_id={props.appointment_id.clone()} demo=false />
            }
        </section>
    }
}

fn people(participants: &[RoomParticipant], admit: &Callback<String>) -> Html {
    let waiting: Vec<&RoomParticipant> = participants
        .iter()
        .filter(|p| p.standing == RoomStanding::Waiting)
        .collect();
    let inside: Vec<&RoomParticipant> = participants
        .iter()
        .filter(|p| p.standing == RoomStanding::InVisit)
        .collect();
    let gone: Vec<&RoomParticipant> = participants
        .iter()
        .filter(|p| p.standing == RoomStanding::Left)
        .collect();
    let row = |p: &RoomParticipant, action: Html| {
        let presence = if p.connected { "" } else { " (reconnecting)" };
        html! {
            <li class="room-person" data-participant={p.id.clone()}>
                <span class="room-name">{ &p.name }</span>
                { format!(" — {}, joined {}{}", role_label(p.role), p.joined_label, presence) }
                if let Some(left) = &p.left_label {
                    { format!(", left {left}") }
                }
                { action }
            </li>
        }
    };
    html! {
        <>
            <h4>{ "Waiting" }</h4>
            if waiting.is_empty() {
                <p class="muted" id="room-empty">{ "Nobody is waiting." }</p>
            } else {
                <ul id="room-waiting">
                    { for waiting.iter().map(|p| {
                        let id = p.id.clone();
                        let admit = admit.clone();
                        let onclick = Callback::from(move |_: MouseEvent| admit.emit(id.clone()));
                        let label = format!("Admit {}", p.name);
                        row(p, html! { <button type="button" class="admit-button" aria-label={label} {onclick}>{ "Admit" }</button> })
                    }) }
                </ul>
            }
            if !inside.is_empty() {
                <h4>{ "In the visit" }</h4>
                <ul id="room-inside">{ for inside.iter().map(|p| row(p, html! {})) }</ul>
            }
            if !gone.is_empty() {
                <h4>{ "Left" }</h4>
                <ul id="room-left">{ for gone.iter().map(|p| row(p, html! {})) }</ul>
            }
        </>
    }
}
