//! The sync engine: initial sync, push of the outbox, pull of changes, the audit log sent.

mod audit;
mod bill;
mod initial;
mod pull;
mod push;
mod reconcile;
mod rows;

use rows::fhir_problem;
pub use rows::rows_of;

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

pub use hearth_model::fhir::HEARTH_WRITE_SYSTEM;

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
    /// Where charges go (HL7 v2 over MLLP); none: charges wait.
    pub billing: Option<hearth_model::settings::BillingTarget>,
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
            billing: None,
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
    /// Audit entries sent to the EHR as AuditEvents.
    pub audit_sent: usize,
    /// Charges billing accepted, refused, and sends that got no answer (tried again later).
    pub billed: usize,
    pub billing_refused: usize,
    pub billing_retries: usize,
}

impl Round {
    /// Whether the round may have changed the local records (meeting unreadable records
    /// again does not, nor sending the audit log: the views reload when records change, and
    /// each view is audited, so counting it would make the window reload after every round).
    fn touched_records(&self) -> bool {
        *self
            != Round {
                unreadable: self.unreadable,
                audit_sent: self.audit_sent,
                billing_retries: self.billing_retries,
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
            billing: link.billing.clone(),
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
        // Billing beside the EHR's stages: an EHR that cannot be reached stops those, a
        // billing system that cannot be reached (or answers slowly) stops only billing, and
        // neither delays the other's writes.
        let mut billing = Round::default();
        let (result, billed) = tokio::join!(self.round_inner(), self.bill(&mut billing));
        let result = match (result, billed) {
            (Ok(mut r), Ok(())) => {
                r.billed = billing.billed;
                r.billing_refused = billing.billing_refused;
                r.billing_retries = billing.billing_retries;
                Ok(r)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
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
        // After the records: a long audit backlog never delays them.
        self.send_audit(&mut round).await?;
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
    use super::rows::*;
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
