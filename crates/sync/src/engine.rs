//! The sync engine: initial sync, push of the outbox, pull of changes.

use crate::Result;
use hearth_fhir::{Client, Entry, FhirError, Page, RawResource, RetryPolicy, TokenSource};
use hearth_ipc::{ProblemView, SyncProgress};
use hearth_model::clock::{Clock, SystemClock, Zone};
use hearth_model::row::{resource_row_owned, resource_row_raw};
use hearth_model::settings::{PatientScope, SyncConfig};
use hearth_model::sync_link::EhrLink;
use hearth_model::ModelError;
use hearth_store::{Method, OutboxEntry, ResourceRow, Store};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The identifier system of resources Hearth creates: the value is the write's idempotency
/// key, and the create is conditional on it.
pub const HEARTH_WRITE_SYSTEM: &str = "urn:hearth:write";

const CURSOR_SINCE: &str = "pull.since";
const CURSOR_INITIAL: &str = "initial.completed";
const CURSOR_INITIAL_STARTED: &str = "initial.started";
/// A write the EHR answers with a server error this many times is given up as failed (shown).
const MAX_SERVER_ERRORS: u32 = 5;
/// Rows per transaction during the initial sync.
const INGEST_BATCH: usize = 5_000;
/// At most this many unreadable records are listed (the count goes on).
const MAX_PROBLEMS: usize = 200;

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub poll_interval: Duration,
    pub scope: PatientScope,
    pub schedule_days_back: u32,
    pub schedule_days_ahead: u32,
    pub page_size: u32,
    /// How far back each pull reaches before the cursor, against late commits.
    pub overlap: chrono::Duration,
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
            overlap: chrono::Duration::seconds(2),
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
    /// Writes found already applied at the EHR when sent again (an answer lost to a crash or
    /// a dropped connection): recorded as sent, not applied twice.
    pub replayed: usize,
}

#[derive(Default)]
pub(crate) struct State {
    pub online: Option<bool>,
    pub last_success: Option<String>,
    pub progress: Option<SyncProgress>,
    pub unreadable: Vec<ProblemView>,
    pub unreadable_total: usize,
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
        Ok(round)
    }

    fn progress(&self, done: usize, total: usize, label: &str) {
        self.handle.state().progress = Some(SyncProgress {
            done: u32::try_from(done).unwrap_or(u32::MAX),
            total: u32::try_from(total).unwrap_or(u32::MAX),
            label: label.to_string(),
        });
    }

    /// Downloads the working set. Resumable: a patient already complete is not fetched twice
    /// after a restart mid-way, and the pull cursor is set from the server's clock at the
    /// start, so nothing changed meanwhile is missed.
    pub async fn initial_sync(&self, round: &mut Round) -> Result<()> {
        let client = self.client();
        let size = self.config.page_size.to_string();
        self.progress(0, 1, "Connecting to the EHR");
        // The server's clock at the start (from the first answer), minus the overlap.
        let first = client.search("Schedule", &[("_count", &size)]).await?;
        // Kept from the first attempt: a resumed initial sync must not skip what changed
        // between the attempts for the patients already fetched.
        let started = match self.store().cursor(CURSOR_INITIAL_STARTED)? {
            Some(s) => s,
            None => {
                let s = first
                    .timestamp
                    .clone()
                    .unwrap_or_else(|| self.now_rfc3339());
                self.store().set_cursor(CURSOR_INITIAL_STARTED, &s)?;
                s
            }
        };
        let mut patients = BTreeSet::new();
        let rows = self.collect_all(first, round, &mut patients).await?;
        self.store_rows(&rows, round)?;

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
        let rows = self.collect_all(appts, round, &mut patients).await?;
        self.store_rows(&rows, round)?;
        let slots = client
            .search("Slot", &[("start", &ge), ("start", &lt), ("_count", &size)])
            .await?;
        let rows = self.collect_all(slots, round, &mut patients).await?;
        self.store_rows(&rows, round)?;

        if self.config.scope == PatientScope::All {
            self.progress(0, 1, "Patient list");
            let page = client.search("Patient", &[("_count", &size)]).await?;
            let rows = self.collect_all(page, round, &mut patients).await?;
            self.store_rows(&rows, round)?;
        }
        // Patients' records go to the store in large transactions (each commit rewrites the
        // index pages it touched); a patient counts as done only once its records are stored.
        let total = patients.len();
        let mut batch = Vec::new();
        let mut batch_done = Vec::new();
        for (done, patient) in patients.iter().enumerate() {
            self.progress(done, total, "Patient records");
            let cursor = format!("initial.patient.{patient}");
            if self.store().cursor(&cursor)?.is_some() {
                continue;
            }
            batch.extend(self.fetch_patient(patient, round).await?);
            batch_done.push(cursor);
            if batch.len() >= INGEST_BATCH {
                self.store_rows(&batch, round)?;
                for c in batch_done.drain(..) {
                    self.store().set_cursor(&c, "done")?;
                }
                batch.clear();
            }
        }
        self.store_rows(&batch, round)?;
        for c in batch_done {
            self.store().set_cursor(&c, "done")?;
        }
        self.progress(total, total, "Patient records");
        let since = shift(&started, -self.config.overlap);
        self.store().set_cursor(CURSOR_SINCE, &since)?;
        self.store()
            .set_cursor(CURSOR_INITIAL, &self.now_rfc3339())?;
        Ok(())
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

    fn store_rows(&self, rows: &[ResourceRow], round: &mut Round) -> Result<()> {
        round.stored += self.store().ingest(rows)?.0;
        Ok(())
    }

    /// The rows of every page of a search, collecting the patients it mentions.
    async fn collect_all(
        &self,
        mut page: Page,
        round: &mut Round,
        patients: &mut BTreeSet<String>,
    ) -> Result<Vec<ResourceRow>> {
        let mut all = Vec::new();
        loop {
            let (rows, problems) = rows_of(std::mem::take(&mut page.entries));
            round.unreadable += problems.len();
            for p in problems {
                self.record_problem(p.record, p.message);
            }
            for row in &rows {
                if row.resource_type == "Patient" {
                    patients.insert(row.id.clone());
                } else if let Some(p) = &row.patient_id {
                    patients.insert(p.clone());
                }
            }
            all.extend(rows);
            match self.client().next_page(&page).await? {
                Some(next) => page = next,
                None => return Ok(all),
            }
        }
    }

    /// The store's row for a served resource; a resource the views cannot index is reported
    /// (naming it and the field) and left out.
    fn row(&self, r: &RawResource) -> Option<ResourceRow> {
        match row_of(r) {
            Ok(row) => Some(row),
            Err(p) => {
                self.record_problem(p.record, p.message);
                None
            }
        }
    }

    fn problem(&self, e: &FhirError) {
        let p = fhir_problem(e);
        self.record_problem(p.record, p.message);
    }

    fn record_problem(&self, record: String, message: String) {
        let mut st = self.handle.state();
        st.unreadable
            .retain(|p| p.record != record || record.is_empty());
        st.unreadable_total += 1;
        if st.unreadable.len() < MAX_PROBLEMS {
            st.unreadable.push(ProblemView { record, message });
        }
    }

    /// Pulls what changed at the server since the cursor.
    pub async fn pull(&self, round: &mut Round) -> Result<()> {
        let since = match self.store().cursor(CURSOR_SINCE)? {
            Some(s) => s,
            None => return Ok(()),
        };
        let client = self.client();
        let mut sources = Vec::new();
        let mut searched_from = None;
        if self.pull_by_history().await? {
            sources.push(
                client
                    .history_since(Some(&since), self.config.page_size)
                    .await?,
            );
        } else {
            for ty in PULL_TYPES {
                sources.push(
                    client
                        .changed_since(ty, &since, self.config.page_size)
                        .await?,
                );
            }
            searched_from = sources.first().and_then(|p| p.timestamp.clone());
        }
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        let mut deleted = Vec::new();
        let mut newest: Option<String> = None;
        let mut new_patients = BTreeSet::new();
        for mut page in sources {
            loop {
                for entry in std::mem::take(&mut page.entries) {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            self.problem(&e);
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
                    if let Some(lu) = last_updated {
                        if newest.as_ref().is_none_or(|n| later(&lu, n)) {
                            newest = Some(lu);
                        }
                    }
                    // History lists newest first: the first entry for a resource is its state.
                    if !seen.insert((ty.clone(), id.clone())) {
                        continue;
                    }
                    match entry {
                        Entry::Deleted {
                            resource_type, id, ..
                        } => deleted.push((resource_type, id)),
                        Entry::Resource(r) => {
                            if self.store().version_of(&r.resource_type, &r.id)? == r.version_id
                                && r.version_id.is_some()
                            {
                                continue;
                            }
                            let Some(row) = self.row(&r) else {
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
                match client.next_page(&page).await? {
                    Some(next) => page = next,
                    None => break,
                }
            }
        }
        // New patients first: if fetching one fails, their appointment is not stored either,
        // so the next pull sees it again and tries again.
        for p in new_patients {
            let rows = self.fetch_patient(&p, round).await?;
            self.store_rows(&rows, round)?;
        }
        round.stored += self.store().ingest(&rows)?.0;
        round.deleted += self.store().delete_resources(&deleted)?;
        // Type by type, the searches ran one after another: the next pull starts from the
        // server's time at the first of them, not from the newest change seen in any.
        if let Some(first_search) = searched_from {
            newest = Some(first_search);
        }
        if let Some(n) = newest {
            let next = shift(&n, -self.config.overlap);
            if later(&next, &since) {
                self.store().set_cursor(CURSOR_SINCE, &next)?;
            }
        }
        Ok(())
    }

    /// Fetches again the records a pull held back while a local change waited (or whose
    /// deletion it held back), now that nothing of ours waits on them.
    pub async fn refetch(&self, round: &mut Round) -> Result<()> {
        for (ty, id) in self.store().refetch_ready()? {
            match self.client().read(&ty, &id).await {
                Ok(r) => {
                    if let Some(row) = self.row(&r) {
                        self.store_rows(&[row], round)?;
                    }
                }
                Err(FhirError::Gone { .. } | FhirError::NotFound { .. }) => {
                    round.deleted += self.store().delete_resources(&[(ty.clone(), id.clone())])?;
                }
                Err(e) => return Err(e.into()),
            }
            self.store().refetched(&ty, &id)?;
        }
        Ok(())
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
                    match (prev.state.as_str(), &prev.result_version) {
                        ("sent", Some(v)) => Some(format!("W/\"{v}\"")),
                        ("sent", None) => entry.write.if_match.clone(),
                        ("failed", _) => {
                            // Built on a change the EHR refused: refused too, and shown.
                            self.store().record_attempt(
                                entry.seq,
                                "failed",
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
                Ok(Sent::Done(resource, replayed)) => {
                    round.replayed += usize::from(replayed.is_some());
                    let row = resource.as_ref().and_then(|r| self.row(r));
                    // A replay's result is the version that carries our write, not whatever
                    // came after it: a later queued write must not skip someone's change.
                    let version = replayed
                        .flatten()
                        .or_else(|| resource.as_ref().and_then(|r| r.version_id.clone()));
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
                Err(e @ FhirError::Server { .. }) if entry.attempts + 1 >= MAX_SERVER_ERRORS => {
                    self.store()
                        .record_attempt(entry.seq, "failed", Some(&e.to_string()))?;
                    blocked.insert(key);
                    round.failed += 1;
                }
                Err(e @ FhirError::Server { .. }) => {
                    // This write makes the EHR fail: it waits for the next round, the rest go on.
                    self.store()
                        .record_attempt(entry.seq, "pending", Some(&e.to_string()))?;
                    blocked.insert(key);
                }
                Err(e) if e.is_transient() => {
                    self.store()
                        .record_attempt(entry.seq, "pending", Some(&e.to_string()))?;
                    return Err(e.into());
                }
                Err(e @ (FhirError::Unauthorized(_) | FhirError::Auth(_))) => {
                    self.store()
                        .record_attempt(entry.seq, "pending", Some(&e.to_string()))?;
                    return Err(e.into());
                }
                Err(e) => {
                    self.store()
                        .record_attempt(entry.seq, "failed", Some(&e.to_string()))?;
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
                Ok(Sent::Done(
                    Some(written.resource.clone()),
                    (!written.created).then(|| written.resource.version_id.clone()),
                ))
            }
            (Method::Update, Some(id)) => {
                match client.update(&w.resource_type, id, body, if_match).await {
                    Ok(written) => Ok(Sent::Done(Some(written.resource), None)),
                    Err(FhirError::VersionConflict { .. }) => {
                        // Ours already, from a send whose answer was lost (crash, dropped
                        // connection)? Then it landed once; otherwise it is a conflict.
                        if let Some((ours, current)) = self
                            .find_own_version(&w.resource_type, id, &w.idempotency_key)
                            .await?
                        {
                            return Ok(Sent::Done(Some(current), Some(ours)));
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
                Ok(Sent::Done(None, None))
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
    resource_row_owned(r.json).map_err(|e| data_problem(reference, e))
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
    /// Applied: the server's copy (none for a delete); for a replay (applied already by an
    /// earlier send whose answer was lost), `Some(the version that carries our write)`.
    Done(Option<RawResource>, Option<Option<String>>),
    /// 412 from someone else's change: the server's current version, if it still exists.
    Conflict(Option<RawResource>),
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
    fn instants_compare_as_times_and_shift() {
        assert!(later("2026-01-01T00:00:01Z", "2026-01-01T00:00:00.500Z"));
        assert!(!later("2026-01-01T01:00:00+02:00", "2026-01-01T00:00:00Z"));
        assert_eq!(
            shift("2026-01-01T00:00:01.000Z", chrono::Duration::seconds(-2)),
            "2025-12-31T23:59:59.000Z"
        );
    }
}
