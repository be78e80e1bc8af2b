//! The sync engine: initial sync, push of the outbox, pull of changes.

use crate::Result;
use hearth_fhir::{
    reference_in, Client, Entry, FhirError, Page, RawResource, RetryPolicy, TokenSource,
};
use hearth_ipc::{ProblemView, SyncProgress};
use hearth_model::clock::{Clock, SystemClock, Zone};
use hearth_model::row::{resource_row_projected, resource_row_raw};
use hearth_model::settings::{PatientScope, SyncConfig};
use hearth_model::sync_link::{EhrLink, SyncPulse};
use hearth_model::ModelError;
use hearth_store::{Method, OutboxEntry, OutboxState, ResourceRow, Store};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The identifier system of resources Hearth creates: the value is the write's idempotency
/// key, and the create is conditional on it.
pub const HEARTH_WRITE_SYSTEM: &str = "urn:hearth:write";

/// The pull cursor of system history, and the starting point of every per-type cursor.
const CURSOR_SINCE: &str = "pull.since";
/// When the working set was last compared with the EHR in full.
const CURSOR_RECONCILED: &str = "reconcile.done";
/// Where a comparison under way stopped (`Type/id` compared last; empty when none is).
const CURSOR_RECONCILE_AT: &str = "reconcile.at";
const CURSOR_INITIAL: &str = "initial.completed";
const CURSOR_INITIAL_STARTED: &str = "initial.started";
/// A write the EHR answers with a server error this many times is given up as failed (shown).
const MAX_SERVER_ERRORS: u32 = 5;
/// Rows per transaction during the initial sync: fewer commits rewrite the index pages fewer
/// times (about 13 % less CPU than 5,000 in the ingest bench), two batches (~50 MB) in memory.
const INGEST_BATCH: usize = 20_000;
/// At most this many records kept as unreadable are fetched again per round.
const REFETCH_REJECTED_PER_ROUND: usize = 50;
/// Ids asked for in one reconciliation search (`_id=a,b,...`).
const RECONCILE_CHUNK: usize = 100;
/// Reconciliation searches per round: a large working set is compared over several rounds,
/// so pulls are never held up for long.
const RECONCILE_CHUNKS_PER_ROUND: usize = 20;

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub poll_interval: Duration,
    pub scope: PatientScope,
    pub schedule_days_back: u32,
    pub schedule_days_ahead: u32,
    pub page_size: u32,
    /// How far back each pull reaches before the server's time of the previous one, against
    /// late commits and EHR nodes whose clocks differ.
    pub overlap: chrono::Duration,
    /// How often the working set is compared with the EHR by id and version (finds deletions
    /// a `_lastUpdated` search never shows).
    pub reconcile_every: Duration,
    /// Who the audit log names for the engine's own writes.
    pub actor: String,
    /// How changes are pulled.
    pub pull: PullMode,
    /// The engine's only source of the present time.
    pub clock: Arc<dyn Clock>,
    /// The clinic's time zone: the schedule window's days.
    pub zone: Zone,
}

/// How the engine asks the EHR what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// System history when the CapabilityStatement offers `history-system`, else searches.
    Auto,
    /// `GET [base]/_history?_since=`: one request, deletions included.
    History,
    /// `GET [base]/[type]?_lastUpdated=ge` for each type Hearth keeps (EHRs without system
    /// history); deletions are not seen this way.
    LastUpdated,
}

/// The types pulled one by one when the EHR has no system history.
pub const PULL_TYPES: &[&str] = &[
    "Patient",
    "Appointment",
    "Slot",
    "Schedule",
    "Encounter",
    "Condition",
    "MedicationRequest",
    "AllergyIntolerance",
    "Observation",
    "DiagnosticReport",
    "Procedure",
    "Immunization",
    "CarePlan",
    "DocumentReference",
    "Practitioner",
    "Organization",
];

impl EngineConfig {
    pub fn from_settings(s: &SyncConfig) -> Self {
        Self {
            poll_interval: Duration::from_secs(u64::from(s.poll_interval_seconds)),
            scope: s.patients,
            schedule_days_back: s.schedule_days_back,
            schedule_days_ahead: s.schedule_days_ahead,
            page_size: 200,
            overlap: chrono::Duration::seconds(i64::from(s.overlap_seconds)),
            reconcile_every: Duration::from_secs(u64::from(s.reconcile_minutes) * 60),
            actor: "hearth-sync".into(),
            pull: PullMode::Auto,
            clock: Arc::new(SystemClock),
            zone: Zone::system(),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub stored: usize,
    pub deleted: usize,
    pub sent: usize,
    pub conflicts: usize,
    pub failed: usize,
    pub unreadable: usize,
    /// Local records found gone at the EHR by a reconciliation, and records fetched again
    /// because their version differed.
    pub reconciled_gone: usize,
    pub reconciled_stale: usize,
    /// Writes found already applied at the EHR when sent again (an answer lost to a crash or
    /// a dropped connection): recorded as sent, not applied twice.
    pub replayed: usize,
}

impl Round {
    /// Whether the round may have changed the local records (meeting unreadable records
    /// again does not).
    fn touched_records(&self) -> bool {
        *self
            != Round {
                unreadable: self.unreadable,
                ..Round::default()
            }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub online: Option<bool>,
    pub last_success: Option<String>,
    pub progress: Option<SyncProgress>,
    pub last_error: Option<String>,
    pub initial_done: bool,
}

/// What the UI and the user's actions share with a running engine.
#[derive(Clone)]
pub struct SyncHandle {
    pub(crate) store: Arc<Store>,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) client: Client,
    /// Tells listeners (the window's top bar, the arrival notifications) that what they show
    /// may have changed, so nobody has to ask every few seconds.
    pub(crate) pulse: Arc<tokio::sync::watch::Sender<SyncPulse>>,
}

impl SyncHandle {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the engine to run a round now (a write was queued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Follows the engine: the value changes whenever what the top bar or the sync panel shows
    /// may have changed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<SyncPulse> {
        self.pulse.subscribe()
    }

    /// What the top bar shows changed (progress, a round's end, a problem).
    pub(crate) fn status_changed(&self) {
        self.pulse.send_modify(|p| p.status += 1);
    }

    /// The local records changed too (a round stored or deleted some, or the user's choice).
    pub(crate) fn records_changed(&self) {
        self.pulse.send_modify(|p| {
            p.status += 1;
            p.records += 1;
        });
    }

    /// The user changed something (a record, the queue, a conflict): listeners are told, and
    /// the engine runs a round now to send it.
    pub(crate) fn changed_locally(&self) {
        self.records_changed();
        self.wake();
    }
}

/// Keeps one store in step with one EHR.
pub struct Engine {
    handle: SyncHandle,
    config: EngineConfig,
    /// Whether the EHR offers system history (asked once).
    history: std::sync::OnceLock<bool>,
}

impl Engine {
    pub fn new(client: Client, store: Arc<Store>, config: EngineConfig) -> Self {
        Self {
            handle: SyncHandle {
                store,
                state: Arc::default(),
                wake: Arc::default(),
                client,
                pulse: Arc::new(tokio::sync::watch::Sender::new(SyncPulse::default())),
            },
            config,
            history: std::sync::OnceLock::new(),
        }
    }

    /// Whether changes are pulled from system history (else by `_lastUpdated` per type).
    async fn pull_by_history(&self) -> Result<bool> {
        match self.config.pull {
            PullMode::History => Ok(true),
            PullMode::LastUpdated => Ok(false),
            PullMode::Auto => {
                if let Some(h) = self.history.get() {
                    return Ok(*h);
                }
                let h = self.client().capabilities().await?.history_system;
                Ok(*self.history.get_or_init(|| h))
            }
        }
    }

    /// The engine for a workstation connected to an EHR.
    pub fn for_workstation(link: &EhrLink, tokens: Arc<dyn TokenSource>) -> Result<Self> {
        let client = Client::new(&link.fhir_base_url, tokens, RetryPolicy::default())?;
        let config = EngineConfig {
            clock: link.clock.clone(),
            zone: link.zone,
            ..EngineConfig::from_settings(&link.sync)
        };
        Ok(Self::new(client, link.store.clone(), config))
    }

    pub fn handle(&self) -> SyncHandle {
        self.handle.clone()
    }

    fn client(&self) -> &Client {
        &self.handle.client
    }

    fn store(&self) -> &Store {
        &self.handle.store
    }

    /// Now, by the engine's clock, as RFC 3339 UTC with milliseconds.
    fn now_rfc3339(&self) -> String {
        rfc3339(self.config.clock.now())
    }

    /// Runs rounds until `shutdown` completes: every poll interval, and at once when woken.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Rounds start on a fixed beat (not a pause after each round), so a change at the EHR
        // waits at most one interval for the round that fetches it.
        let mut beat = tokio::time::interval(self.config.poll_interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = beat.tick() => {}
                () = self.handle.wake.notified() => {}
            }
            let _ = self.round().await;
        }
    }

    /// One round: the initial sync if not done yet, then push, then pull. The state the top
    /// bar shows is updated either way.
    pub async fn round(&self) -> Result<Round> {
        let result = self.round_inner().await;
        let mut st = self.handle.state();
        match &result {
            Ok(_) => {
                st.online = Some(true);
                st.last_success = Some(self.now_rfc3339());
                st.last_error = None;
            }
            Err(e) => {
                if e.is_offline() {
                    st.online = Some(false);
                }
                st.last_error = Some(e.for_people());
            }
        }
        st.progress = None;
        drop(st);
        // Whether the records on screen may have changed: not after a round that only met
        // unreadable records again, nor after one that could not reach the EHR.
        match &result {
            Ok(r) if !r.touched_records() => self.handle.status_changed(),
            Err(e) if e.is_offline() => self.handle.status_changed(),
            _ => self.handle.records_changed(),
        }
        result
    }

    async fn round_inner(&self) -> Result<Round> {
        let mut round = Round::default();
        if self.store().cursor(CURSOR_INITIAL)?.is_none() {
            self.initial_sync(&mut round).await?;
        }
        self.handle.state().initial_done = true;
        self.push(&mut round).await?;
        self.pull(&mut round).await?;
        self.refetch(&mut round).await?;
        self.refetch_rejected(&mut round).await?;
        if self.reconcile_due()? {
            self.reconcile_step(&mut round, RECONCILE_CHUNKS_PER_ROUND)
                .await?;
        }
        Ok(round)
    }

    fn progress(&self, done: usize, total: usize, label: &str) {
        self.handle.state().progress = Some(SyncProgress {
            done: u32::try_from(done).unwrap_or(u32::MAX),
            total: u32::try_from(total).unwrap_or(u32::MAX),
            label: label.to_string(),
        });
        self.handle.status_changed();
    }

    /// Downloads the working set. Resumable: a patient already complete is not fetched twice
    /// after a restart mid-way, and the pull cursor is set from the server's clock at the
    /// start, so nothing changed meanwhile is missed.
    pub async fn initial_sync(&self, round: &mut Round) -> Result<()> {
        let client = self.client();
        let size = self.config.page_size.to_string();
        self.progress(0, 1, "Connecting to the EHR");
        // The server's clock at the start (the first answer's Bundle time or `Date` header),
        // minus the overlap: never the workstation's clock, which may differ from the EHR's.
        let first = client.search("Schedule", &[("_count", &size)]).await?;
        // Kept from the first attempt: a resumed initial sync must not skip what changed
        // between the attempts for the patients already fetched.
        // A server time that is not an instant, or that runs ahead of the workstation's clock
        // (a wrong `Date`, a far-future Bundle time), would set a cursor that skips every
        // later change: the earlier of the two is taken (an earlier cursor only costs
        // versions fetched again and skipped).
        let started = match self.store().cursor(CURSOR_INITIAL_STARTED)? {
            Some(s) if instant(&s).is_some() => s,
            _ => {
                let now = self.config.clock.now();
                let at = first
                    .server_time()
                    .and_then(instant)
                    .map_or(now, |t| t.min(now));
                let s = rfc3339(at);
                self.store().set_cursor(CURSOR_INITIAL_STARTED, &s)?;
                s
            }
        };
        let mut patients = BTreeSet::new();
        self.store_search(first, round, &mut patients).await?;

        let today = self.config.zone.today(self.config.clock.as_ref());
        let from = today - chrono::Days::new(u64::from(self.config.schedule_days_back));
        let to = today + chrono::Days::new(u64::from(self.config.schedule_days_ahead) + 1);
        let (ge, lt) = (format!("ge{from}"), format!("lt{to}"));
        self.progress(0, 1, "Schedule");
        let appts = client
            .search(
                "Appointment",
                &[("date", &ge), ("date", &lt), ("_count", &size)],
            )
            .await?;
        self.store_search(appts, round, &mut patients).await?;
        let slots = client
            .search("Slot", &[("start", &ge), ("start", &lt), ("_count", &size)])
            .await?;
        self.store_search(slots, round, &mut patients).await?;

        if self.config.scope == PatientScope::All {
            self.progress(0, 1, "Patient list");
            let page = client.search("Patient", &[("_count", &size)]).await?;
            self.store_search(page, round, &mut patients).await?;
        }
        // Patients' records go to the store in large transactions (each commit rewrites the
        // index pages it touched), committed on a blocking thread while the next patients are
        // fetched and read: at most one batch in flight. A patient counts as done only once
        // its records are stored (its cursor is set in the same transaction).
        let total = patients.len();
        let mut in_flight = None;
        let fetched = self
            .fetch_patients(&patients, total, round, &mut in_flight)
            .await;
        // Whatever happened, the batch already handed over is waited for (and counted).
        let settled = self.settle(&mut in_flight, round).await;
        fetched?;
        settled?;
        self.progress(total, total, "Patient records");
        let since = shift(&started, -self.config.overlap);
        self.store().set_cursor(CURSOR_SINCE, &since)?;
        // The working set was just read whole: the first comparison is one interval away.
        self.store()
            .set_cursor(CURSOR_RECONCILED, &self.now_rfc3339())?;
        self.store()
            .set_cursor(CURSOR_INITIAL, &self.now_rfc3339())?;
        Ok(())
    }

    /// Fetches each patient not done yet, handing its records to the store in batches.
    async fn fetch_patients(
        &self,
        patients: &BTreeSet<String>,
        total: usize,
        round: &mut Round,
        in_flight: &mut Option<InFlight>,
    ) -> Result<()> {
        let mut batch = Vec::new();
        let mut batch_done = Vec::new();
        for (done, patient) in patients.iter().enumerate() {
            self.progress(done, total, "Patient records");
            let cursor = format!("initial.patient.{patient}");
            if self.store().cursor(&cursor)?.is_some() {
                continue;
            }
            batch.extend(self.fetch_patient(patient, round).await?);
            batch_done.push((cursor, "done".to_string()));
            if batch.len() >= INGEST_BATCH {
                self.settle(in_flight, round).await?;
                *in_flight = Some(
                    self.spawn_store(std::mem::take(&mut batch), std::mem::take(&mut batch_done)),
                );
            }
        }
        self.settle(in_flight, round).await?;
        *in_flight = Some(self.spawn_store(batch, batch_done));
        Ok(())
    }

    /// Starts storing `rows` (and setting `cursors`, in the same transaction) on a blocking
    /// thread.
    fn spawn_store(&self, rows: Vec<ResourceRow>, cursors: Vec<(String, String)>) -> InFlight {
        let store = self.handle.store.clone();
        tokio::task::spawn_blocking(move || store.ingest_and_set(&rows, &cursors).map(|r| r.0))
    }

    /// Waits for the batch in flight, if any.
    async fn settle(&self, in_flight: &mut Option<InFlight>, round: &mut Round) -> Result<()> {
        let Some(task) = in_flight.take() else {
            return Ok(());
        };
        match task.await {
            Ok(stored) => {
                round.stored += stored?;
                Ok(())
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Everything in one patient's compartment (and what it references).
    async fn fetch_patient(&self, patient: &str, round: &mut Round) -> Result<Vec<ResourceRow>> {
        let page = self
            .client()
            .search(&format!("Patient/{patient}/$everything"), &[])
            .await?;
        let mut sink = BTreeSet::new();
        self.collect_all(page, round, &mut sink).await
    }

    /// Stores rows in one transaction, on a blocking thread: a large commit must not hold
    /// up the async runtime that also answers the window.
    async fn store_rows(&self, rows: Vec<ResourceRow>, round: &mut Round) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let store = self.handle.store.clone();
        let stored = blocking(move || store.ingest(&rows)).await?.0;
        round.stored += stored;
        Ok(())
    }

    /// Every page of a search into the store as it arrives (never all pages in memory),
    /// collecting the patients it mentions.
    async fn store_search(
        &self,
        first: Page,
        round: &mut Round,
        patients: &mut BTreeSet<String>,
    ) -> Result<()> {
        let mut page = Some(first);
        while let Some(mut p) = page {
            let rows = self.page_rows(&mut p, round, patients)?;
            self.store_rows(rows, round).await?;
            page = self.client().next_page(&p).await?;
        }
        Ok(())
    }

    /// The rows of every page of a search, collecting the patients it mentions (one
    /// patient's compartment: bounded).
    async fn collect_all(
        &self,
        mut page: Page,
        round: &mut Round,
        patients: &mut BTreeSet<String>,
    ) -> Result<Vec<ResourceRow>> {
        let mut all = Vec::new();
        loop {
            all.extend(self.page_rows(&mut page, round, patients)?);
            match self.client().next_page(&page).await? {
                Some(next) => page = next,
                None => return Ok(all),
            }
        }
    }

    /// One page's rows; its unreadable entries are kept by name (and fetched again later).
    fn page_rows(
        &self,
        page: &mut Page,
        round: &mut Round,
        patients: &mut BTreeSet<String>,
    ) -> Result<Vec<ResourceRow>> {
        let (mut rows, problems) = rows_of(std::mem::take(&mut page.entries));
        round.unreadable += problems.len();
        for p in problems {
            self.record_problem(&p.record, &p.message)?;
        }
        for row in &mut rows {
            // Compressed here, while the store's one writer commits the previous batch.
            row.pack();
            if row.resource_type == "Patient" {
                patients.insert(row.id.clone());
            } else if let Some(p) = &row.patient_id {
                patients.insert(p.clone());
            }
        }
        Ok(rows)
    }

    /// The store's row for a served resource; a resource the views cannot index is kept as
    /// unreadable (naming it and the field) and left out.
    fn row(&self, r: &RawResource) -> Result<Option<ResourceRow>> {
        match row_of(r) {
            Ok(row) => Ok(Some(row)),
            Err(p) => {
                self.record_problem(&p.record, &p.message)?;
                Ok(None)
            }
        }
    }

    fn problem(&self, e: &FhirError) -> Result<()> {
        let p = fhir_problem(e);
        self.record_problem(&p.record, &p.message)
    }

    /// Keeps an unreadable record by name in the store: shown in the sync panel and the
    /// hearth-sync tool, and fetched again on later rounds when its type and id are known.
    fn record_problem(&self, record: &str, message: &str) -> Result<()> {
        // Fetched again by what the server named; kept and shown only as printable text.
        let resource = reference_in(record);
        let record = if record.is_empty() {
            "(unnamed record)".to_string()
        } else {
            printable(record)
        };
        self.store().reject(
            &record,
            resource.as_ref().map(|(t, i)| (t.as_str(), i.as_str())),
            &printable(message),
        )?;
        self.handle.status_changed();
        Ok(())
    }

    /// Pulls what changed at the server since the cursors: system history (one cursor), or a
    /// `_lastUpdated` search per type, each type with its own cursor.
    ///
    /// A cursor moves only once everything its request returned is stored, and only to the
    /// **server's** clock at that request (the Bundle's time, else its `Date` header) minus
    /// the overlap: never to the newest change seen (which skips a change to a type searched
    /// earlier, or one committed late) and never to the workstation's clock.
    pub async fn pull(&self, round: &mut Round) -> Result<()> {
        let Some(since) = self.store().cursor(CURSOR_SINCE)? else {
            return Ok(());
        };
        let since = self.trusted_cursor(since)?;
        if self.pull_by_history().await? {
            let first = self
                .client()
                .history_since(Some(&since), self.config.page_size)
                .await?;
            return self.pull_source(CURSOR_SINCE, &since, first, round).await;
        }
        for ty in PULL_TYPES {
            let name = format!("{CURSOR_SINCE}.{ty}");
            let since = match self.store().cursor(&name)? {
                Some(c) if trusted(&c, self.config.clock.now()) => c,
                _ => since.clone(),
            };
            let first = self
                .client()
                .changed_since(ty, &since, self.config.page_size)
                .await?;
            self.pull_source(&name, &since, first, round).await?;
        }
        Ok(())
    }

    /// Reads every page of one pull request into the store, page by page, then moves its
    /// cursor.
    async fn pull_source(
        &self,
        cursor: &str,
        since: &str,
        first: Page,
        round: &mut Round,
    ) -> Result<()> {
        // The server's time when it answered the first page: everything committed before it
        // (less the overlap, for late commits and lagging nodes) is in this answer.
        let server_time = first.server_time().and_then(instant);
        let mut newest: Option<chrono::DateTime<chrono::Utc>> = None;
        // History lists newest first: the first entry for a resource is its state.
        let mut seen = HashSet::new();
        let mut page = Some(first);
        while let Some(mut p) = page {
            let mut rows = Vec::new();
            let mut deleted = Vec::new();
            let mut new_patients = BTreeSet::new();
            for entry in std::mem::take(&mut p.entries) {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        self.problem(&e)?;
                        round.unreadable += 1;
                        continue;
                    }
                };
                let (ty, id, last_updated) = match &entry {
                    Entry::Resource(r) => (&r.resource_type, &r.id, r.last_updated.clone()),
                    Entry::Deleted {
                        resource_type,
                        id,
                        last_updated,
                    } => (resource_type, id, last_updated.clone()),
                };
                if let Some(lu) = last_updated.as_deref().and_then(instant) {
                    newest = newest.max(Some(lu));
                }
                if !seen.insert((ty.clone(), id.clone())) {
                    continue;
                }
                match entry {
                    Entry::Deleted {
                        resource_type, id, ..
                    } => deleted.push((resource_type, id)),
                    Entry::Resource(r) => {
                        if r.version_id.is_some()
                            && self.store().version_of(&r.resource_type, &r.id)? == r.version_id
                        {
                            continue;
                        }
                        let Some(row) = self.row(&r)? else {
                            round.unreadable += 1;
                            continue;
                        };
                        if !self.in_working_set(&row, &mut new_patients)? {
                            continue;
                        }
                        rows.push(row);
                    }
                }
            }
            // New patients first: if fetching one fails, their appointment is not stored
            // either, so the next pull sees it again and tries again.
            for patient in new_patients {
                let rows = self.fetch_patient(&patient, round).await?;
                self.store_rows(rows, round).await?;
            }
            self.store_rows(rows, round).await?;
            if !deleted.is_empty() {
                let store = self.handle.store.clone();
                round.deleted += blocking(move || store.delete_resources(&deleted)).await?;
            }
            page = self.client().next_page(&p).await?;
        }
        // The cursor moves to the server's time, but never beyond the newest change this very
        // request returned: a server time that runs ahead (a wrong `Date` header, a far-future
        // or garbage Bundle time) must not make later changes, stamped by the real clock,
        // fall behind the cursor for good. A server that gives no time at all (no Bundle
        // time, no `Date`, against RFC 9110 §6.6.1): the newest change. Nothing returned:
        // the cursor stays (the same request again costs an empty answer).
        let Some(newest) = newest else {
            return Ok(());
        };
        let reached = server_time.map_or(newest, |t| t.min(newest));
        let next = rfc3339(reached - self.config.overlap);
        if later(&next, since) {
            self.store().set_cursor(cursor, &next)?;
        }
        Ok(())
    }

    /// The pull cursor to use: `since` itself, unless it is not an instant or lies far ahead
    /// of the workstation's clock (set from a server time that was wrong before cursors were
    /// bounded by the changes seen): then the start of the initial sync, which loses nothing
    /// (versions already held are skipped), and the cursor is set back to it. The per-type
    /// cursors start from it too.
    fn trusted_cursor(&self, since: String) -> Result<String> {
        let now = self.config.clock.now();
        if trusted(&since, now) {
            return Ok(since);
        }
        // The initial sync's start by the server's clock, else its end by the workstation's.
        let back = [CURSOR_INITIAL_STARTED, CURSOR_INITIAL]
            .into_iter()
            .find_map(|name| {
                self.store()
                    .cursor(name)
                    .map(|c| c.filter(|s| trusted(s, now)))
                    .transpose()
            })
            .transpose()?
            .map_or_else(|| rfc3339(now), |s| shift(&s, -self.config.overlap));
        self.store().set_cursor(CURSOR_SINCE, &back)?;
        Ok(back)
    }

    /// Fetches again the records a pull held back while a local change waited (or whose
    /// deletion it held back), now that nothing of ours waits on them.
    pub async fn refetch(&self, round: &mut Round) -> Result<()> {
        for (ty, id) in self.store().refetch_ready()? {
            self.fetch_again(&ty, &id, round).await?;
            self.store().refetched(&ty, &id)?;
        }
        Ok(())
    }

    /// Reads one record again and stores it (or deletes it, gone at the EHR). One the EHR
    /// still serves unreadable stays kept by name.
    async fn fetch_again(&self, ty: &str, id: &str, round: &mut Round) -> Result<()> {
        match self.client().read(ty, id).await {
            // Asked for one record, answered with another: unreadable, not stored in its place.
            Ok(r) if r.resource_type != ty || r.id != id => {
                let message = format!("a read of it answered {}/{} instead", r.resource_type, r.id);
                self.record_problem(&format!("{ty}/{id}"), &message)?;
                round.unreadable += 1;
            }
            Ok(r) => {
                if let Some(row) = self.row(&r)? {
                    self.store_rows(vec![row], round).await?;
                } else {
                    round.unreadable += 1;
                }
            }
            Err(FhirError::Gone { .. } | FhirError::NotFound { .. }) => {
                round.deleted += self
                    .store()
                    .delete_resources(&[(ty.to_string(), id.to_string())])?;
                self.store().unreject_resource(ty, id)?;
            }
            Err(e @ FhirError::Malformed { .. }) => {
                // Named by where it was read, which is the record itself.
                let p = fhir_problem(&e);
                self.store()
                    .reject(&format!("{ty}/{id}"), Some((ty, id)), &p.message)?;
                round.unreadable += 1;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Fetches again the records kept as unreadable (those whose type and id are known), the
    /// longest-waiting first: once the EHR serves them readable, they are stored and no longer
    /// listed.
    pub async fn refetch_rejected(&self, round: &mut Round) -> Result<()> {
        let mut rejected = self.store().rejected()?;
        rejected.sort_by(|a, b| a.last_seen.cmp(&b.last_seen));
        for r in rejected.into_iter().take(REFETCH_REJECTED_PER_ROUND) {
            let Some((ty, id)) = &r.resource else {
                continue;
            };
            // Stored at last (which settles it, however it was named), or named again.
            self.fetch_again(ty, id, round).await?;
        }
        Ok(())
    }

    /// Whether the working set is due for a comparison with the EHR (or one is under way).
    fn reconcile_due(&self) -> Result<bool> {
        if self
            .store()
            .cursor(CURSOR_RECONCILE_AT)?
            .is_some_and(|p| !p.is_empty())
        {
            return Ok(true);
        }
        let Some(at) = self.store().cursor(CURSOR_RECONCILED)? else {
            return Ok(true);
        };
        let every = chrono::Duration::from_std(self.config.reconcile_every)
            .unwrap_or(chrono::Duration::MAX);
        Ok(!later(&shift(&at, every), &self.now_rfc3339()))
    }

    /// Compares every record held with the EHR by id and version, to the end.
    pub async fn reconcile(&self, round: &mut Round) -> Result<()> {
        while !self.reconcile_step(round, usize::MAX).await? {}
        Ok(())
    }

    /// Goes on comparing the records held with the EHR by id and version (`_id` searches
    /// asking only for `id,meta`), at most `chunks` searches of [`RECONCILE_CHUNK`] ids, from
    /// where the last step stopped: a record the EHR no longer has is deleted here (a
    /// `_lastUpdated` search never shows deletions), one whose version differs is fetched
    /// again. Returns whether the sweep reached the end.
    async fn reconcile_step(&self, round: &mut Round, mut chunks: usize) -> Result<bool> {
        let position = self
            .store()
            .cursor(CURSOR_RECONCILE_AT)?
            .filter(|p| !p.is_empty());
        let (from_type, from_id) = match position.as_deref().and_then(|p| p.split_once('/')) {
            Some((t, i)) => (Some(t.to_string()), Some(i.to_string())),
            None => (None, None),
        };
        for ty in self.store().resource_types()? {
            if from_type.as_ref().is_some_and(|f| ty < *f) {
                continue;
            }
            let mut after = if from_type.as_ref() == Some(&ty) {
                from_id.clone()
            } else {
                None
            };
            loop {
                if chunks == 0 {
                    return Ok(false);
                }
                let held = self
                    .store()
                    .versions_of_type(&ty, after.as_deref(), RECONCILE_CHUNK)?;
                let Some((last, _)) = held.last() else {
                    break;
                };
                let last = last.clone();
                self.reconcile_chunk(&ty, &held, round).await?;
                self.store()
                    .set_cursor(CURSOR_RECONCILE_AT, &format!("{ty}/{last}"))?;
                chunks -= 1;
                if held.len() < RECONCILE_CHUNK {
                    break;
                }
                after = Some(last);
            }
        }
        self.store().set_cursor(CURSOR_RECONCILE_AT, "")?;
        self.store()
            .set_cursor(CURSOR_RECONCILED, &self.now_rfc3339())?;
        Ok(true)
    }

    async fn reconcile_chunk(
        &self,
        ty: &str,
        held: &[(String, Option<String>)],
        round: &mut Round,
    ) -> Result<()> {
        let ids: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
        let there = self.versions_at_ehr(ty, &ids).await?;
        let mut gone = Vec::new();
        for (id, version) in held {
            match there.get(id) {
                None => gone.push(id),
                Some(v) if v.is_some() && v != version => {
                    round.reconciled_stale += 1;
                    self.fetch_again(ty, id, round).await?;
                }
                Some(_) => {}
            }
        }
        // Each missing one is confirmed by a read before it is deleted: a server whose search
        // leaves something out must not make Hearth drop it.
        for id in gone {
            match self.client().read(ty, id).await {
                Err(FhirError::Gone { .. } | FhirError::NotFound { .. }) => {
                    let n = self
                        .store()
                        .delete_resources(&[(ty.to_string(), id.clone())])?;
                    round.reconciled_gone += n;
                    round.deleted += n;
                }
                Ok(_) | Err(FhirError::Malformed { .. }) => {
                    round.reconciled_stale += 1;
                    self.fetch_again(ty, id, round).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// `id -> versionId` of the given ids of one type that the EHR has now.
    async fn versions_at_ehr(
        &self,
        ty: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Option<String>>> {
        let joined = ids.join(",");
        let count = ids.len().to_string();
        let mut page = Some(
            self.client()
                .search(
                    ty,
                    &[
                        ("_id", &joined),
                        ("_elements", "id,meta"),
                        ("_count", &count),
                    ],
                )
                .await?,
        );
        let mut there = HashMap::new();
        while let Some(mut p) = page {
            for entry in std::mem::take(&mut p.entries) {
                // A summary that cannot be read still says the record exists: its full
                // read (if the version differs) names what is wrong.
                match entry {
                    Ok(Entry::Resource(r)) if r.resource_type == ty => {
                        there.insert(r.id, r.version_id);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let FhirError::Malformed { what, .. } = &e {
                            if let Some((t, id)) = reference_in(what) {
                                if t == ty {
                                    there.insert(id, None);
                                }
                            }
                        }
                    }
                }
            }
            page = self.client().next_page(&p).await?;
        }
        Ok(there)
    }

    /// With the schedule scope, only records of patients already kept (and shared records such
    /// as practitioners) are taken; an appointment for a new patient brings that patient's
    /// records.
    fn in_working_set(
        &self,
        row: &ResourceRow,
        new_patients: &mut BTreeSet<String>,
    ) -> Result<bool> {
        if self.config.scope == PatientScope::All {
            return Ok(true);
        }
        let patient = match (row.resource_type.as_str(), &row.patient_id) {
            ("Patient", _) => Some(row.id.clone()),
            (_, Some(p)) => Some(p.clone()),
            _ => None,
        };
        let Some(patient) = patient else {
            return Ok(true);
        };
        if self.store().contains("Patient", &patient)? {
            return Ok(true);
        }
        if row.resource_type == "Appointment" {
            new_patients.insert(patient);
            return Ok(true);
        }
        Ok(false)
    }

    /// Sends the outbox, oldest first. A resource whose earlier write is in conflict or
    /// failed gets no later write sent until the user settles it. Stops at the first sign the
    /// EHR is unreachable (the rest stay queued).
    pub async fn push(&self, round: &mut Round) -> Result<()> {
        let mut blocked: HashSet<(String, String)> = HashSet::new();
        for entry in self.store().pending()? {
            let key = (
                entry.write.resource_type.clone(),
                entry.write.resource_id.clone().unwrap_or_default(),
            );
            if entry.write.resource_id.is_some() && blocked.contains(&key) {
                continue;
            }
            let if_match = match entry.after_seq {
                None => entry.write.if_match.clone(),
                Some(prev) => {
                    let prev = self.store().outbox_entry(prev)?;
                    match (prev.state, &prev.result_version) {
                        (OutboxState::Sent, Some(v)) => Some(format!("W/\"{v}\"")),
                        (OutboxState::Sent, None) => entry.write.if_match.clone(),
                        (OutboxState::Failed, _) => {
                            // Built on a change the EHR refused: refused too, and shown.
                            self.store().record_attempt(
                                entry.seq,
                                OutboxState::Failed,
                                Some("builds on an earlier change the EHR refused"),
                            )?;
                            blocked.insert(key);
                            round.failed += 1;
                            continue;
                        }
                        _ => {
                            blocked.insert(key);
                            continue;
                        }
                    }
                }
            };
            match self.send(&entry, if_match.as_deref()).await {
                Ok(Sent::Applied(resource)) => {
                    let row = match &resource {
                        Some(r) => self.row(r)?,
                        None => None,
                    };
                    let version = resource.as_ref().and_then(|r| r.version_id.as_deref());
                    self.store().mark_sent(entry.seq, version, row.as_ref())?;
                    round.sent += 1;
                }
                Ok(Sent::Replayed { ours, current }) => {
                    round.replayed += 1;
                    let row = self.row(&current)?;
                    // A replay's result is the version that carries our write, not whatever
                    // came after it: a later queued write must not skip someone's change.
                    let version = ours.or_else(|| current.version_id.clone());
                    self.store()
                        .mark_sent(entry.seq, version.as_deref(), row.as_ref())?;
                    round.sent += 1;
                }
                Ok(Sent::Conflict(current)) => {
                    self.store().mark_conflict(
                        entry.seq,
                        current.as_ref().map(|r| r.json.as_str()),
                        current.as_ref().and_then(|r| r.version_id.as_deref()),
                    )?;
                    blocked.insert(key);
                    round.conflicts += 1;
                }
                Err(
                    e @ (FhirError::Unreachable { .. }
                    | FhirError::Server {
                        status: 502 | 504, ..
                    }
                    | FhirError::Unauthorized(_)
                    | FhirError::Auth(_)),
                ) => {
                    // Offline (a gateway answering 502 Bad Gateway or 504 Gateway Timeout,
                    // RFC 9110 §15.6.3 and §15.6.5, cannot reach the EHR either), or the
                    // sign-in lapsed: the write stays queued, whatever the number of tries,
                    // and goes when the EHR can be reached as the user again.
                    self.store().record_attempt(
                        entry.seq,
                        OutboxState::Pending,
                        Some(&e.to_string()),
                    )?;
                    return Err(e.into());
                }
                Err(e @ FhirError::Server { .. }) => {
                    // This write makes the EHR fail: it waits for the next round (the rest go
                    // on), and only server errors count toward giving it up.
                    let state = self.store().record_server_error(
                        entry.seq,
                        &e.to_string(),
                        MAX_SERVER_ERRORS,
                    )?;
                    blocked.insert(key);
                    if state == OutboxState::Failed {
                        round.failed += 1;
                    }
                }
                Err(e) => {
                    self.store().record_attempt(
                        entry.seq,
                        OutboxState::Failed,
                        Some(&e.to_string()),
                    )?;
                    blocked.insert(key);
                    round.failed += 1;
                }
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        entry: &OutboxEntry,
        if_match: Option<&str>,
    ) -> std::result::Result<Sent, FhirError> {
        let w = &entry.write;
        let body = w.body.as_deref().unwrap_or("");
        let client = self.client();
        match (w.method, &w.resource_id) {
            (Method::Create, _) => {
                let cond = format!("identifier={HEARTH_WRITE_SYSTEM}|{}", w.idempotency_key);
                let written = client.create(&w.resource_type, body, Some(&cond)).await?;
                Ok(if written.created {
                    Sent::Applied(Some(written.resource))
                } else {
                    // If-None-Exist found ours: an earlier send landed.
                    Sent::Replayed {
                        ours: written.resource.version_id.clone(),
                        current: written.resource,
                    }
                })
            }
            (Method::Update, Some(id)) => {
                match client.update(&w.resource_type, id, body, if_match).await {
                    Ok(written) => Ok(Sent::Applied(Some(written.resource))),
                    Err(FhirError::VersionConflict { .. }) => {
                        // Ours already, from a send whose answer was lost (crash, dropped
                        // connection)? Then it landed once; otherwise it is a conflict.
                        if let Some((ours, current)) = self
                            .find_own_version(&w.resource_type, id, &w.idempotency_key)
                            .await?
                        {
                            return Ok(Sent::Replayed { ours, current });
                        }
                        let current = match client.read(&w.resource_type, id).await {
                            Ok(r) => Some(r),
                            Err(FhirError::Gone { .. } | FhirError::NotFound { .. }) => None,
                            Err(e) => return Err(e),
                        };
                        Ok(Sent::Conflict(current))
                    }
                    Err(e) => Err(e),
                }
            }
            (Method::Delete, Some(id)) => {
                client.delete(&w.resource_type, id).await?;
                Ok(Sent::Applied(None))
            }
            (_, None) => Err(FhirError::Invalid(format!(
                "outbox entry {} has no resource id",
                entry.seq
            ))),
        }
    }

    /// Whether a version of the resource carries our write's `meta.source`: then that
    /// version's id, and the resource's current version.
    async fn find_own_version(
        &self,
        resource_type: &str,
        id: &str,
        key: &str,
    ) -> std::result::Result<Option<(Option<String>, RawResource)>, FhirError> {
        let source = format!("\"urn:uuid:{key}\"");
        let mut page = self.client().instance_history(resource_type, id).await?;
        loop {
            for entry in page.entries.iter().flatten() {
                if let Entry::Resource(r) = entry {
                    if r.json.contains(&source) {
                        let v: serde_json::Value =
                            serde_json::from_str(&r.json).unwrap_or_default();
                        if v.pointer("/meta/source").and_then(|s| s.as_str())
                            == Some(&source[1..source.len() - 1])
                        {
                            // Ours is that version; the newest is what the store should show.
                            let current = self.client().read(resource_type, id).await?;
                            return Ok(Some((r.version_id.clone(), current)));
                        }
                    }
                }
            }
            match self.client().next_page(&page).await? {
                Some(next) => page = next,
                None => return Ok(None),
            }
        }
    }
}

/// The store rows for a page's resources, and the problems of those that cannot be stored
/// (each naming the record and the field). Deletions are skipped.
pub fn rows_of(
    entries: Vec<std::result::Result<Entry, FhirError>>,
) -> (Vec<ResourceRow>, Vec<ProblemView>) {
    let mut rows = Vec::with_capacity(entries.len());
    let mut problems = Vec::new();
    for entry in entries {
        match entry {
            Ok(Entry::Resource(r)) => match row_of_owned(r) {
                Ok(row) => rows.push(row),
                Err(p) => problems.push(p),
            },
            Ok(Entry::Deleted { .. }) => {}
            Err(e) => problems.push(fhir_problem(&e)),
        }
    }
    (rows, problems)
}

fn row_of(r: &RawResource) -> std::result::Result<ResourceRow, ProblemView> {
    resource_row_raw(&r.json).map_err(|e| data_problem(r.reference(), e))
}

fn row_of_owned(r: RawResource) -> std::result::Result<ResourceRow, ProblemView> {
    let reference = r.reference();
    resource_row_projected(r.json, r.projected).map_err(|e| data_problem(reference, e))
}

fn data_problem(record: String, e: ModelError) -> ProblemView {
    ProblemView {
        record,
        message: match e {
            ModelError::InvalidData { field, problem, .. } => format!("field `{field}` {problem}"),
            other => other.to_string(),
        },
    }
}

fn fhir_problem(e: &FhirError) -> ProblemView {
    match e {
        FhirError::Malformed {
            what,
            field,
            problem,
        } => ProblemView {
            record: what.clone(),
            message: format!("field `{field}` {problem}"),
        },
        other => ProblemView {
            record: String::new(),
            message: other.to_string(),
        },
    }
}

enum Sent {
    /// Applied now: the server's copy (none for a delete).
    Applied(Option<RawResource>),
    /// Applied already by an earlier send whose answer was lost (a crash, a dropped
    /// connection): the version that carries our write, when the server names it, and the
    /// resource as it is now.
    Replayed {
        ours: Option<String>,
        current: RawResource,
    },
    /// 412 from someone else's change: the server's current version, if it still exists.
    Conflict(Option<RawResource>),
}

/// A batch being stored on a blocking thread: how many rows it stored.
type InFlight = tokio::task::JoinHandle<hearth_store::Result<usize>>;

/// Runs store work on tokio's blocking threads; a panic there is a panic here.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> hearth_store::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => Ok(result?),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Longest name or message of an unreadable record kept (characters).
const PROBLEM_TEXT_LIMIT: usize = 300;

/// The server's text (a fullUrl, a problem) as it may be kept, shown and printed: control
/// characters (terminal escapes, line breaks that would forge lines of hearth-sync's output)
/// replaced, and cut to [`PROBLEM_TEXT_LIMIT`] characters.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(PROBLEM_TEXT_LIMIT)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if text.chars().nth(PROBLEM_TEXT_LIMIT).is_some() {
        out.push('…');
    }
    out
}

/// How far ahead of the workstation's clock a stored cursor may lie and still be used (a
/// server clock ahead of the workstation's, by no more than this, is legitimate).
const CURSOR_LEAD_LIMIT: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// An RFC 3339 instant, in UTC; `None` for anything else (garbage a server sent).
fn instant(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Whether a stored cursor can be used: an instant not far ahead of `now`.
fn trusted(cursor: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    instant(cursor).is_some_and(|t| t <= now + CURSOR_LEAD_LIMIT)
}

/// Whether instant `a` is after `b` (both RFC 3339; unparsable compares as text).
fn later(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a > b,
        _ => a > b,
    }
}

/// `instant + by`, as RFC 3339 UTC with milliseconds.
fn shift(instant: &str, by: chrono::Duration) -> String {
    chrono::DateTime::parse_from_rfc3339(instant)
        .map(|t| {
            (t.with_timezone(&chrono::Utc) + by)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .unwrap_or_else(|_| instant.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_the_projected_elements_equal_rows_from_the_whole_text() {
        // Good and bad resources touching every projected element: the row (or the problem)
        // made from what the Bundle reader captured equals the one made from the text.
        let resources = [
            r#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"2","lastUpdated":"2026-01-01T00:00:00Z"},"subject":{"reference":"Patient/p1"},"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{"value":70}}"#,
            r#"{"resourceType":"Observation","id":"o2","subject":{"reference":"Patient/p1"},"effectivePeriod":{"start":"2026-01-02T10:00:00Z"}}"#,
            r#"{"resourceType":"Appointment","id":"a1","start":"2026-01-01T10:00:00+01:00","participant":[{"actor":{"reference":"Practitioner/d1"}},{"actor":{"reference":"Patient/p2"}}]}"#,
            r#"{"resourceType":"AllergyIntolerance","id":"al1","patient":{"reference":"Patient/p3"},"code":{"text":"peanut"}}"#,
            r#"{"resourceType":"Encounter","id":"e1","subject":"Patient/p1"}"#,
            r#"{"resourceType":"Appointment","id":"a2","start":"after lunch"}"#,
            r#"{"resourceType":"Observation","id":"o3","code":"8867-4"}"#,
            r#"{"resourceType":"Patient","id":"p1","name":[{"family":"Quokka"}]}"#,
        ];
        let entries: Vec<String> = resources
            .iter()
            .map(|r| format!(r#"{{"resource":{r}}}"#))
            .collect();
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{}]}}"#,
            entries.join(",")
        );
        let page = hearth_fhir::parse_bundle(&body).unwrap();
        for (entry, text) in page.entries.into_iter().zip(resources) {
            let Ok(Entry::Resource(r)) = entry else {
                panic!("unreadable entry: {entry:?}")
            };
            let reference = r.reference();
            let from_parts = row_of_owned(r).map_err(|p| p.message);
            let from_text = resource_row_raw(text).map_err(|e| data_problem(reference, e).message);
            assert_eq!(from_parts, from_text, "{text}");
        }
    }

    #[test]
    fn the_servers_text_is_kept_printable_and_short() {
        assert_eq!(
            printable("http://h/Patient/p1\n\u{1b}]0;x\u{7}"),
            "http://h/Patient/p1\u{fffd}\u{fffd}]0;x\u{fffd}"
        );
        let long = "a".repeat(PROBLEM_TEXT_LIMIT + 5);
        assert_eq!(printable(&long).chars().count(), PROBLEM_TEXT_LIMIT + 1);
    }

    #[test]
    fn instants_compare_as_times_and_shift() {
        assert!(later("2026-01-01T00:00:01Z", "2026-01-01T00:00:00.500Z"));
        assert!(!later("2026-01-01T01:00:00+02:00", "2026-01-01T00:00:00Z"));
        assert_eq!(
            shift("2026-01-01T00:00:01.000Z", chrono::Duration::seconds(-2)),
            "2025-12-31T23:59:59.000Z"
        );
    }
}
