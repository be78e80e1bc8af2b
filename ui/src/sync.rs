//! The sync panel: what waits to be sent, conflicts with both versions side by side and a
//! choice, and what the EHR sent that could not be read. Opened from the top bar.

use crate::{bridge, error_notice, Load};
use hearth_ipc::{
    command, ConflictChoice, ConflictView, FailedWriteChoice, FailedWriteView, IpcError,
    ProblemView, ResolveConflictRequest, SettleFailedWriteRequest, SyncPanel,
};
use wasm_bindgen_futures::spawn_local;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct SyncPanelProps {
    pub on_close: Callback<()>,
    /// Bumped by the app when the sync state changes, so the panel reloads.
    pub generation: u64,
}

#[function_component(SyncPanelView)]
pub fn sync_panel(props: &SyncPanelProps) -> Html {
    let panel = use_state(|| Load::<SyncPanel>::Loading);
    let reload = use_state(|| 0u64);
    let action_error = use_state(|| None::<IpcError>);
    {
        let panel = panel.clone();
        use_effect_with((props.generation, *reload), move |_| {
            spawn_local(async move {
                panel.set(bridge::call_no_args(command::SYNC_PANEL).await.into());
            });
        });
    }
    let resolve = {
        let reload = reload.clone();
        let action_error = action_error.clone();
        Callback::from(move |(conflict_id, choice): (i64, ConflictChoice)| {
            let reload = reload.clone();
            let action_error = action_error.clone();
            spawn_local(async move {
                let request = ResolveConflictRequest {
                    conflict_id,
                    choice,
                };
                let answer: Result<(), IpcError> =
                    bridge::call(command::RESOLVE_CONFLICT, &request).await;
                action_error.set(answer.err());
                reload.set(*reload + 1);
            });
        })
    };
    let settle = {
        let reload = reload.clone();
        let action_error = action_error.clone();
        Callback::from(move |(seq, choice): (i64, FailedWriteChoice)| {
            let reload = reload.clone();
            let action_error = action_error.clone();
            spawn_local(async move {
                let request = SettleFailedWriteRequest { seq, choice };
                let answer: Result<(), IpcError> =
                    bridge::call(command::SETTLE_FAILED_WRITE, &request).await;
                action_error.set(answer.err());
                reload.set(*reload + 1);
            });
        })
    };
    let close = {
        let on_close = props.on_close.clone();
        Callback::from(move |_: MouseEvent| on_close.emit(()))
    };
    let on_key = {
        let on_close = props.on_close.clone();
        Callback::from(move |e: KeyboardEvent| {
            if e.key() == "Escape" {
                on_close.emit(());
            }
        })
    };
    let body = match &*panel {
        Load::Loading => html! { <p class="muted">{ "Loading…" }</p> },
        Load::Failed(e) => error_notice(e),
        Load::Ready(p) => html! {
            <>
                <p id="sync-description">{ &p.summary.description }</p>
                if let Some(e) = &*action_error { { error_notice(e) } }
                <h3>{ format!("Changes that need your decision ({})", p.conflicts.len()) }</h3>
                if p.conflicts.is_empty() {
                    <p class="muted">{ "None." }</p>
                }
                { for p.conflicts.iter().map(|c| conflict(c, &resolve)) }
                <h3>{ format!("Changes the EHR refused ({})", p.failed.len()) }</h3>
                if p.failed.is_empty() {
                    <p class="muted">{ "None." }</p>
                }
                { for p.failed.iter().map(|f| failed(f, &settle)) }
                <h3>{ format!("Records from the EHR that could not be read ({})", p.summary.unreadable_records) }</h3>
                { problems(&p.unreadable, "unreadable") }
            </>
        },
    };
    html! {
        <div class="overlay">
            <section id="sync-panel" class="sync-panel" role="dialog" aria-modal="true"
                aria-labelledby="sync-panel-heading" tabindex="-1" onkeydown={on_key}>
                <header>
                    <h2 id="sync-panel-heading">{ "Synchronisation with the EHR" }</h2>
                    <button id="sync-panel-close" onclick={close} aria-label="Close the sync panel">{ "Close" }</button>
                </header>
                { body }
            </section>
        </div>
    }
}

fn conflict(c: &ConflictView, resolve: &Callback<(i64, ConflictChoice)>) -> Html {
    let choose = |choice: ConflictChoice| {
        let resolve = resolve.clone();
        let id = c.id;
        Callback::from(move |_: MouseEvent| resolve.emit((id, choice)))
    };
    html! {
        <article class="conflict" id={format!("conflict-{}", c.id)}>
            <p>
                { format!("{} — changed at the EHR by someone else after you changed it here. ", c.record) }
                { "Nothing has been overwritten. Choose which version to keep." }
            </p>
            <table class="versions">
                <thead><tr><th>{ "Field" }</th><th>{ "Your version" }</th><th>{ "EHR's version" }</th></tr></thead>
                <tbody>
                    { for c.fields.iter().map(|f| html! {
                        <tr><td>{ &f.field }</td><td class="mine">{ &f.mine }</td><td class="theirs">{ &f.theirs }</td></tr>
                    }) }
                </tbody>
            </table>
            <div class="choices">
                <button class="keep-mine" onclick={choose(ConflictChoice::KeepMine)}>{ "Send my version" }</button>
                <button class="take-theirs" onclick={choose(ConflictChoice::TakeTheirs)}>{ "Keep the EHR's version" }</button>
            </div>
        </article>
    }
}

fn failed(f: &FailedWriteView, settle: &Callback<(i64, FailedWriteChoice)>) -> Html {
    let choose = |choice: FailedWriteChoice| {
        let settle = settle.clone();
        let seq = f.seq;
        Callback::from(move |_: MouseEvent| settle.emit((seq, choice)))
    };
    html! {
        <article class="failed" id={format!("failed-{}", f.seq)}>
            <p><strong>{ &f.record }</strong>{ ": " }{ &f.message }</p>
            <div class="choices">
                <button class="retry" onclick={choose(FailedWriteChoice::Retry)}>{ "Try again" }</button>
                <button class="discard" onclick={choose(FailedWriteChoice::Discard)}>{ "Drop my change" }</button>
            </div>
        </article>
    }
}

fn problems(list: &[ProblemView], class: &'static str) -> Html {
    if list.is_empty() {
        return html! { <p class="muted">{ "None." }</p> };
    }
    html! {
        <ul class={classes!("problems", class)}>
            { for list.iter().map(|p| html! {
                <li><strong>{ if p.record.is_empty() { "(record)".to_string() } else { p.record.clone() } }</strong>{ ": " }{ &p.message }</li>
            }) }
        </ul>
    }
}
