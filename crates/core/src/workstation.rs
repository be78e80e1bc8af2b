mod feeds;

pub use feeds::{ArrivalFeed, CallFeed, RoomFeed, StatusFeed};

mod calls;
mod notes;

use crate::clock::{Clock, Zone};
use crate::config::MachineConfig;
use crate::launch::LaunchOptions;
use crate::signon::SignOn;
use crate::store::{ClinicalStore, MemoryStore};
use crate::sync_link::{EhrLink, QueuedOnce, SyncLink};
use crate::visits::VisitDesk;
use crate::{chart, encounter, profile, schedule, CoreError, KEYCHAIN_SERVICE};
use chrono::NaiveDate;
use hearth_ipc::{
    AppStatus, Chart, ChartRequest, Connectivity, DataMode, InviteRole, Modality,
    ResolveConflictRequest, RoomService, ScheduleDay, ScheduleRequest, SessionState,
    SettleFailedWriteRequest, SyncPanel, SyncSummary, UserSummary, VisitAdmitRequest, VisitInvite,
    VisitInviteRequest, VisitRoom, VisitRoomRequest, VisitStatus,
};
use std::sync::{Arc, OnceLock};

/// The application: one per window, shared by every command.
///
/// A workstation whose configuration is broken still starts, so the window can tell IT what
/// is wrong: every request then answers the configuration error.
pub struct Workstation {
    clock: Arc<dyn Clock>,
    /// The clinic's time zone: the schedule's days and wall-clock times.
    zone: Zone,
    state: Result<Ready, CoreError>,
    sync: OnceLock<Arc<dyn SyncLink>>,
    /// Bumped when a note is signed, amended or a charge corrected here: the views reload
    /// (the chart's notes), in demo mode too, where no sync engine tells them.
    notes_pulse: tokio::sync::watch::Sender<u64>,
}

struct Ready {
    mode: DataMode,
    store: Arc<dyn ClinicalStore>,
    /// EHR mode: the encrypted store and what the sync engine needs.
    ehr: Option<EhrLink>,
    /// EHR mode with an identity provider: who is signed in, and the idle lock.
    signon: Option<Arc<SignOn>>,
    /// The visit service (`[visit]`), known through the signed-in clinician.
    visits: Option<Arc<VisitDesk>>,
    /// `[visit] link_to_appointment`.
    visit_link_to_appointment: bool,
    /// The visit pane's video call (with a visit service).
    calls: Option<Arc<crate::call::CallDesk>>,
    /// EHR mode: the views shown (who saw which chart or schedule, when) go to the audit log.
    views: Option<ViewAudit>,
    /// `[notes]`: templates and code tables.
    notes: crate::config::NotesConfig,
    codes: crate::billing::CodeTables,
    /// `[billing]`: the MLLP interface charges go to.
    billing: Option<crate::config::BillingConfig>,
    /// Demo mode: the notes written on the demo clinic, in an encrypted store of their own
    /// (a random key held in memory only) in a temporary folder removed at exit. Made on the
    /// first note opened.
    demo_notes: OnceLock<Result<(tempfile::TempDir, Arc<hearth_store::Store>), CoreError>>,
}

/// Writes the audit entries of views on a thread of its own: a view never waits for the
/// store's writer (which a large sync transaction may hold), and is recorded moments later.
/// Dropped, it lets the thread write what is left and waits for it: nothing is lost, and the
/// thread never closes the store while the process is exiting (SQLCipher's cleanup racing
/// the crypto library's own at exit can crash).
/// One view to record: who, what, which record.
type ViewEntry = (String, &'static str, String);

struct ViewAudit {
    entries: std::sync::Mutex<Option<std::sync::mpsc::Sender<ViewEntry>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ViewAudit {
    fn new(store: Arc<hearth_store::Store>) -> Result<Self, CoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<ViewEntry>();
        let writer = std::thread::Builder::new()
            .name("hearth-view-audit".into())
            .spawn(move || {
                // Ends when the workstation (the sender) goes.
                for (actor, action, entity) in rx {
                    if let Err(e) = store.audit(&actor, action, &entity) {
                        // Names the action only: no patient on stderr.
                        eprintln!("hearth: audit of {action} failed: {e}");
                    }
                }
            })
            .map_err(|e| CoreError::Store(format!("cannot start the audit writer: {e}")))?;
        Ok(Self {
            entries: std::sync::Mutex::new(Some(tx)),
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    fn record(&self, actor: String, action: &'static str, entity: String) {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let sent = entries
            .as_ref()
            .is_some_and(|tx| tx.send((actor, action, entity)).is_ok());
        if !sent {
            eprintln!("hearth: audit of {action} failed: the audit writer stopped");
        }
    }
}

impl Drop for ViewAudit {
    fn drop(&mut self) {
        drop(
            self.entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Workstation {
    /// Opens the workstation as configured: demo data when no EHR is configured.
    pub fn start(options: &LaunchOptions, clock: Arc<dyn Clock>) -> Self {
        Self::start_with_idle_clock(options, clock, Arc::new(hearth_auth::SystemClock))
    }

    /// [`Workstation::start`] with the clock the idle lock counts on (tests move it by hand).
    pub fn start_with_idle_clock(
        options: &LaunchOptions,
        clock: Arc<dyn Clock>,
        idle_clock: Arc<dyn hearth_auth::Clock>,
    ) -> Self {
        let config = MachineConfig::load_layered(
            &options.config_path,
            options.machine_config_path.as_deref(),
        );
        let zone = config
            .as_ref()
            .map_or_else(|_| Zone::system(), MachineConfig::zone);
        let state =
            config.and_then(|config| Ready::open(&config, options, &clock, zone, idle_clock));
        Self {
            clock,
            zone,
            state,
            sync: OnceLock::new(),
            notes_pulse: tokio::sync::watch::Sender::new(0),
        }
    }

    /// In EHR mode, what the sync engine needs (the encrypted store, the EHR, the settings).
    pub fn ehr_link(&self) -> Option<EhrLink> {
        self.state.as_ref().ok().and_then(|r| r.ehr.clone())
    }

    /// Connects the sync engine; the top bar and sync panel then show its state.
    pub fn attach_sync(&self, link: Arc<dyn SyncLink>) {
        let _ = self.sync.set(link);
    }

    /// EHR mode: the last `limit` audit entries (actor, action, entity), oldest first.
    pub fn recent_audit(&self, limit: u32) -> Result<Vec<(String, String, String)>, CoreError> {
        let ready = self.ready()?;
        let link = ready
            .ehr
            .as_ref()
            .ok_or_else(|| CoreError::Unavailable("the audit log (demo mode keeps none)".into()))?;
        Ok(link.store.audit_entries(limit)?)
    }

    /// Sign-on, when the configuration names an identity provider.
    pub fn signon(&self) -> Option<Arc<SignOn>> {
        self.state.as_ref().ok().and_then(|r| r.signon.clone())
    }

    /// The bearer tokens the FHIR client sends: the signed-in user's, or none when no
    /// identity provider is configured.
    pub fn token_source(&self) -> Arc<dyn hearth_fhir::TokenSource> {
        match self.signon() {
            Some(s) => s.tokens(),
            None => Arc::new(hearth_fhir::NoToken),
        }
    }

    /// PHI may be shown only to a signed-in user whose window is not locked.
    fn open_for_phi(&self) -> Result<&Ready, CoreError> {
        let ready = self.ready()?;
        if let Some(s) = &ready.signon {
            s.check_open()?;
        }
        Ok(ready)
    }

    fn signon_required(&self) -> Result<Arc<SignOn>, CoreError> {
        self.ready()?;
        self.signon().ok_or_else(|| {
            CoreError::Unavailable("sign-on (no [identity] in the configuration)".into())
        })
    }

    /// Signs in (or, when locked, authenticates the same user again) in the browser.
    pub async fn sign_in(&self) -> Result<UserSummary, CoreError> {
        self.signon_required()?.sign_in().await
    }

    /// Signs out: revokes the tokens, forgets them; PHI is withheld until the next sign-in.
    /// The visit rooms watched as this clinician are left too.
    pub async fn sign_out(&self) -> Result<(), CoreError> {
        if let Some(desk) = self.state.as_ref().ok().and_then(|r| r.visits.as_ref()) {
            desk.forget_rooms();
        }
        // A call is its clinician's: signing out leaves it and forgets what it showed.
        if let Some(calls) = self.state.as_ref().ok().and_then(|r| r.calls.as_ref()) {
            calls.forget();
        }
        self.signon_required()?.sign_out().await
    }

    /// The user did something in the window (keeps the idle lock away).
    pub fn activity(&self) {
        if let Some(s) = self.signon() {
            s.activity();
        }
    }

    /// Locks the window now.
    pub fn lock_now(&self) -> Result<(), CoreError> {
        self.signon_required()?.lock_now();
        Ok(())
    }

    /// The sync panel: queue, conflicts with both versions, problems in words.
    pub fn sync_panel(&self) -> Result<SyncPanel, CoreError> {
        self.open_for_phi()?;
        match self.sync.get() {
            Some(link) => Ok(link.panel()?),
            None => {
                let (_, summary) = self.local_summary()?;
                Ok(SyncPanel {
                    summary,
                    conflicts: Vec::new(),
                    failed: Vec::new(),
                    unreadable: Vec::new(),
                })
            }
        }
    }

    /// Applies the user's choice for a conflict.
    pub fn resolve_conflict(&self, request: &ResolveConflictRequest) -> Result<(), CoreError> {
        Ok(self
            .sync_for(|| format!("conflict {}", request.conflict_id))?
            .resolve(request)?)
    }

    /// Applies the user's choice for a change the EHR refused.
    pub fn settle_failed_write(&self, request: &SettleFailedWriteRequest) -> Result<(), CoreError> {
        Ok(self
            .sync_for(|| format!("queued change {}", request.seq))?
            .settle_failed(request)?)
    }

    /// The sync engine, for an action on `what`: without one (demo mode, or before it
    /// started) there is nothing such to act on.
    fn sync_for(&self, what: impl FnOnce() -> String) -> Result<&Arc<dyn SyncLink>, CoreError> {
        self.open_for_phi()?;
        self.sync
            .get()
            .ok_or_else(|| CoreError::NotFound { what: what() })
    }

    fn local_summary(&self) -> Result<(Connectivity, SyncSummary), CoreError> {
        let ready = self.ready()?;
        let (connectivity, description) = match &ready.mode {
            DataMode::Demo { .. } => (
                Connectivity::NotApplicable,
                "Demo data: nothing to synchronise".to_string(),
            ),
            DataMode::Ehr { .. } => (
                Connectivity::Offline,
                "Not yet connected to the EHR".to_string(),
            ),
        };
        Ok((connectivity, SyncSummary::idle(description)))
    }

    /// A workstation over an existing store, in time zone `zone`; for tests and tools.
    pub fn with_store(
        mode: DataMode,
        store: Arc<dyn ClinicalStore>,
        clock: Arc<dyn Clock>,
        zone: Zone,
    ) -> Self {
        Self {
            clock,
            zone,
            state: Ok(Ready {
                mode,
                store,
                ehr: None,
                signon: None,
                visits: None,
                visit_link_to_appointment: false,
                calls: None,
                views: None,
                notes: Default::default(),
                codes: crate::billing::CodeTables::new(&Default::default()),
                billing: None,
                demo_notes: OnceLock::new(),
            }),
            sync: OnceLock::new(),
            notes_pulse: tokio::sync::watch::Sender::new(0),
        }
    }

    fn ready(&self) -> Result<&Ready, CoreError> {
        self.state.as_ref().map_err(Clone::clone)
    }

    /// Today in the clinic's time zone.
    fn today(&self) -> NaiveDate {
        self.zone.today(self.clock.as_ref())
    }

    /// The top bar's status. Behind the sign-in or lock screen it says only that (and what
    /// the screen itself needs: the mode, the day, the idle minutes): no user, no launch
    /// patient, no sync counts or words, no data version. Nothing there is for a passer-by.
    pub fn status(&self) -> Result<AppStatus, CoreError> {
        let ready = self.ready()?;
        let signon = ready.signon.as_ref();
        let session = signon.map_or(SessionState::NotRequired, |s| s.state());
        if matches!(session, SessionState::SignedOut | SessionState::Locked) {
            let words = match session {
                SessionState::Locked => "Locked",
                _ => "Signed out",
            };
            return Ok(AppStatus {
                mode: ready.mode.clone(),
                user: None,
                connectivity: match self.sync.get() {
                    Some(link) => link.summary().0,
                    None => self.local_summary()?.0,
                },
                sync: SyncSummary::idle(words),
                today: self.today().to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                session,
                idle_lock_minutes: signon.map(|s| s.idle_minutes()),
                launch: None,
                data_version: 0,
            });
        }
        let (mut connectivity, mut sync) = match self.sync.get() {
            Some(link) => link.summary(),
            None => self.local_summary()?,
        };
        if session == SessionState::Expired {
            // Nothing reaches the EHR without a token: whatever the last round said, the
            // status must not claim to be online or in step.
            connectivity = Connectivity::Offline;
            sync.description = format!(
                "Not synchronising: {}. Sign in again; changes made here are kept and sent \
                 once you have.",
                signon
                    .and_then(|s| s.expiry_reason())
                    .unwrap_or_else(|| "the sign-in has ended".into())
            );
        }
        Ok(AppStatus {
            mode: ready.mode.clone(),
            user: signon.and_then(|s| s.user()),
            connectivity,
            sync,
            today: self.today().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            session,
            idle_lock_minutes: signon.map(|s| s.idle_minutes()),
            launch: signon.and_then(|s| s.launch()),
            data_version: self.data_version(),
        })
    }

    /// See [`AppStatus::data_version`]: the sum of two counters that only go up (the sync
    /// engine's records, the watched waiting rooms), so it moves whenever either does.
    fn data_version(&self) -> u64 {
        let records = self
            .sync
            .get()
            .map_or(0, |link| link.subscribe().borrow().records);
        let rooms = self
            .state
            .as_ref()
            .ok()
            .and_then(|r| r.visits.as_ref())
            .map_or(0, |desk| *desk.subscribe().borrow());
        records
            .wrapping_add(rooms)
            .wrapping_add(*self.notes_pulse.borrow())
    }

    /// Records that the user saw `entity` (`view-chart` of `Patient/<id>`, `view-schedule`
    /// of a day): ONC 170.315(d)(2)/(d)(3). EHR mode only (demo data has no patients).
    fn audit_view(&self, ready: &Ready, action: &'static str, entity: String) {
        if let Some(views) = &ready.views {
            views.record(actor_of(ready), action, entity);
        }
    }

    /// The schedule of a day, as the user sees it (audited as a view).
    pub fn schedule(&self, request: &ScheduleRequest) -> Result<ScheduleDay, CoreError> {
        let day = self.schedule_day(request)?;
        let ready = self.ready()?;
        self.audit_view(ready, "view-schedule", format!("schedule {}", day.date));
        Ok(day)
    }

    /// The schedule of a day, for the workstation itself (not a view: not audited).
    pub(crate) fn schedule_day(&self, request: &ScheduleRequest) -> Result<ScheduleDay, CoreError> {
        let ready = self.open_for_phi()?;
        let date = match &request.date {
            None => self.today(),
            Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                CoreError::InvalidInput(format!("date {d:?} is not in YYYY-MM-DD form"))
            })?,
        };
        let mut day = schedule::day(
            ready.store.as_ref(),
            date,
            self.zone,
            &request.practitioner_ids,
        )?;
        // The visit service knows before the EHR that a patient is in the waiting room.
        if let Some(desk) = &ready.visits {
            for row in &mut day.appointments {
                if row.modality == Modality::Virtual
                    && matches!(row.status, VisitStatus::Booked | VisitStatus::Pending)
                    && desk.patient_waiting(&row.appointment_id)
                {
                    row.status = VisitStatus::InWaitingRoom;
                }
            }
        }
        Ok(day)
    }

    fn visit_desk(&self) -> Result<Option<&Arc<VisitDesk>>, CoreError> {
        Ok(self.open_for_phi()?.visits.as_ref())
    }

    /// The visit service's room for a virtual visit (watched from now on). Call from within a
    /// tokio runtime.
    pub fn visit_room(&self, request: &VisitRoomRequest) -> Result<VisitRoom, CoreError> {
        check_id(&request.appointment_id)?;
        let Some(desk) = self.visit_desk()? else {
            return Ok(VisitRoom {
                service: RoomService::NotConfigured,
                message: None,
                participants: Vec::new(),
            });
        };
        Ok(desk.room(&request.appointment_id, self.zone))
    }

    /// A join link for the appointment's patient or a guest, valid for its visit window.
    pub async fn visit_invite(
        &self,
        request: &VisitInviteRequest,
    ) -> Result<VisitInvite, CoreError> {
        check_id(&request.appointment_id)?;
        let ready = self.open_for_phi()?;
        let desk = ready.visits.clone().ok_or_else(no_visit_service)?;
        let what = format!("Appointment/{}", request.appointment_id);
        let appt = ready
            .store
            .get("Appointment", &request.appointment_id)?
            .ok_or_else(|| CoreError::NotFound { what: what.clone() })?;
        let instant = |field: &str| {
            appt.get(field)
                .and_then(|v| v.as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .ok_or_else(|| CoreError::invalid_data(&what, field, "is not an RFC 3339 instant"))
        };
        let (start, end) = (instant("start")?, instant("end")?);
        let mut invite = desk
            .invite(&request.appointment_id, start, end, request.role, self.zone)
            .await?;
        // The patient's link into the Appointment, when IT asked for it (for reminders).
        if request.role == InviteRole::Patient && ready.visit_link_to_appointment {
            if let Some(sync) = self.sync.get() {
                sync.set_join_link(&request.appointment_id, &invite.url, &actor_of(ready))?;
                invite.saved_to_appointment = true;
            }
        }
        Ok(invite)
    }

    /// Lets a waiting participant into the visit.
    pub async fn visit_admit(&self, request: &VisitAdmitRequest) -> Result<(), CoreError> {
        check_id(&request.appointment_id)?;
        let desk = self.visit_desk()?.cloned().ok_or_else(no_visit_service)?;
        desk.admit(&request.appointment_id, &request.participant_id)
            .await
    }

    /// Writes the ended virtual visit's Encounter to the EHR, through the sync engine's
    /// outbox, exactly once (see [`encounter`] for what it carries): the join and leave times
    /// come from the visit service. Refused while the visit goes on (`visit_not_ended`).
    /// Asked again (or after a crash at any point), nothing new is queued: the write's key is
    /// derived from the appointment, the outbox and the stored Encounter are looked at first,
    /// the queueing is one durable transaction, and the EHR makes a create with that key once.
    pub async fn record_visit_encounter(
        &self,
        appointment_id: &str,
    ) -> Result<EncounterRecord, CoreError> {
        check_id(appointment_id)?;
        let ready = self.open_for_phi()?;
        let what = format!("Appointment/{appointment_id}");
        let (Some(ehr), Some(sync)) = (&ready.ehr, self.sync.get()) else {
            return Err(CoreError::Unavailable(
                "the EHR's sync engine (the Encounter goes to the EHR through it)".into(),
            ));
        };
        let desk = ready.visits.clone().ok_or_else(no_visit_service)?;
        let key = encounter::encounter_key(appointment_id);
        if let Some(entry) = ehr.store.outbox_entry_by_key(&key)? {
            return Ok(EncounterRecord::AlreadyQueued { seq: entry.seq });
        }
        let appointment = ready
            .store
            .get("Appointment", appointment_id)?
            .ok_or_else(|| CoreError::NotFound { what: what.clone() })?;
        let encounters = ready
            .store
            .for_patient("Encounter", &encounter::patient_of(&appointment)?)?;
        let existing = encounter::stored_for_appointment(&encounters, appointment_id, &key);
        if let Some(e) = existing.filter(|e| encounter::written_with(e, &key)) {
            // Written before (an earlier profile's outbox, or another workstation's).
            return Ok(EncounterRecord::AlreadyAtEhr {
                encounter_id: e
                    .get("id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .into(),
            });
        }
        let snapshot = desk.snapshot(appointment_id).await?;
        if !snapshot.ended {
            return Err(CoreError::VisitNotEnded { appointment: what });
        }
        // The visit's end, for the KPIs (visit end -> note signed -> charge acknowledged).
        let ended_at = self
            .clock
            .now()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        ehr.store.visit_ended(appointment_id, &ended_at)?;
        let user = ready.signon.as_ref().and_then(|s| s.user());
        let clinician = user.as_ref().and_then(|u| {
            u.fhir_user
                .as_deref()
                .map(|reference| encounter::Clinician {
                    reference,
                    name: Some(u.display_name.as_str()),
                })
        });
        let resource = encounter::visit_encounter(&appointment, existing, &snapshot, clinician)?;
        Ok(match sync.queue_once(&key, resource, &actor_of(ready))? {
            QueuedOnce::Queued { seq } => EncounterRecord::Queued { seq },
            QueuedOnce::AlreadyQueued { seq } => EncounterRecord::AlreadyQueued { seq },
        })
    }

    pub fn chart(&self, request: &ChartRequest) -> Result<Chart, CoreError> {
        let ready = self.open_for_phi()?;
        if request.patient_id.trim().is_empty() {
            return Err(CoreError::InvalidInput("patient_id is empty".into()));
        }
        let mut chart = chart::chart(ready.store.as_ref(), &request.patient_id, self.today())?;
        // Notes signed here still on their way to the EHR show at once.
        chart
            .notes
            .extend(self.waiting_notes(ready, &request.patient_id)?);
        chart.notes.sort_by(|a, b| b.date.cmp(&a.date));
        self.audit_view(
            ready,
            "view-chart",
            format!("Patient/{}", request.patient_id),
        );
        Ok(chart)
    }
}

/// What [`Workstation::record_visit_encounter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncounterRecord {
    /// The Encounter's write is queued (this outbox entry); the sync engine sends it.
    Queued { seq: i64 },
    /// It was queued before (this entry, whatever became of it): nothing new.
    AlreadyQueued { seq: i64 },
    /// The stored Encounter already carries it (Hearth's write under the same key).
    AlreadyAtEhr { encounter_id: String },
}

fn no_visit_service() -> CoreError {
    CoreError::Unavailable("the visit service (no [visit] in the configuration)".into())
}

/// An appointment id from the UI must be a FHIR logical id.
fn check_id(id: &str) -> Result<(), CoreError> {
    if hearth_fhir::is_id(id) {
        Ok(())
    } else {
        Err(CoreError::InvalidInput(format!("{id:?} is not a FHIR id")))
    }
}

impl Ready {
    fn open(
        config: &MachineConfig,
        options: &LaunchOptions,
        clock: &Arc<dyn Clock>,
        zone: Zone,
        idle_clock: Arc<dyn hearth_auth::Clock>,
    ) -> Result<Self, CoreError> {
        if let Some(ehr) = &config.ehr {
            // The encrypted store, its key in the OS keychain (one key per profile folder).
            let dir = options.data_dir.as_ref().ok_or_else(|| {
                CoreError::Unavailable("the profile folder (no --data-dir given)".into())
            })?;
            std::fs::create_dir_all(dir)
                .map_err(|e| CoreError::Store(format!("cannot create {}: {e}", dir.display())))?;
            let path = profile::database_path(dir);
            let keychain = hearth_store::Keychain::new(
                KEYCHAIN_SERVICE,
                &profile::database_key_account(&path),
            );
            let sql = Arc::new(hearth_store::Store::open_with_keychain(&path, &keychain)?);
            // A profile opens only under the EHR and sign-on settings it was made with.
            profile::check_binding(
                &sql,
                &path,
                config,
                &options.config_path.display().to_string(),
            )?;
            let views = Some(ViewAudit::new(sql.clone())?);
            let signon =
                SignOn::for_profile(config, &path, &sql, idle_clock, options.ehr_launch.clone())
                    .map(Arc::new);
            let visits = match (&config.visit, &signon) {
                (Some(visit), Some(signon)) => Some(Arc::new(VisitDesk::new(
                    &visit.service_url,
                    signon.tokens(),
                )?)),
                _ => None,
            };
            let calls = visits.as_ref().map(|_| {
                let bind = config
                    .visit
                    .as_ref()
                    .and_then(|v| v.media_bind)
                    .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
                let devices = config
                    .visit
                    .as_ref()
                    .is_some_and(|v| v.media_source == crate::config::MediaSource::Devices);
                Arc::new(
                    crate::call::CallDesk::new(hearth_media::CallOptions {
                        bind,
                        ..hearth_media::CallOptions::default()
                    })
                    .with_devices(devices),
                )
            });
            return Ok(Self {
                mode: DataMode::Ehr {
                    fhir_base_url: ehr.fhir_base_url.clone(),
                },
                store: sql.clone(),
                ehr: Some(EhrLink {
                    fhir_base_url: ehr.fhir_base_url.clone(),
                    store: sql,
                    sync: config.sync.clone(),
                    clock: clock.clone(),
                    zone,
                    billing: config
                        .billing
                        .as_ref()
                        .map(crate::config::BillingConfig::target),
                }),
                signon,
                visits,
                calls,
                visit_link_to_appointment: config
                    .visit
                    .as_ref()
                    .is_some_and(|v| v.link_to_appointment),
                views,
                notes: config.notes.clone(),
                codes: crate::billing::CodeTables::new(&config.notes),
                billing: config.billing.clone(),
                demo_notes: OnceLock::new(),
            });
        }
        let store: Arc<dyn ClinicalStore> = Arc::new(MemoryStore::new());
        let seed = options
            .demo_seed
            .or(config.demo.seed)
            .unwrap_or(hearth_demo::DEFAULT_SEED);
        // The demo clinic's day is today on the clinic's wall clock.
        let now = zone.local(&clock.now()).fixed_offset();
        let opts = hearth_demo::DemoOptions::new(seed, now);
        for resource in hearth_demo::generate(&opts) {
            store.upsert(resource)?;
        }
        let mode = DataMode::Demo { seed };
        Ok(Self {
            mode,
            store,
            ehr: None,
            signon: None,
            visits: None,
            visit_link_to_appointment: false,
            // Demo mode's calls are simulated visits on this machine (loopback only).
            calls: Some(Arc::new(crate::call::CallDesk::new(
                hearth_media::CallOptions {
                    bind: std::net::IpAddr::from([127, 0, 0, 1]),
                    ..hearth_media::CallOptions::default()
                },
            ))),
            views: None,
            notes: config.notes.clone(),
            codes: crate::billing::CodeTables::new(&config.notes),
            billing: None,
            demo_notes: OnceLock::new(),
        })
    }
}

/// Who the audit and the EHR's records name as acting: the signed-in user's `fhirUser`, or
/// `hearth` without sign-on.
fn actor_of(ready: &Ready) -> String {
    ready
        .signon
        .as_ref()
        .and_then(|s| s.user())
        .and_then(|u| u.fhir_user)
        .unwrap_or_else(|| "hearth".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::DateTime;
    use hearth_ipc::ErrorCode;
    use std::path::PathBuf;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            DateTime::parse_from_rfc3339("2026-03-10T11:10:00-05:00").unwrap(),
        ))
    }

    fn options(config: PathBuf) -> LaunchOptions {
        LaunchOptions {
            config_path: config,
            ..LaunchOptions::default()
        }
    }

    #[test]
    fn no_configuration_starts_on_demo_data_with_todays_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workstation::start(&options(dir.path().join("none.toml")), clock());
        let status = ws.status().unwrap();
        assert_eq!(
            status.mode,
            DataMode::Demo {
                seed: hearth_demo::DEFAULT_SEED
            }
        );
        assert_eq!(status.today, "2026-03-10");
        let day = ws.schedule(&ScheduleRequest::default()).unwrap();
        assert!(day.appointments.len() >= 20);
        assert!(day.data_issues.is_empty(), "{:?}", day.data_issues);
        let first = &day.appointments[0];
        let chart = ws
            .chart(&ChartRequest {
                patient_id: first.patient_id.clone(),
            })
            .unwrap();
        assert_eq!(chart.banner.name, first.patient_name);
        assert!(!chart.vitals.is_empty() && !chart.labs.is_empty() && !chart.problems.is_empty());
        assert!(chart.data_issues.is_empty(), "{:?}", chart.data_issues);
    }

    #[test]
    fn the_schedule_follows_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let c = clock();
        let ws = Workstation::start(&options(dir.path().join("none.toml")), c.clone());
        let today = ws.schedule(&ScheduleRequest::default()).unwrap();
        c.advance(chrono::Duration::days(1));
        let tomorrow = ws.schedule(&ScheduleRequest::default()).unwrap();
        assert_eq!(tomorrow.date, "2026-03-11");
        assert!(
            tomorrow.appointments.is_empty(),
            "demo data was made for the 10th"
        );
        assert!(!today.appointments.is_empty());
    }

    #[test]
    fn a_broken_configuration_is_reported_by_every_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[ehr]\nurl = 3\n").unwrap();
        let ws = Workstation::start(&options(path), clock());
        let e = ws.status().unwrap_err();
        assert_eq!(e.code(), ErrorCode::Configuration);
        assert_eq!(ws.schedule(&ScheduleRequest::default()).unwrap_err(), e);
    }

    #[test]
    fn bad_requests_are_rejected_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workstation::start(&options(dir.path().join("none.toml")), clock());
        let e = ws
            .schedule(&ScheduleRequest {
                date: Some("10/03/2026".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInput);
        assert!(e.to_string().contains("YYYY-MM-DD"));
        let e = ws
            .chart(&ChartRequest {
                patient_id: " ".into(),
            })
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidInput);
    }
}
