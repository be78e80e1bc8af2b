//! The sign-in and lock screens (no PHI is rendered behind them), and the input reports that
//! keep the idle lock away.

use crate::{bridge, error_notice};
use gloo_events::EventListener;
use hearth_ipc::{command, IpcError, SessionState, UserSummary};
use wasm_bindgen_futures::spawn_local;
use yew::prelude::*;

/// Input is reported at most this often (milliseconds): the lock counts minutes.
const REPORT_EVERY_MS: f64 = 20_000.0;

/// Reports the user's input (keys, pointer) to the core, throttled, while this component lives.
#[hook]
pub fn use_activity_reports() {
    use_effect_with((), |_| {
        let last = std::rc::Rc::new(std::cell::Cell::new(f64::MIN));
        let listeners: Vec<EventListener> = web_sys::window()
            .and_then(|w| w.document())
            .map(|d| {
                ["keydown", "pointerdown", "pointermove", "wheel"]
                    .into_iter()
                    .map(|kind| {
                        let last = last.clone();
                        EventListener::new(&d, kind, move |_| {
                            let now = js_sys_now();
                            if now - last.get() >= REPORT_EVERY_MS {
                                last.set(now);
                                spawn_local(async {
                                    let _: Result<(), IpcError> =
                                        bridge::call_no_args(command::ACTIVITY).await;
                                });
                            }
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        move || drop(listeners)
    });
}

fn js_sys_now() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

#[derive(Properties, PartialEq)]
pub struct GateProps {
    pub session: SessionState,
    pub idle_minutes: Option<u32>,
}

/// The sign-in screen (signed out), the lock screen (locked), or the sign-in-again screen (a
/// renewal failed).
#[function_component(Gate)]
pub fn gate(props: &GateProps) -> Html {
    let waiting = use_state(|| false);
    let error = use_state(|| None::<IpcError>);
    let locked = props.session == SessionState::Locked;
    let onclick = {
        let waiting = waiting.clone();
        let error = error.clone();
        Callback::from(move |_: MouseEvent| {
            if *waiting {
                return;
            }
            waiting.set(true);
            error.set(None);
            let waiting = waiting.clone();
            let error = error.clone();
            // Signed in, the shell pushes the new session state: the gate goes by itself.
            spawn_local(async move {
                let answer: Result<UserSummary, IpcError> =
                    bridge::call_no_args(command::SIGN_IN).await;
                waiting.set(false);
                if let Err(e) = answer {
                    error.set(Some(e));
                }
            });
        })
    };
    let (id, heading, text, button) = if props.session == SessionState::Expired {
        (
            "sign-in-expired",
            "Your sign-in has ended",
            "Hearth could not renew the sign-in, so nothing is being sent to or received from the EHR. The same user must sign in again to continue; changes made here are kept and sent once they have.".to_string(),
            "Sign in again",
        )
    } else if locked {
        (
            "lock-screen",
            "Hearth is locked",
            format!(
                "Hearth locks after {} minutes without activity, or when asked to. The same user must sign in again to continue; nothing was lost.",
                props.idle_minutes.unwrap_or(0),
            ),
            "Sign in to unlock",
        )
    } else {
        (
            "sign-in",
            "Sign in to Hearth",
            "Hearth opens your organisation's sign-in page in your web browser. Come back here when you have signed in.".to_string(),
            "Sign in",
        )
    };
    html! {
        <main id={id} class="gate" aria-labelledby="gate-heading">
            <h1 id="gate-heading">{ heading }</h1>
            <p>{ text }</p>
            <button id="sign-in-button" class="primary" {onclick} disabled={*waiting} aria-busy={(*waiting).to_string()}>{ button }</button>
            if *waiting {
                <p id="sign-in-waiting" role="status">{ "Continue in your browser… This window updates when you have signed in." }</p>
            }
            if let Some(e) = &*error {
                { error_notice(e) }
            }
        </main>
    }
}
