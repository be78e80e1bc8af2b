//! The visit note in the visit pane: a SOAP note saved on every pause, its diagnoses and
//! service lines, signing with an attestation, amending, the signed versions and where each
//! went, and the charges with "Correct and resend" for a refused one.
//!
//! The text typed here is the editor's own until a save is acknowledged: a failed save keeps
//! it (and says so), the next pause saves it again, and a refresh of the note (the status's
//! data version moved) updates only the versions and charges while it is being written.
//!
//! Test hooks: `#note-pane[data-state]`, `#note-subjective` … `#note-plan`, `#note-saved`
//! (`data-saved-revision`, `data-status`), `#note-attest`, `#note-sign`, `#note-amend`,
//! `#note-versions li[data-delivery]`, `#note-charges li[data-state]`.

use crate::{bridge, error_notice};
use gloo_timers::callback::Timeout;
use hearth_ipc::{
    command, AmendNoteRequest, ChargeState, ChargeView, CodeKind, CodeOption, CodeSearchRequest,
    CorrectChargeRequest, IpcError, Modality, NoteDelivery, NoteDiagnosis, NoteDraft, NoteRequest,
    NoteSaved, NoteSections, NoteState, NoteVersion, NoteView, SaveNoteRequest, ServiceCodeSystem,
    ServiceLine, SignNoteRequest,
};
use std::cell::RefCell;
use std::collections::HashMap;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;
use web_sys::{HtmlInputElement, HtmlTextAreaElement, KeyboardEvent};
use yew::prelude::*;

/// A pause this long after the last change saves the draft.
const SAVE_AFTER_MS: u32 = 800;
/// A pause this long after typing in a code search searches.
const SEARCH_AFTER_MS: u32 = 300;
/// How many codes a search offers.
const SEARCH_LIMIT: u32 = 12;

thread_local! {
    /// Drafts whose last save failed after their editor went (another visit was selected):
    /// put back, unsaved, when that visit's note opens again.
    static UNSAVED: RefCell<HashMap<String, NoteDraft>> = RefCell::new(HashMap::new());
}

/// A part of the SOAP note.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Subjective,
    Objective,
    Assessment,
    Plan,
}

impl Section {
    const ALL: [Section; 4] = [
        Section::Subjective,
        Section::Objective,
        Section::Assessment,
        Section::Plan,
    ];

    fn id(self) -> &'static str {
        match self {
            Section::Subjective => "note-subjective",
            Section::Objective => "note-objective",
            Section::Assessment => "note-assessment",
            Section::Plan => "note-plan",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Section::Subjective => "Subjective",
            Section::Objective => "Objective",
            Section::Assessment => "Assessment",
            Section::Plan => "Plan",
        }
    }

    fn text(self, s: &NoteSections) -> &str {
        match self {
            Section::Subjective => &s.subjective,
            Section::Objective => &s.objective,
            Section::Assessment => &s.assessment,
            Section::Plan => &s.plan,
        }
    }

    fn text_mut(self, s: &mut NoteSections) -> &mut String {
        match self {
            Section::Subjective => &mut s.subjective,
            Section::Objective => &mut s.objective,
            Section::Assessment => &mut s.assessment,
            Section::Plan => &mut s.plan,
        }
    }
}

/// Chart lines the clinician can put into the note, and where they go (at the end).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Into Objective.
    Vitals,
    /// Into Assessment.
    Problems,
    /// Into Plan (the list to continue, change or stop).
    Medications,
}

impl Insert {
    fn target(self) -> Section {
        match self {
            Insert::Vitals => Section::Objective,
            Insert::Problems => Section::Assessment,
            Insert::Medications => Section::Plan,
        }
    }
}

/// Appends `lines` at the end of `text`, on a line of their own.
fn append_lines(text: &mut String, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&lines.join("\n"));
}

/// `HH:MM:SS` in the computer's time zone of an RFC 3339 instant, or the text as is.
fn local_time(instant: &str) -> String {
    let d = js_sys::Date::new(&JsValue::from_str(instant));
    if d.get_time().is_nan() {
        return instant.to_string();
    }
    format!(
        "{:02}:{:02}:{:02}",
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds()
    )
}

/// `YYYY-MM-DD HH:MM` in the computer's time zone of an RFC 3339 instant, or the text as is.
fn local_date_time(instant: &str) -> String {
    let d = js_sys::Date::new(&JsValue::from_str(instant));
    if d.get_time().is_nan() {
        return instant.to_string();
    }
    format!(
        "{}-{:02}-{:02} {:02}:{:02}",
        d.get_full_year(),
        d.get_month() + 1,
        d.get_date(),
        d.get_hours(),
        d.get_minutes()
    )
}

fn delivery(d: &NoteDelivery) -> (&'static str, String) {
    match d {
        NoteDelivery::Queued => ("queued", "Waiting to reach the EHR".to_string()),
        NoteDelivery::InChart { .. } => ("in_chart", "In the EHR's chart".to_string()),
        NoteDelivery::Refused { reason } => ("refused", format!("Refused by the EHR: {reason}")),
    }
}

fn charge_state(s: &ChargeState) -> (&'static str, &'static str) {
    match s {
        ChargeState::Queued => ("queued", "Waiting to be sent to billing"),
        ChargeState::Accepted => ("accepted", "Accepted by billing"),
        ChargeState::Refused => ("refused", "Refused by billing"),
        ChargeState::Corrected => ("corrected", "Replaced by a corrected charge"),
        ChargeState::NotSent => ("not_sent", "Not sent (no billing interface)"),
    }
}

fn system_label(s: ServiceCodeSystem) -> &'static str {
    match s {
        ServiceCodeSystem::Cpt => "CPT",
        ServiceCodeSystem::Hcpcs => "HCPCS",
    }
}

fn diagnosis_of(o: CodeOption) -> NoteDiagnosis {
    NoteDiagnosis {
        code: o.code,
        description: o.description,
    }
}

fn line_of(o: CodeOption) -> ServiceLine {
    ServiceLine {
        code: o.code,
        system: o.system.unwrap_or(ServiceCodeSystem::Cpt),
        description: o.description,
        modifiers: Vec::new(),
        units: 1,
    }
}

/// Modifiers as typed ("95, GT" or "95 GT").
fn parse_modifiers(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|m| !m.is_empty())
        .map(|m| m.to_uppercase())
        .collect()
}

/// A service line of a refused charge being corrected (modifiers kept as typed).
#[derive(Clone)]
struct LineEdit {
    code: String,
    system: ServiceCodeSystem,
    description: Option<String>,
    modifiers: String,
    units: u32,
}

/// A refused charge being corrected.
struct Correction {
    charge_id: String,
    lines: Vec<LineEdit>,
    diagnoses: Vec<NoteDiagnosis>,
}

impl Correction {
    fn of(c: &ChargeView) -> Self {
        Self {
            charge_id: c.charge_id.clone(),
            lines: c
                .lines
                .iter()
                .map(|l| LineEdit {
                    code: l.code.clone(),
                    system: l.system,
                    description: l.description.clone(),
                    modifiers: l.modifiers.join(", "),
                    units: l.units,
                })
                .collect(),
            diagnoses: c.diagnoses.clone(),
        }
    }
}

pub enum Fix {
    Code(usize, String),
    Modifiers(usize, String),
    Units(usize, u32),
    RemoveLine(usize),
    AddLine(CodeOption),
    AddDiagnosis(CodeOption),
    RemoveDiagnosis(usize),
}

pub enum Msg {
    Loaded {
        ticket: u64,
        answer: Result<NoteView, IpcError>,
    },
    Edit(Section, String),
    Insert(Insert),
    AtHome(bool),
    AddDiagnosis(CodeOption),
    RemoveDiagnosis(usize),
    AddLine(CodeOption),
    RemoveLine(usize),
    Units(usize, u32),
    /// The typing paused (or left a field): save what is unsaved.
    Pause,
    Saved {
        epoch: u64,
        revision: u64,
        edits: u64,
        answer: Result<NoteSaved, IpcError>,
    },
    Attest(bool),
    Sign,
    Amend,
    /// The answer to a sign, amend or charge correction. `replace`: the answer's draft
    /// replaces the one here (sign, amend).
    Acted {
        answer: Result<NoteView, IpcError>,
        replace: bool,
    },
    StartCorrection(String),
    CancelCorrection,
    Fix(Fix),
    Resend,
}

#[derive(Properties, PartialEq)]
pub struct NoteProps {
    pub appointment_id: String,
    /// Changes when what the core holds may have changed: the note is read again.
    pub generation: u64,
}

/// The visit's note editor.
pub struct NotePane {
    view: Option<Result<NoteView, IpcError>>,
    /// The text as typed (Draft, Amending); as signed otherwise.
    draft: NoteDraft,
    /// Changes made here, how many the latest save sent carried, and how many a save stored.
    edits: u64,
    sent_edits: u64,
    saved_edits: u64,
    /// The highest revision used or seen: every save sends a higher one.
    revision: u64,
    /// Counts replacements of the draft: answers to saves of an earlier one are ignored.
    epoch: u64,
    saves_in_flight: u32,
    /// When the last save was stored and its revision.
    last_saved: Option<(String, u64)>,
    save_error: Option<IpcError>,
    timer: Option<Timeout>,
    attest: bool,
    acting: bool,
    action_error: Option<IpcError>,
    /// The latest read of the note; older answers are dropped.
    ticket: u64,
    correction: Option<Correction>,
}

impl NotePane {
    fn empty() -> Self {
        Self {
            view: None,
            draft: NoteDraft::default(),
            edits: 0,
            sent_edits: 0,
            saved_edits: 0,
            revision: 0,
            epoch: 0,
            saves_in_flight: 0,
            last_saved: None,
            save_error: None,
            timer: None,
            attest: false,
            acting: false,
            action_error: None,
            ticket: 0,
            correction: None,
        }
    }

    fn editable(&self) -> bool {
        matches!(&self.view, Some(Ok(v)) if matches!(v.state, NoteState::Draft | NoteState::Amending))
    }

    fn unsaved(&self) -> bool {
        self.edits > self.saved_edits
    }

    fn load(&mut self, ctx: &Context<Self>) {
        self.ticket += 1;
        let ticket = self.ticket;
        let request = NoteRequest {
            appointment_id: ctx.props().appointment_id.clone(),
        };
        ctx.link().send_future(async move {
            Msg::Loaded {
                ticket,
                answer: bridge::call(command::NOTE_OPEN, &request).await,
            }
        });
    }

    /// Shows `view`. While the note is being written here and still is at the core, the
    /// text typed here stays (unless `replace`): only the rest (versions, charges, codes
    /// set by the core) is taken.
    fn take(&mut self, ctx: &Context<Self>, view: NoteView, replace: bool) {
        let writable = matches!(view.state, NoteState::Draft | NoteState::Amending);
        let keep = !replace
            && writable
            && self.editable()
            && self.draft.appointment_id == view.appointment_id;
        self.revision = self.revision.max(view.draft.revision);
        if !keep {
            self.draft = view.draft.clone();
            self.epoch += 1;
            self.edits = 0;
            self.sent_edits = 0;
            self.saved_edits = 0;
            self.saves_in_flight = 0;
            self.save_error = None;
            self.timer = None;
            self.last_saved = view.saved_at.clone().map(|at| (at, view.draft.revision));
            if writable {
                if let Some(stashed) = UNSAVED.with(|u| u.borrow_mut().remove(&view.appointment_id))
                {
                    self.draft = stashed;
                    self.draft.revision = self.revision;
                    self.edits = 1;
                    self.restart_timer(ctx);
                }
            }
        }
        self.view = Some(Ok(view));
    }

    fn edited(&mut self, ctx: &Context<Self>) {
        self.edits += 1;
        self.restart_timer(ctx);
    }

    fn restart_timer(&mut self, ctx: &Context<Self>) {
        let link = ctx.link().clone();
        // Replacing the timer cancels the one pending.
        self.timer = Some(Timeout::new(SAVE_AFTER_MS, move || {
            link.send_message(Msg::Pause)
        }));
    }

    fn save(&mut self, ctx: &Context<Self>) {
        self.timer = None;
        if !self.editable() || !self.unsaved() {
            return;
        }
        if self.saves_in_flight > 0 && self.sent_edits == self.edits {
            return;
        }
        self.revision += 1;
        let revision = self.revision;
        let edits = self.edits;
        let epoch = self.epoch;
        let mut draft = self.draft.clone();
        draft.revision = revision;
        self.sent_edits = edits;
        self.saves_in_flight += 1;
        ctx.link().send_future(async move {
            let answer = bridge::call(command::NOTE_SAVE, &SaveNoteRequest { draft }).await;
            Msg::Saved {
                epoch,
                revision,
                edits,
                answer,
            }
        });
    }

    /// Saves what is unsaved when the editor goes (another visit, or the pane closed); if
    /// that fails, the draft waits here for the note to open again.
    fn flush(&mut self) {
        self.timer = None;
        if !self.editable() || !self.unsaved() {
            return;
        }
        self.revision += 1;
        let mut draft = self.draft.clone();
        draft.revision = self.revision;
        spawn_local(async move {
            let answer: Result<NoteSaved, IpcError> = bridge::call(
                command::NOTE_SAVE,
                &SaveNoteRequest {
                    draft: draft.clone(),
                },
            )
            .await;
            if answer.is_err() {
                UNSAVED.with(|u| u.borrow_mut().insert(draft.appointment_id.clone(), draft));
            }
        });
    }

    fn act(
        &mut self,
        ctx: &Context<Self>,
        replace: bool,
        call: impl std::future::Future<Output = Result<NoteView, IpcError>> + 'static,
    ) {
        self.acting = true;
        self.action_error = None;
        // A read of the note started before this must not show the note as it was.
        self.ticket += 1;
        ctx.link().send_future(async move {
            Msg::Acted {
                answer: call.await,
                replace,
            }
        });
    }

    fn fix(&mut self, fix: Fix) {
        let Some(c) = self.correction.as_mut() else {
            return;
        };
        match fix {
            Fix::Code(i, code) => {
                if let Some(l) = c.lines.get_mut(i) {
                    l.code = code;
                    l.description = None;
                }
            }
            Fix::Modifiers(i, text) => {
                if let Some(l) = c.lines.get_mut(i) {
                    l.modifiers = text;
                }
            }
            Fix::Units(i, units) => {
                if let Some(l) = c.lines.get_mut(i) {
                    l.units = units.max(1);
                }
            }
            Fix::RemoveLine(i) => {
                if i < c.lines.len() {
                    c.lines.remove(i);
                }
            }
            Fix::AddLine(o) => {
                let l = line_of(o);
                c.lines.push(LineEdit {
                    code: l.code,
                    system: l.system,
                    description: l.description,
                    modifiers: String::new(),
                    units: 1,
                });
            }
            Fix::AddDiagnosis(o) => {
                if !c.diagnoses.iter().any(|d| d.code == o.code) {
                    c.diagnoses.push(diagnosis_of(o));
                }
            }
            Fix::RemoveDiagnosis(i) => {
                if i < c.diagnoses.len() {
                    c.diagnoses.remove(i);
                }
            }
        }
    }
}

impl Component for NotePane {
    type Message = Msg;
    type Properties = NoteProps;

    fn create(ctx: &Context<Self>) -> Self {
        let mut pane = Self::empty();
        pane.load(ctx);
        pane
    }

    fn changed(&mut self, ctx: &Context<Self>, old: &Self::Properties) -> bool {
        let props = ctx.props();
        if props.appointment_id != old.appointment_id {
            // Another visit: what was typed for this one is saved first.
            self.flush();
            let (ticket, epoch) = (self.ticket, self.epoch);
            *self = Self::empty();
            // Answers about the previous visit's note are dropped.
            self.ticket = ticket;
            self.epoch = epoch + 1;
            self.load(ctx);
            return true;
        }
        if props.generation != old.generation && !self.acting {
            self.load(ctx);
        }
        false
    }

    fn destroy(&mut self, _ctx: &Context<Self>) {
        self.flush();
    }

    fn update(&mut self, ctx: &Context<Self>, msg: Msg) -> bool {
        let edit = matches!(
            msg,
            Msg::Edit(..)
                | Msg::Insert(_)
                | Msg::AtHome(_)
                | Msg::AddDiagnosis(_)
                | Msg::RemoveDiagnosis(_)
                | Msg::AddLine(_)
                | Msg::RemoveLine(_)
                | Msg::Units(..)
        );
        // Nothing changes the text while it is read-only or being signed.
        if edit && (!self.editable() || self.acting) {
            return false;
        }
        match msg {
            Msg::Loaded { ticket, answer } => {
                if ticket != self.ticket {
                    return false;
                }
                match answer {
                    Ok(view) => self.take(ctx, view, false),
                    // A failed refresh leaves the note shown (and says so).
                    Err(e) if matches!(self.view, Some(Ok(_))) => self.action_error = Some(e),
                    Err(e) => self.view = Some(Err(e)),
                }
            }
            Msg::Edit(section, text) => {
                *section.text_mut(&mut self.draft.sections) = text;
                self.edited(ctx);
            }
            Msg::Insert(which) => {
                let Some(Ok(view)) = &self.view else {
                    return false;
                };
                let lines = match which {
                    Insert::Vitals => view.inserts.vitals.clone(),
                    Insert::Problems => view.inserts.problems.clone(),
                    Insert::Medications => view.inserts.medications.clone(),
                };
                if lines.is_empty() {
                    return false;
                }
                append_lines(which.target().text_mut(&mut self.draft.sections), &lines);
                self.edited(ctx);
            }
            Msg::AtHome(home) => {
                self.draft.patient_at_home = home;
                self.edited(ctx);
                self.save(ctx);
            }
            Msg::AddDiagnosis(o) => {
                if self.draft.diagnoses.iter().any(|d| d.code == o.code) {
                    return false;
                }
                self.draft.diagnoses.push(diagnosis_of(o));
                self.edited(ctx);
            }
            Msg::RemoveDiagnosis(i) => {
                if i >= self.draft.diagnoses.len() {
                    return false;
                }
                self.draft.diagnoses.remove(i);
                self.edited(ctx);
            }
            Msg::AddLine(o) => {
                self.draft.lines.push(line_of(o));
                self.edited(ctx);
            }
            Msg::RemoveLine(i) => {
                if i >= self.draft.lines.len() {
                    return false;
                }
                self.draft.lines.remove(i);
                self.edited(ctx);
            }
            Msg::Units(i, units) => {
                let Some(line) = self.draft.lines.get_mut(i) else {
                    return false;
                };
                line.units = units.max(1);
                self.edited(ctx);
            }
            Msg::Pause => self.save(ctx),
            Msg::Saved {
                epoch,
                revision,
                edits,
                answer,
            } => {
                if epoch != self.epoch {
                    return false;
                }
                self.saves_in_flight = self.saves_in_flight.saturating_sub(1);
                match answer {
                    Ok(saved) if saved.revision > self.revision => {
                        // Stored from elsewhere after this save: this text is not stored.
                        self.revision = saved.revision;
                        self.sent_edits = 0;
                        self.save(ctx);
                    }
                    Ok(saved) => {
                        self.saved_edits = self.saved_edits.max(edits);
                        let stored = saved.revision.max(revision);
                        if self.last_saved.as_ref().is_none_or(|(_, r)| stored >= *r) {
                            self.last_saved = Some((saved.saved_at, stored));
                        }
                        if !self.unsaved() {
                            self.save_error = None;
                        }
                    }
                    Err(e) => {
                        self.save_error = Some(e);
                        // The next pause (or leaving the field) sends it again.
                        self.sent_edits = 0;
                    }
                }
            }
            Msg::Attest(yes) => self.attest = yes,
            Msg::Sign => {
                if !self.editable() || self.acting || !self.attest {
                    return false;
                }
                self.timer = None;
                self.revision += 1;
                let mut draft = self.draft.clone();
                draft.revision = self.revision;
                let request = SignNoteRequest {
                    draft,
                    attest: self.attest,
                };
                self.act(ctx, true, async move {
                    bridge::call(command::NOTE_SIGN, &request).await
                });
            }
            Msg::Amend => {
                if self.acting {
                    return false;
                }
                let request = AmendNoteRequest {
                    appointment_id: ctx.props().appointment_id.clone(),
                };
                self.act(ctx, true, async move {
                    bridge::call(command::NOTE_AMEND, &request).await
                });
            }
            Msg::Acted { answer, replace } => {
                self.acting = false;
                self.ticket += 1;
                match answer {
                    Ok(view) => {
                        if replace {
                            self.attest = false;
                        } else {
                            self.correction = None;
                        }
                        self.take(ctx, view, replace);
                    }
                    Err(e) => {
                        self.action_error = Some(e);
                        if self.unsaved() {
                            self.restart_timer(ctx);
                        }
                    }
                }
            }
            Msg::StartCorrection(charge_id) => {
                let Some(Ok(view)) = &self.view else {
                    return false;
                };
                self.correction = view
                    .charges
                    .iter()
                    .find(|c| c.charge_id == charge_id)
                    .map(Correction::of);
                self.action_error = None;
            }
            Msg::CancelCorrection => self.correction = None,
            Msg::Fix(fix) => self.fix(fix),
            Msg::Resend => {
                let Some(c) = &self.correction else {
                    return false;
                };
                if self.acting {
                    return false;
                }
                let request = CorrectChargeRequest {
                    appointment_id: ctx.props().appointment_id.clone(),
                    charge_id: c.charge_id.clone(),
                    lines: c
                        .lines
                        .iter()
                        .map(|l| ServiceLine {
                            code: l.code.trim().to_uppercase(),
                            system: l.system,
                            description: l.description.clone(),
                            modifiers: parse_modifiers(&l.modifiers),
                            units: l.units.max(1),
                        })
                        .collect(),
                    diagnoses: c.diagnoses.clone(),
                };
                self.act(ctx, false, async move {
                    bridge::call(command::CHARGE_CORRECT, &request).await
                });
            }
        }
        true
    }

    fn view(&self, ctx: &Context<Self>) -> Html {
        let body = match &self.view {
            None => html! { <p class="muted">{ "Opening the note…" }</p> },
            Some(Err(e)) => error_notice(e),
            Some(Ok(view)) => self.note(ctx, view),
        };
        let state = match &self.view {
            Some(Ok(v)) => match v.state {
                NoteState::Draft => "draft",
                NoteState::Signed => "signed",
                NoteState::Amending => "amending",
            },
            _ => "loading",
        };
        html! {
            <section id="note-pane" class="note" aria-labelledby="note-heading" data-state={state}>
                <h3 id="note-heading">{ "Visit note" }</h3>
                { body }
            </section>
        }
    }
}

impl NotePane {
    fn note(&self, ctx: &Context<Self>, view: &NoteView) -> Html {
        let link = ctx.link();
        let editable = self.editable();
        let state_text = match view.state {
            NoteState::Draft => "Draft".to_string(),
            NoteState::Signed => {
                format!(
                    "Signed (version {})",
                    view.versions.last().map_or(1, |v| v.version)
                )
            }
            NoteState::Amending => format!(
                "Amending: signing makes version {}",
                view.versions.last().map_or(1, |v| v.version + 1)
            ),
        };
        let sections = Section::ALL.iter().map(|&s| {
            let oninput = link.callback(move |e: InputEvent| {
                Msg::Edit(s, e.target_unchecked_into::<HtmlTextAreaElement>().value())
            });
            html! {
                <div class="note-field">
                    <label for={s.id()}>{ s.label() }</label>
                    <textarea id={s.id()} name={s.id()} rows="5"
                        class={classes!((!editable).then_some("readonly"))}
                        readonly={!editable || self.acting}
                        value={s.text(&self.draft.sections).to_string()}
                        {oninput}
                        onblur={link.callback(|_: FocusEvent| Msg::Pause)} />
                </div>
            }
        });
        let insert = |which: Insert, id: &'static str, label: &'static str, lines: &[String]| {
            let title = if lines.is_empty() {
                "Nothing recorded in the chart".to_string()
            } else {
                format!(
                    "Adds {} line(s) at the end of {}",
                    lines.len(),
                    which.target().label()
                )
            };
            html! {
                <button {id} type="button" {title} disabled={lines.is_empty()}
                    onclick={link.callback(move |_: MouseEvent| Msg::Insert(which))}>{ label }</button>
            }
        };
        html! {
            <>
                <p class="muted small" id="note-status">
                    { state_text }
                    if !view.template.is_empty() { { format!(" · template: {}", view.template) } }
                </p>
                if let Some(e) = &self.action_error { { error_notice(e) } }
                if editable {
                    <div class="note-inserts" role="group" aria-label="Insert from the chart">
                        { insert(Insert::Vitals, "note-insert-vitals", "Insert vitals", &view.inserts.vitals) }
                        { insert(Insert::Problems, "note-insert-problems", "Insert problems", &view.inserts.problems) }
                        { insert(Insert::Medications, "note-insert-medications", "Insert medications", &view.inserts.medications) }
                    </div>
                }
                if editable { { self.saved_indicator() } }
                { for sections }
                { self.codes(ctx, view, editable) }
                if editable {
                    <div class="note-sign">
                        <input id="note-attest" type="checkbox" checked={self.attest}
                            onchange={link.callback(|e: Event| Msg::Attest(e.target_unchecked_into::<HtmlInputElement>().checked()))} />
                        <label for="note-attest">{ "I attest this note is accurate and complete" }</label>
                        <button id="note-sign" type="button" class="primary"
                            disabled={!self.attest || self.acting}
                            aria-busy={self.acting.to_string()}
                            onclick={link.callback(|_: MouseEvent| Msg::Sign)}>{ "Sign note" }</button>
                    </div>
                } else {
                    <div class="note-sign">
                        <button id="note-amend" type="button" disabled={self.acting}
                            aria-busy={self.acting.to_string()}
                            onclick={link.callback(|_: MouseEvent| Msg::Amend)}>{ "Amend" }</button>
                    </div>
                }
                { versions(&view.versions) }
                { self.charges(ctx, view) }
            </>
        }
    }

    fn saved_indicator(&self) -> Html {
        let revision = self.last_saved.as_ref().map_or(0, |(_, r)| *r);
        let (status, text) = if self.saves_in_flight > 0 {
            ("saving", "Saving…".to_string())
        } else if let (Some(e), true) = (&self.save_error, self.unsaved()) {
            (
                "error",
                format!(
                    "Not saved: {} Your text is kept here and saved again when you pause.",
                    e.message
                ),
            )
        } else if self.unsaved() {
            ("unsaved", "Not saved yet".to_string())
        } else if let Some((at, _)) = &self.last_saved {
            ("saved", format!("Saved {}", local_time(at)))
        } else {
            ("saved", String::new())
        };
        html! {
            <p id="note-saved" class={classes!("note-saved", status)} role="status"
                data-status={status} data-saved-revision={revision.to_string()}>{ text }</p>
        }
    }

    fn codes(&self, ctx: &Context<Self>, view: &NoteView, editable: bool) -> Html {
        let link = ctx.link();
        let d = &self.draft;
        let chips = d.diagnoses.iter().enumerate().map(|(i, dx)| {
            let remove = editable.then(|| {
                html! {
                    <button type="button" class="chip-remove"
                        aria-label={format!("Remove diagnosis {}", dx.code)}
                        onclick={link.callback(move |_: MouseEvent| Msg::RemoveDiagnosis(i))}>{ "×" }</button>
                }
            });
            html! {
                <li class="chip" data-code={dx.code.clone()}>
                    <span class="chip-code">{ &dx.code }</span>
                    { format!(" {}", dx.description.clone().unwrap_or_default()) }
                    { for remove }
                </li>
            }
        });
        let lines = d.lines.iter().enumerate().map(|(i, l)| {
            let onchange = link.batch_callback(move |e: Event| {
                e.target_unchecked_into::<HtmlInputElement>()
                    .value()
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .map(|u| Msg::Units(i, u))
            });
            html! {
                <tr data-code={l.code.clone()}>
                    <td><span class="chip-code">{ &l.code }</span>
                        <span class="code">{ format!(" {}", system_label(l.system)) }</span>
                        if !l.modifiers.is_empty() { <span class="code">{ format!(" -{}", l.modifiers.join(" -")) }</span> }
                        <div class="small">{ l.description.clone().unwrap_or_default() }</div>
                    </td>
                    <td>
                        <input type="number" min="1" max="99" class="units"
                            id={format!("note-line-units-{i}")}
                            aria-label={format!("Units of {}", l.code)}
                            readonly={!editable} value={l.units.to_string()} {onchange} />
                    </td>
                    <td>
                        if editable {
                            <button type="button" aria-label={format!("Remove service {}", l.code)}
                                onclick={link.callback(move |_: MouseEvent| Msg::RemoveLine(i))}>{ "Remove" }</button>
                        }
                    </td>
                </tr>
            }
        });
        let modifiers = if view.visit_modifiers.is_empty() {
            "none".to_string()
        } else {
            view.visit_modifiers.join(", ")
        };
        html! {
            <>
                <fieldset class="note-codes">
                    <legend>{ "Diagnoses" }</legend>
                    if d.diagnoses.is_empty() {
                        <p class="muted small" id="note-dx-none">{ "No diagnosis chosen." }</p>
                    }
                    <ul id="note-dx-chips" class="chips" aria-label="Chosen diagnoses">{ for chips }</ul>
                    if editable {
                        <CodePicker id="note-dx" kind={CodeKind::Diagnosis}
                            label="Find a diagnosis (ICD-10-CM code or words)"
                            on_pick={link.callback(Msg::AddDiagnosis)} />
                    }
                </fieldset>
                <fieldset class="note-codes">
                    <legend>{ "Services" }</legend>
                    if d.lines.is_empty() {
                        <p class="muted small" id="note-lines-none">{ "No service line." }</p>
                    } else {
                        <table id="note-lines" class="note-lines">
                            <thead><tr><th scope="col">{ "Service" }</th><th scope="col">{ "Units" }</th><th scope="col"><span class="sr-only">{ "Remove" }</span></th></tr></thead>
                            <tbody>{ for lines }</tbody>
                        </table>
                    }
                    if editable {
                        <CodePicker id="note-svc" kind={CodeKind::Service}
                            label="Add a service (CPT or HCPCS code or words)"
                            on_pick={link.callback(Msg::AddLine)} />
                    }
                    <p class="small">
                        { "Visit modifiers: " }<span id="note-modifiers">{ modifiers }</span>
                        { " · Place of service: " }<span id="note-pos">{ &view.place_of_service }</span>
                    </p>
                    if view.modality == Modality::Virtual {
                        <div class="note-check">
                            <input id="note-at-home" type="checkbox" checked={d.patient_at_home}
                                disabled={!editable}
                                onchange={link.callback(|e: Event| Msg::AtHome(e.target_unchecked_into::<HtmlInputElement>().checked()))} />
                            <label for="note-at-home">{ "Patient at home" }</label>
                            <span class="muted small">{ " (place of service 10 at home, 02 elsewhere; set when signed)" }</span>
                        </div>
                    }
                </fieldset>
            </>
        }
    }

    fn charges(&self, ctx: &Context<Self>, view: &NoteView) -> Html {
        if view.charges.is_empty() {
            return html! {};
        }
        let link = ctx.link();
        let rows = view.charges.iter().map(|c| {
            let (state, text) = charge_state(&c.state);
            let correcting = self
                .correction
                .as_ref()
                .filter(|k| k.charge_id == c.charge_id);
            let id = c.charge_id.clone();
            let lines = c
                .lines
                .iter()
                .map(|l| {
                    let mods = if l.modifiers.is_empty() {
                        String::new()
                    } else {
                        format!("-{}", l.modifiers.join("-"))
                    };
                    format!("{}{} ×{}", l.code, mods, l.units)
                })
                .collect::<Vec<_>>()
                .join(", ");
            let dx = c
                .diagnoses
                .iter()
                .map(|d| d.code.clone())
                .collect::<Vec<_>>()
                .join(", ");
            html! {
                <li class={classes!("charge", state)} data-state={state} data-charge-id={c.charge_id.clone()}>
                    <div><strong class="charge-state">{ text }</strong>
                        { format!(" · control id {} · {} attempt(s)", c.control_id, c.attempts) }</div>
                    <div class="small">{ format!("{lines} · diagnoses {dx} · place of service {}", c.place_of_service) }</div>
                    if let Some(reason) = &c.reason {
                        <div class="charge-reason">{ format!("Reason: {reason}") }</div>
                    }
                    if let Some(at) = &c.acknowledged_at {
                        <div class="muted small">{ format!("Answered {}", local_date_time(at)) }</div>
                    }
                    if let Some(k) = correcting {
                        { self.correction_form(ctx, k) }
                    } else if c.state == ChargeState::Refused {
                        <button type="button" class="charge-correct" disabled={self.acting}
                            onclick={link.callback(move |_: MouseEvent| Msg::StartCorrection(id.clone()))}>{ "Correct and resend" }</button>
                    }
                </li>
            }
        });
        html! {
            <>
                <h4 id="note-charges-heading">{ "Charges" }</h4>
                if !view.billing_configured {
                    <p class="muted small" id="note-billing-off">{ "No billing interface is configured: charges are kept here, not sent." }</p>
                }
                <ul id="note-charges" class="note-list" aria-labelledby="note-charges-heading">{ for rows }</ul>
            </>
        }
    }

    fn correction_form(&self, ctx: &Context<Self>, k: &Correction) -> Html {
        let link = ctx.link();
        let lines = k.lines.iter().enumerate().map(|(i, l)| {
            let code_id = format!("fix-code-{i}");
            let mods_id = format!("fix-mods-{i}");
            let units_id = format!("fix-units-{i}");
            html! {
                <div class="fix-line" role="group" aria-label={format!("Service line {}", i + 1)}>
                    <label for={code_id.clone()}>{ "Code" }</label>
                    <input id={code_id} type="text" class="code-input" value={l.code.clone()}
                        oninput={link.callback(move |e: InputEvent| Msg::Fix(Fix::Code(i, e.target_unchecked_into::<HtmlInputElement>().value())))} />
                    <label for={mods_id.clone()}>{ "Modifiers" }</label>
                    <input id={mods_id} type="text" class="code-input" value={l.modifiers.clone()}
                        oninput={link.callback(move |e: InputEvent| Msg::Fix(Fix::Modifiers(i, e.target_unchecked_into::<HtmlInputElement>().value())))} />
                    <label for={units_id.clone()}>{ "Units" }</label>
                    <input id={units_id} type="number" min="1" max="99" class="units" value={l.units.to_string()}
                        onchange={link.batch_callback(move |e: Event| e.target_unchecked_into::<HtmlInputElement>().value().trim().parse::<u32>().ok().map(|u| Msg::Fix(Fix::Units(i, u))))} />
                    <button type="button" aria-label={format!("Remove service line {}", i + 1)}
                        onclick={link.callback(move |_: MouseEvent| Msg::Fix(Fix::RemoveLine(i)))}>{ "Remove" }</button>
                </div>
            }
        });
        let chips = k.diagnoses.iter().enumerate().map(|(i, dx)| {
            html! {
                <li class="chip" data-code={dx.code.clone()}>
                    <span class="chip-code">{ &dx.code }</span>
                    { format!(" {}", dx.description.clone().unwrap_or_default()) }
                    <button type="button" class="chip-remove" aria-label={format!("Remove diagnosis {}", dx.code)}
                        onclick={link.callback(move |_: MouseEvent| Msg::Fix(Fix::RemoveDiagnosis(i)))}>{ "×" }</button>
                </li>
            }
        });
        html! {
            <div id="charge-correction" class="charge-correction" role="group" aria-label="Correct the refused charge">
                { for lines }
                <CodePicker id="fix-svc" kind={CodeKind::Service} label="Add a service line"
                    on_pick={link.callback(|o| Msg::Fix(Fix::AddLine(o)))} />
                <ul class="chips" aria-label="Diagnoses of the charge">{ for chips }</ul>
                <CodePicker id="fix-dx" kind={CodeKind::Diagnosis} label="Add a diagnosis"
                    on_pick={link.callback(|o| Msg::Fix(Fix::AddDiagnosis(o)))} />
                <div class="fix-actions">
                    <button id="charge-resend" type="button" class="primary"
                        disabled={self.acting || k.lines.is_empty()}
                        onclick={link.callback(|_: MouseEvent| Msg::Resend)}>{ "Resend corrected charge" }</button>
                    <button id="charge-cancel" type="button"
                        onclick={link.callback(|_: MouseEvent| Msg::CancelCorrection)}>{ "Cancel" }</button>
                </div>
            </div>
        }
    }
}

fn versions(versions: &[NoteVersion]) -> Html {
    if versions.is_empty() {
        return html! {};
    }
    html! {
        <>
            <h4 id="note-versions-heading">{ "Signed versions" }</h4>
            <ul id="note-versions" class="note-list" aria-labelledby="note-versions-heading">
                { for versions.iter().map(|v| {
                    let (key, text) = delivery(&v.delivery);
                    let document = match &v.delivery {
                        NoteDelivery::InChart { document_id } => Some(document_id.clone()),
                        _ => None,
                    };
                    html! {
                        <li class={classes!("note-version", key)} data-version={v.version.to_string()} data-delivery={key}
                            data-document-id={document}>
                            <strong>{ format!("Version {}", v.version) }</strong>
                            { format!(" · signed {} by {}", local_date_time(&v.signed_at), v.signed_by) }
                            <div class="delivery">{ text }</div>
                        </li>
                    }
                }) }
            </ul>
        </>
    }
}

#[derive(Properties, PartialEq)]
pub struct PickerProps {
    /// Prefix of the elements' ids: `{id}-search`, `{id}-results`, `{id}-option-{n}`.
    pub id: AttrValue,
    pub kind: CodeKind,
    pub label: AttrValue,
    pub on_pick: Callback<CodeOption>,
}

pub enum PickerMsg {
    Input(String),
    Search,
    Found(u64, Result<Vec<CodeOption>, IpcError>),
    Key(KeyboardEvent),
    Pick(usize),
    Close,
}

/// A code search box with its results as a listbox (a combobox: arrows move, Enter picks,
/// Escape closes).
pub struct CodePicker {
    query: String,
    results: Vec<CodeOption>,
    active: Option<usize>,
    open: bool,
    searching: bool,
    error: Option<IpcError>,
    timer: Option<Timeout>,
    ticket: u64,
}

impl Component for CodePicker {
    type Message = PickerMsg;
    type Properties = PickerProps;

    fn create(_ctx: &Context<Self>) -> Self {
        Self {
            query: String::new(),
            results: Vec::new(),
            active: None,
            open: false,
            searching: false,
            error: None,
            timer: None,
            ticket: 0,
        }
    }

    fn update(&mut self, ctx: &Context<Self>, msg: PickerMsg) -> bool {
        match msg {
            PickerMsg::Input(q) => {
                self.query = q;
                self.ticket += 1;
                if self.query.trim().is_empty() {
                    self.timer = None;
                    self.results.clear();
                    self.open = false;
                    self.searching = false;
                } else {
                    let link = ctx.link().clone();
                    self.timer = Some(Timeout::new(SEARCH_AFTER_MS, move || {
                        link.send_message(PickerMsg::Search)
                    }));
                }
            }
            PickerMsg::Search => {
                self.timer = None;
                self.ticket += 1;
                let ticket = self.ticket;
                let request = CodeSearchRequest {
                    kind: ctx.props().kind,
                    query: self.query.trim().to_string(),
                    limit: SEARCH_LIMIT,
                };
                self.searching = true;
                ctx.link().send_future(async move {
                    PickerMsg::Found(ticket, bridge::call(command::CODE_SEARCH, &request).await)
                });
            }
            PickerMsg::Found(ticket, answer) => {
                if ticket != self.ticket {
                    return false;
                }
                self.searching = false;
                self.open = true;
                self.active = None;
                match answer {
                    Ok(found) => {
                        self.results = found;
                        self.error = None;
                    }
                    Err(e) => {
                        self.results.clear();
                        self.error = Some(e);
                    }
                }
            }
            PickerMsg::Key(e) => {
                let n = self.results.len();
                match e.key().as_str() {
                    "ArrowDown" if n > 0 => {
                        e.prevent_default();
                        self.open = true;
                        self.active = Some(self.active.map_or(0, |i| (i + 1) % n));
                    }
                    "ArrowUp" if n > 0 => {
                        e.prevent_default();
                        self.open = true;
                        self.active = Some(self.active.map_or(n - 1, |i| (i + n - 1) % n));
                    }
                    "Enter" if self.open && n > 0 => {
                        e.prevent_default();
                        let i = self.active.unwrap_or(0);
                        return Component::update(self, ctx, PickerMsg::Pick(i));
                    }
                    "Escape" if self.open => {
                        e.prevent_default();
                        self.open = false;
                        self.active = None;
                    }
                    _ => return false,
                }
            }
            PickerMsg::Pick(i) => {
                if let Some(option) = self.results.get(i).cloned() {
                    ctx.props().on_pick.emit(option);
                    self.query.clear();
                    self.results.clear();
                    self.open = false;
                    self.active = None;
                    self.ticket += 1;
                }
            }
            PickerMsg::Close => {
                self.open = false;
                self.active = None;
            }
        }
        true
    }

    fn view(&self, ctx: &Context<Self>) -> Html {
        let link = ctx.link();
        let id = &ctx.props().id;
        let search_id = format!("{id}-search");
        let list_id = format!("{id}-results");
        let option_id = |i: usize| format!("{id}-option-{i}");
        let expanded = self.open && !self.results.is_empty();
        let active = self.active.filter(|_| expanded).map(option_id);
        html! {
            <div class="code-picker">
                <label for={search_id.clone()}>{ ctx.props().label.clone() }</label>
                <input id={search_id} type="search" role="combobox" autocomplete="off"
                    aria-autocomplete="list" aria-expanded={expanded.to_string()}
                    aria-controls={list_id.clone()} aria-activedescendant={active}
                    value={self.query.clone()}
                    oninput={link.callback(|e: InputEvent| PickerMsg::Input(e.target_unchecked_into::<HtmlInputElement>().value()))}
                    onkeydown={link.callback(PickerMsg::Key)}
                    onblur={link.callback(|_: FocusEvent| PickerMsg::Close)} />
                <ul id={list_id} role="listbox" class="code-results" hidden={!expanded}
                    aria-label={ctx.props().label.clone()}>
                    { for self.results.iter().enumerate().map(|(i, o)| {
                        let selected = self.active == Some(i);
                        html! {
                            <li id={option_id(i)} role="option" aria-selected={selected.to_string()}
                                class={classes!("code-option", selected.then_some("active"))}
                                data-code={o.code.clone()}
                                // Keeps the focus in the search box, so its blur does not
                                // close the list before the click lands.
                                onmousedown={Callback::from(|e: MouseEvent| e.prevent_default())}
                                onclick={link.callback(move |_: MouseEvent| PickerMsg::Pick(i))}>
                                <span class="chip-code">{ &o.code }</span>
                                if let Some(s) = o.system { <span class="code">{ format!(" {}", system_label(s)) }</span> }
                                { format!(" {}", o.description.clone().unwrap_or_default()) }
                            </li>
                        }
                    }) }
                </ul>
                if self.searching {
                    <p class="muted small" role="status">{ "Searching…" }</p>
                } else if self.open && self.results.is_empty() && self.error.is_none() {
                    <p class="muted small" role="status">{ "No matching code." }</p>
                }
                if let Some(e) = &self.error { { error_notice(e) } }
            </div>
        }
    }
}
