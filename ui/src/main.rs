//! Hearth's window: a top bar over three regions — schedule (left), chart (centre) and
//! visit (right). Everything shown comes from the core through [`bridge`]; this crate only
//! renders and routes user input.

mod bridge;
mod call;
mod chart;
mod keyboard;
mod note;
mod schedule;
mod signon;
mod sync;
mod visit;

use hearth_ipc::{
    command, AppStatus, AppointmentRow, Chart, ChartRequest, Connectivity, DataMode, ErrorCode,
    IpcError, ScheduleDay, ScheduleRequest, SessionState,
};
use wasm_bindgen_futures::spawn_local;
use yew::prelude::*;

/// A value being fetched from the core.
#[derive(Clone, PartialEq)]
pub enum Load<T> {
    Loading,
    Ready(T),
    Failed(IpcError),
}

impl<T> From<Result<T, IpcError>> for Load<T> {
    fn from(r: Result<T, IpcError>) -> Self {
        match r {
            Ok(v) => Self::Ready(v),
            Err(e) => Self::Failed(e),
        }
    }
}

/// A failure in words for people, with the code for support.
pub fn error_notice(e: &IpcError) -> Html {
    html! {
        <div class="notice error" role="alert">
            <strong>{ "Something went wrong. " }</strong>
            { &e.message }
            <span class="code">{ format!(" (code {})", e.code.as_str()) }</span>
        </div>
    }
}

/// Takes the next number of a request sequence; an answer is shown only while its number is
/// still the latest.
fn next_ticket(ticket: &std::rc::Rc<std::cell::RefCell<u64>>) -> u64 {
    let mut t = ticket.borrow_mut();
    *t += 1;
    *t
}

#[function_component(App)]
fn app() -> Html {
    let status = use_state(|| Load::<AppStatus>::Loading);
    let panel_open = use_state(|| false);
    let schedule = use_state(|| Load::<ScheduleDay>::Loading);
    let practitioner = use_state(|| None::<String>);
    let selected = use_state(|| None::<AppointmentRow>);
    let chart = use_state(|| None::<Load<Chart>>);
    // Answers can arrive out of order: only the latest request of each kind may be shown, or
    // a slow chart of the previous patient could replace the one just selected.
    let schedule_ticket = use_mut_ref(|| 0u64);
    let chart_ticket = use_mut_ref(|| 0u64);
    let chart_patient = use_mut_ref(|| None::<String>);

    {
        // The top bar follows the shell's pushes, not a timer: the status (no PHI) comes at
        // once, then whenever it changes (sync progress, a round landing, the queue, the
        // session, the idle lock).
        let status = status.clone();
        use_effect_with((), move |()| {
            spawn_local(async move {
                let pushed = status.clone();
                let answer =
                    bridge::subscribe::<(), AppStatus>(command::WATCH_STATUS, None, move |s| {
                        pushed.set(s.into())
                    })
                    .await;
                if let Err(e) = answer {
                    status.set(Load::Failed(e));
                }
            });
        });
    }
    // A sync round that brought something (or a change in what waits) reloads the views.
    let sync_generation = match &*status {
        Load::Ready(s) => sync_generation(s),
        _ => 0,
    };
    let session = match &*status {
        Load::Ready(s) => s.session,
        _ => SessionState::NotRequired,
    };
    // An EHR launch opens the patient the EHR had open, until the user picks a visit.
    let launch_patient = match &*status {
        Load::Ready(s) => s.launch.as_ref().and_then(|l| l.patient_id.clone()),
        _ => None,
    };
    {
        let schedule = schedule.clone();
        let ticket = schedule_ticket.clone();
        use_effect_with(
            ((*practitioner).clone(), sync_generation),
            move |(practitioner, _)| {
                let request = ScheduleRequest {
                    date: None,
                    practitioner_ids: practitioner.iter().cloned().collect(),
                };
                let mine = next_ticket(&ticket);
                spawn_local(async move {
                    let answer = bridge::call(command::SCHEDULE_DAY, &request).await.into();
                    if *ticket.borrow() == mine {
                        schedule.set(answer);
                    }
                });
            },
        );
    }
    {
        let chart = chart.clone();
        let ticket = chart_ticket.clone();
        let shown = chart_patient.clone();
        let patient_id = selected
            .as_ref()
            .map(|a| a.patient_id.clone())
            .or(launch_patient);
        use_effect_with((patient_id, sync_generation), move |(patient_id, _)| {
            if let Some(patient_id) = patient_id.clone() {
                let mine = next_ticket(&ticket);
                // Another patient: never leave the previous patient's chart on screen.
                if shown.borrow().as_deref() != Some(patient_id.as_str()) {
                    chart.set(Some(Load::Loading));
                    *shown.borrow_mut() = Some(patient_id.clone());
                }
                spawn_local(async move {
                    let request = ChartRequest { patient_id };
                    let answer = bridge::call(command::OPEN_CHART, &request).await.into();
                    if *ticket.borrow() == mine {
                        chart.set(Some(answer));
                    }
                });
            }
        });
    }
    keyboard::use_region_keys();
    signon::use_activity_reports();

    let on_select = {
        let selected = selected.clone();
        Callback::from(move |row: AppointmentRow| selected.set(Some(row)))
    };
    let on_filter = {
        let practitioner = practitioner.clone();
        Callback::from(move |p: Option<String>| practitioner.set(p))
    };

    if let Load::Failed(e) = &*status {
        if e.code == ErrorCode::Configuration {
            return html! {
                <main class="fatal" role="alert">
                    <h1>{ "Hearth cannot start" }</h1>
                    <p>{ &e.message }</p>
                    <p>{ "Ask your IT team to correct Hearth's configuration." }</p>
                </main>
            };
        }
    }

    if matches!(
        session,
        SessionState::SignedOut | SessionState::Locked | SessionState::Expired
    ) {
        // Nothing clinical behind the gate: the views are not rendered at all.
        // The shell names nobody here (the status behind the gate says only "locked").
        let idle_minutes = match &*status {
            Load::Ready(s) => s.idle_lock_minutes,
            _ => None,
        };
        return html! {
            <div class="shell">
                <TopBar status={(*status).clone()} on_open_sync={Callback::noop()} />
                <signon::Gate {session} {idle_minutes} />
            </div>
        };
    }

    let selected_id = selected.as_ref().map(|a| a.appointment_id.clone());
    let open_sync = {
        let panel_open = panel_open.clone();
        Callback::from(move |()| panel_open.set(true))
    };
    let close_sync = {
        let panel_open = panel_open.clone();
        Callback::from(move |()| panel_open.set(false))
    };
    html! {
        <div class="shell">
            <TopBar status={(*status).clone()} on_open_sync={open_sync} />
            if *panel_open {
                <sync::SyncPanelView on_close={close_sync} generation={sync_generation} />
            }
            <div class="regions">
                <section id="region-schedule" class="region schedule" tabindex="-1" aria-labelledby="schedule-heading" aria-keyshortcuts="Alt+1">
                    <schedule::ScheduleView
                        day={(*schedule).clone()}
                        selected={selected_id}
                        practitioner={(*practitioner).clone()}
                        {on_select}
                        {on_filter} />
                </section>
                <section id="region-chart" class="region chart" tabindex="-1" aria-labelledby="chart-heading" aria-keyshortcuts="Alt+2">
                    <chart::ChartView chart={(*chart).clone()} />
                </section>
                <section id="region-visit" class="region visit" tabindex="-1" aria-labelledby="visit-heading" aria-keyshortcuts="Alt+3">
                    <visit::VisitPane appointment={(*selected).clone()} generation={sync_generation} />
                </section>
            </div>
        </div>
    }
}

/// Changes whenever what the views show may have changed: the records (a sync round that
/// brought something, the user's change, a waiting room), what waits, the session, the day.
/// A round that brought nothing new changes only the top bar.
fn sync_generation(s: &AppStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        s.data_version,
        s.sync.queued_writes,
        s.sync.conflicts,
        s.sync.failed_writes,
        s.sync.unreadable_records,
        s.session,
        &s.today,
    )
        .hash(&mut h);
    h.finish()
}

#[derive(Properties, PartialEq)]
struct TopBarProps {
    status: Load<AppStatus>,
    on_open_sync: Callback<()>,
}

#[function_component(TopBar)]
fn top_bar(props: &TopBarProps) -> Html {
    let body = match &props.status {
        Load::Loading => html! { <span class="muted">{ "Starting…" }</span> },
        Load::Failed(e) => error_notice(e),
        Load::Ready(s) => {
            let mode = match &s.mode {
                DataMode::Demo { seed } => html! {
                    <span id="demo-banner" class="demo-banner" role="status">
                        { "DEMO DATA — synthetic patients, not for clinical use" }
                        <span class="muted">{ format!(" (seed {seed})") }</span>
                    </span>
                },
                DataMode::Ehr { fhir_base_url } => html! {
                    <span class="ehr">{ format!("EHR: {fhir_base_url}") }</span>
                },
            };
            let (conn_class, conn_text) = match s.connectivity {
                // A sign-in that could not be renewed reaches nothing: never "Online".
                _ if s.session == SessionState::Expired => {
                    ("offline", "Not synchronising: sign in again")
                }
                Connectivity::Online => ("online", "Online"),
                Connectivity::Offline => ("offline", "Offline"),
                Connectivity::NotApplicable => ("na", "No EHR (demo)"),
            };
            let gated = matches!(s.session, SessionState::SignedOut | SessionState::Locked);
            let user = s
                .user
                .as_ref()
                .map_or("Not signed in".to_string(), |u| u.display_name.clone());
            html! {
                <>
                    { mode }
                    <span class="spacer"></span>
                    if let Some(p) = &s.sync.progress {
                        <label id="sync-progress-label" class="progress">
                            { format!("{} {}/{} ", p.label, p.done, p.total) }
                            <progress id="sync-progress" max={p.total.max(1).to_string()} value={p.done.to_string()}></progress>
                        </label>
                    }
                    <span id="sync-state" class="sync" title={s.sync.description.clone()} role="status">
                        <span class={classes!("dot", conn_class)} aria-hidden="true"></span>
                        { conn_text }
                        // Behind the sign-in and lock screens the shell sends no counts.
                        if !gated {
                            { format!(" · {} queued", s.sync.queued_writes) }
                            if s.sync.conflicts > 0 {
                                <span id="sync-conflicts" class="badge">{ format!(" · {} need you", s.sync.conflicts) }</span>
                            }
                            if let Some(last) = &s.sync.last_success {
                                { format!(" · last sync {}", clock_time(last)) }
                            }
                        }
                    </span>
                    if matches!(s.mode, DataMode::Ehr { .. }) && !gated {
                        <button id="sync-button" class="sync-button" onclick={props.on_open_sync.reform(|_: MouseEvent| ())}>{ "Sync details" }</button>
                    }
                    <span id="current-user" class="user">{ user }</span>
                    if s.session == SessionState::SignedIn {
                        <button id="lock-button" class="sync-button" onclick={Callback::from(|_: MouseEvent| call_quietly(command::LOCK_NOW))}>{ "Lock" }</button>
                        <button id="sign-out-button" class="sync-button" onclick={Callback::from(|_: MouseEvent| call_quietly(command::SIGN_OUT))}>{ "Sign out" }</button>
                    }
                </>
            }
        }
    };
    html! {
        <header class="topbar" role="banner">
            <span class="brand">{ "Hearth" }</span>
            { body }
        </header>
    }
}

/// Invokes a command whose effect the shell pushes with the status.
fn call_quietly(cmd: &'static str) {
    spawn_local(async move {
        let _: Result<(), IpcError> = bridge::call_no_args(cmd).await;
    });
}

/// `HH:MM:SS` of an RFC 3339 instant (UTC, as the core sends it), or the text as is.
fn clock_time(instant: &str) -> String {
    instant
        .split('T')
        .nth(1)
        .map(|t| format!("{} UTC", &t[..t.len().min(8)]))
        .unwrap_or_else(|| instant.to_string())
}

fn main() {
    yew::Renderer::<App>::new().render();
}
