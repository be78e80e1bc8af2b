//! What the window shows, pushed when it changes instead of asked for every few seconds: the
//! top bar's status, a visit room's roster, and arrivals in the waiting rooms (for desktop
//! notifications). Each feed waits on what changes what it shows (the sync engine, the
//! sign-in, the visit service's presence connections) and on the only changes that come with
//! time (the idle lock falling due, the date turning over). Nothing here polls.
//!
//! A feed yields its first value at once; the caller (the shell) passes each value on, e.g.
//! over an IPC channel, and stops when the feed ends (`None`).

use super::Workstation;
use crate::sync_link::SyncPulse;
use crate::visits::Arrival;
use crate::CoreError;
use hearth_ipc::{
    AppStatus, CallView, Modality, ScheduleRequest, VisitRoom, VisitRoomRequest, VisitStatus,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// The shortest wait for a timed change: a clock that has not moved as expected never makes
/// a feed spin.
const MIN_WAIT: Duration = Duration::from_millis(50);

/// The top bar's status as it changes (see [`Workstation::next_status`]).
pub struct StatusFeed {
    sync: Option<watch::Receiver<SyncPulse>>,
    session: Option<watch::Receiver<u64>>,
    /// The access token's renewals (a session whose token ran out is healthy again).
    renewals: Option<watch::Receiver<u64>>,
    rooms: Option<watch::Receiver<u64>>,
    notes: watch::Receiver<u64>,
    last: Option<AppStatus>,
}

/// Arrivals in the waiting rooms of today's virtual visits (see
/// [`Workstation::next_arrivals`]).
pub struct ArrivalFeed {
    sync: Option<watch::Receiver<SyncPulse>>,
    session: Option<watch::Receiver<u64>>,
    rooms: Option<watch::Receiver<u64>>,
    /// What the set of watched rooms was made from: the records' and the session's versions
    /// and the date. Made again when one of them moves.
    made_from: Option<(Option<u64>, Option<u64>, chrono::NaiveDate)>,
    /// Each watched visit's local start, by appointment id.
    starts: HashMap<String, String>,
}

/// One visit's room as it changes (see [`Workstation::next_room`]).
pub struct RoomFeed {
    request: VisitRoomRequest,
    session: Option<watch::Receiver<u64>>,
    rooms: Option<watch::Receiver<u64>>,
    last: Option<VisitRoom>,
}

/// The video call as it changes (see [`Workstation::next_call`]).
pub struct CallFeed {
    session: Option<watch::Receiver<u64>>,
    calls: Option<watch::Receiver<u64>>,
    last: Option<CallView>,
}

/// Marks the receiver's current value as seen.
fn seen<T>(rx: &mut Option<watch::Receiver<T>>) {
    if let Some(r) = rx {
        r.borrow_and_update();
    }
}

/// Waits for the next change; forever when there is nothing to follow (or its sender is gone).
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return;
        }
    }
    *rx = None;
    std::future::pending::<()>().await;
}

impl Workstation {
    fn session_pulse(&self) -> Option<watch::Receiver<u64>> {
        self.signon().map(|s| s.subscribe())
    }

    fn sync_pulse(&self) -> Option<watch::Receiver<SyncPulse>> {
        self.sync.get().map(|link| link.subscribe())
    }

    fn rooms_pulse(&self) -> Option<watch::Receiver<u64>> {
        self.state
            .as_ref()
            .ok()
            .and_then(|r| r.visits.as_ref())
            .map(|desk| desk.subscribe())
    }

    /// How long until the status changes with time alone: the idle lock falling due, or the
    /// date turning over.
    fn next_timed_change(&self) -> Duration {
        let now = self.clock.now();
        let midnight = self
            .today()
            .succ_opt()
            .map(|tomorrow| self.zone.start_of_day(tomorrow) - now)
            .and_then(|d| d.to_std().ok())
            .unwrap_or(Duration::from_secs(3600));
        let signon = self.signon();
        let lock = signon.as_ref().and_then(|s| s.lock_due_in());
        // The access token's end: without a renewal by then, the session is expired.
        let expiry = signon.as_ref().and_then(|s| s.expiry_due_in());
        [lock, expiry]
            .into_iter()
            .flatten()
            .fold(midnight, Duration::min)
            .max(MIN_WAIT)
    }

    /// A feed of the status (no PHI) for the top bar. It follows the sync engine attached
    /// by then. A configuration that cannot start is answered here, as [`Workstation::status`]
    /// answers it.
    pub fn status_feed(&self) -> Result<StatusFeed, CoreError> {
        self.status()?;
        Ok(StatusFeed {
            sync: self.sync_pulse(),
            session: self.session_pulse(),
            renewals: self.signon().map(|s| s.renewals()),
            rooms: self.rooms_pulse(),
            notes: self.notes_pulse.subscribe(),
            last: None,
        })
    }

    /// The status as soon as it differs from the last one this feed gave (the first at once):
    /// after a sync change (progress, a round's end, the queue), a session change, a change in
    /// a waiting room ([`AppStatus::data_version`]), the idle lock falling due (which locks
    /// it, as a status check always did), the access token running out unrenewed (expired),
    /// a renewal, or a new day.
    pub async fn next_status(&self, feed: &mut StatusFeed) -> Option<AppStatus> {
        loop {
            seen(&mut feed.sync);
            seen(&mut feed.session);
            seen(&mut feed.renewals);
            seen(&mut feed.rooms);
            feed.notes.borrow_and_update();
            let status = self.status().ok()?;
            if feed.last.as_ref() != Some(&status) {
                feed.last = Some(status.clone());
                return Some(status);
            }
            let wait = self.next_timed_change();
            tokio::select! {
                () = changed(&mut feed.sync) => {}
                () = changed(&mut feed.session) => {}
                () = changed(&mut feed.renewals) => {}
                () = changed(&mut feed.rooms) => {}
                _ = feed.notes.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A feed of arrivals in the waiting rooms of today's virtual visits; `None` without a
    /// visit service.
    pub fn arrival_feed(&self) -> Option<ArrivalFeed> {
        let rooms = self.rooms_pulse()?;
        Some(ArrivalFeed {
            sync: self.sync_pulse(),
            session: self.session_pulse(),
            rooms: Some(rooms),
            made_from: None,
            starts: HashMap::new(),
        })
    }

    /// The next participants to come into a waiting room (each once, never a name). The rooms
    /// of today's virtual visits are watched (made again when the records, the session or
    /// the date change, not on a timer); nothing comes while signed out or locked. Call from
    /// within a tokio runtime.
    pub async fn next_arrivals(&self, feed: &mut ArrivalFeed) -> Vec<Arrival> {
        loop {
            seen(&mut feed.sync);
            seen(&mut feed.session);
            seen(&mut feed.rooms);
            if let Ok(Some(desk)) = self.visit_desk() {
                let basis = (
                    feed.sync.as_ref().map(|r| r.borrow().records),
                    feed.session.as_ref().map(|r| *r.borrow()),
                    self.today(),
                );
                if feed.made_from != Some(basis) {
                    feed.starts = self.todays_virtual_visits();
                    for id in feed.starts.keys() {
                        desk.watch(id);
                    }
                    feed.made_from = Some(basis);
                    // Watching a room is itself a change: seen.
                    seen(&mut feed.rooms);
                }
                let arrivals = desk.arrivals(&feed.starts);
                if !arrivals.is_empty() {
                    return arrivals;
                }
            }
            let wait = self.next_timed_change();
            tokio::select! {
                () = changed(&mut feed.sync) => {}
                () = changed(&mut feed.session) => {}
                () = changed(&mut feed.rooms) => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Today's virtual visits still to happen or under way: their local starts, by id.
    fn todays_virtual_visits(&self) -> HashMap<String, String> {
        let Ok(day) = self.schedule_day(&ScheduleRequest::default()) else {
            return HashMap::new();
        };
        day.appointments
            .into_iter()
            .filter(|r| {
                r.modality == Modality::Virtual
                    && !matches!(
                        r.status,
                        VisitStatus::Fulfilled | VisitStatus::Cancelled | VisitStatus::NoShow
                    )
            })
            .map(|r| (r.appointment_id, r.start_label))
            .collect()
    }

    /// A feed of the video call for the visit pane.
    pub fn call_feed(&self) -> Result<CallFeed, CoreError> {
        self.call_view()?;
        Ok(CallFeed {
            session: self.session_pulse(),
            calls: self
                .ready()
                .ok()
                .and_then(|r| r.calls.as_ref().map(|c| c.subscribe())),
            last: None,
        })
    }

    /// The call as soon as it differs from the last one this feed gave (the first at once);
    /// ends when it can no longer be shown (signed out, locked).
    pub async fn next_call(&self, feed: &mut CallFeed) -> Option<CallView> {
        loop {
            seen(&mut feed.session);
            seen(&mut feed.calls);
            let view = self.call_view().ok()?;
            if feed.last.as_ref() != Some(&view) {
                feed.last = Some(view.clone());
                return Some(view);
            }
            tokio::select! {
                () = changed(&mut feed.session) => {}
                () = changed(&mut feed.calls) => {}
            }
        }
    }

    /// A feed of one visit's room for the visit pane (watched from now on). The request is
    /// checked, and a locked window refused, here.
    pub fn room_feed(&self, request: &VisitRoomRequest) -> Result<RoomFeed, CoreError> {
        self.visit_room(request)?;
        Ok(RoomFeed {
            request: request.clone(),
            session: self.session_pulse(),
            rooms: self.rooms_pulse(),
            last: None,
        })
    }

    /// The room as soon as it differs from the last one this feed gave (the first at once).
    /// Ends when the room can no longer be shown (signed out, locked). Call from within a
    /// tokio runtime.
    pub async fn next_room(&self, feed: &mut RoomFeed) -> Option<VisitRoom> {
        loop {
            seen(&mut feed.session);
            seen(&mut feed.rooms);
            let room = self.visit_room(&feed.request).ok()?;
            if feed.last.as_ref() != Some(&room) {
                feed.last = Some(room.clone());
                return Some(room);
            }
            tokio::select! {
                () = changed(&mut feed.session) => {}
                () = changed(&mut feed.rooms) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{SystemClock, Zone};
    use crate::store::MemoryStore;
    use crate::sync_link::SyncLink;
    use hearth_ipc::{
        Connectivity, DataMode, ResolveConflictRequest, SettleFailedWriteRequest, SyncPanel,
        SyncSummary,
    };
    use hearth_model::ModelError;
    use std::sync::{Arc, Mutex};

    /// An engine that says what the test tells it to.
    struct Engine {
        pulse: watch::Sender<SyncPulse>,
        description: Mutex<String>,
    }

    impl Engine {
        fn says(&self, words: &str) {
            *self.description.lock().unwrap() = words.to_string();
        }
    }

    impl SyncLink for Engine {
        fn nudge(&self) {}

        fn subscribe(&self) -> watch::Receiver<SyncPulse> {
            self.pulse.subscribe()
        }
        fn summary(&self) -> (Connectivity, SyncSummary) {
            let words = self.description.lock().unwrap().clone();
            (Connectivity::Online, SyncSummary::idle(words))
        }
        fn panel(&self) -> Result<SyncPanel, ModelError> {
            Err(ModelError::Unavailable("no panel here".into()))
        }
        fn resolve(&self, _: &ResolveConflictRequest) -> Result<(), ModelError> {
            Err(ModelError::Unavailable("no conflicts here".into()))
        }
        fn settle_failed(&self, _: &SettleFailedWriteRequest) -> Result<(), ModelError> {
            Err(ModelError::Unavailable("no refusals here".into()))
        }
        fn set_join_link(&self, _: &str, _: &str, _: &str) -> Result<(), ModelError> {
            Err(ModelError::Unavailable("no visits here".into()))
        }
        fn queue_once(
            &self,
            _: &str,
            _: serde_json::Value,
            _: &str,
        ) -> Result<crate::sync_link::QueuedOnce, ModelError> {
            Err(ModelError::Unavailable("no queue here".into()))
        }
    }

    /// Long enough for a feed that had something to say to have said it.
    const QUIET: Duration = Duration::from_millis(300);
    const BOUND: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn the_status_comes_when_the_engine_changes_it_and_not_otherwise() {
        let engine = Arc::new(Engine {
            pulse: watch::Sender::new(SyncPulse::default()),
            description: Mutex::new("Downloading records…".into()),
        });
        let ws = Workstation::with_store(
            DataMode::Ehr {
                fhir_base_url: "http://127.0.0.1:9/fhir".into(),
            },
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
            Zone::system(),
        );
        ws.attach_sync(engine.clone());
        let mut feed = ws.status_feed().unwrap();

        let first = tokio::time::timeout(BOUND, ws.next_status(&mut feed))
            .await
            .expect("the first status comes at once")
            .unwrap();
        assert_eq!(first.sync.description, "Downloading records…");
        // Nothing changed: nothing comes.
        assert!(tokio::time::timeout(QUIET, ws.next_status(&mut feed))
            .await
            .is_err());
        // A pulse that changed nothing the status shows: still nothing.
        engine.pulse.send_modify(|p| p.status += 1);
        assert!(tokio::time::timeout(QUIET, ws.next_status(&mut feed))
            .await
            .is_err());

        // The engine's words change and it says so: the new status comes.
        engine.says("Up to date with the EHR");
        engine.pulse.send_modify(|p| p.status += 1);
        let next = tokio::time::timeout(BOUND, ws.next_status(&mut feed))
            .await
            .expect("the changed status is pushed")
            .unwrap();
        assert_eq!(next.sync.description, "Up to date with the EHR");
        assert_eq!(next.data_version, first.data_version);

        // Records changed: the views' version moves, so they reload.
        engine.pulse.send_modify(|p| {
            p.status += 1;
            p.records += 1;
        });
        let after = tokio::time::timeout(BOUND, ws.next_status(&mut feed))
            .await
            .expect("a records change is pushed")
            .unwrap();
        assert_ne!(after.data_version, next.data_version);
    }
}
