//! The initial sync: the schedule window and its patients' records (or every patient), pipelined into the store, resumable per patient.

use super::*;

impl Engine {
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

    /// Fetches each patient not done yet, handing its records to the store in batches. The
    /// next patients' compartments are fetched, read and compressed by tasks of their own
    /// ([`FETCH_AHEAD`] at a time, on the runtime's threads) while this one hands over the
    /// previous; they are taken in order, so batches and cursors are as if fetched one by one.
    pub(super) async fn fetch_patients(
        &self,
        patients: &BTreeSet<String>,
        total: usize,
        round: &mut Round,
        in_flight: &mut Option<InFlight>,
    ) -> Result<()> {
        let mut batch = Vec::new();
        let mut batch_done = Vec::new();
        let mut todo = patients.iter().enumerate();
        let mut ahead = std::collections::VecDeque::new();
        loop {
            while ahead.len() < FETCH_AHEAD {
                let Some((done, patient)) = todo.next() else {
                    break;
                };
                let cursor = format!("initial.patient.{patient}");
                if self.store().cursor(&cursor)?.is_some() {
                    continue;
                }
                let task = tokio::spawn(compartment(self.client().clone(), patient.clone()));
                ahead.push_back((done, cursor, AbortOnDrop(task)));
            }
            let Some((done, cursor, mut task)) = ahead.pop_front() else {
                break;
            };
            self.progress(done, total, "Patient records");
            let (rows, problems) = match (&mut task.0).await {
                Ok(fetched) => fetched?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            self.keep_problems(problems, round)?;
            batch.extend(rows);
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
    pub(super) fn spawn_store(
        &self,
        rows: Vec<ResourceRow>,
        cursors: Vec<(String, String)>,
    ) -> InFlight {
        let store = self.handle.store.clone();
        tokio::task::spawn_blocking(move || store.ingest_and_set(&rows, &cursors).map(|r| r.0))
    }

    /// Waits for the batch in flight, if any.
    pub(super) async fn settle(
        &self,
        in_flight: &mut Option<InFlight>,
        round: &mut Round,
    ) -> Result<()> {
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
    pub(super) async fn fetch_patient(
        &self,
        patient: &str,
        round: &mut Round,
    ) -> Result<Vec<ResourceRow>> {
        let (rows, problems) = compartment(self.client().clone(), patient.to_string()).await?;
        self.keep_problems(problems, round)?;
        Ok(rows)
    }

    /// Counts and keeps, by name, the records the EHR served unreadable.
    fn keep_problems(&self, problems: Vec<ProblemView>, round: &mut Round) -> Result<()> {
        round.unreadable += problems.len();
        for p in problems {
            self.record_problem(&p.record, &p.message)?;
        }
        Ok(())
    }

    /// Stores rows in one transaction, on a blocking thread: a large commit must not hold
    /// up the async runtime that also answers the window.
    pub(super) async fn store_rows(&self, rows: Vec<ResourceRow>, round: &mut Round) -> Result<()> {
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
    pub(super) async fn store_search(
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

    /// One page's rows; its unreadable entries are kept by name (and fetched again later).
    pub(super) fn page_rows(
        &self,
        page: &mut Page,
        round: &mut Round,
        patients: &mut BTreeSet<String>,
    ) -> Result<Vec<ResourceRow>> {
        let (mut rows, problems) = rows_of(std::mem::take(&mut page.entries));
        self.keep_problems(problems, round)?;
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
}

/// Patients' compartments being fetched at once during the initial sync: one taken while the
/// next is on its way. The ingest bench went from 3.40 s to 2.84 s with 2, and 2.80 s with 3.
const FETCH_AHEAD: usize = 2;

/// A task aborted when its handle is dropped: an initial sync that stops on an error leaves
/// no fetch running behind it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One patient's compartment (`Patient/{id}/$everything`, every page), read and compressed:
/// the rows and the entries that could not be read.
async fn compartment(
    client: hearth_fhir::Client,
    patient: String,
) -> Result<(Vec<ResourceRow>, Vec<ProblemView>)> {
    let mut page = client
        .search(&format!("Patient/{patient}/$everything"), &[])
        .await?;
    let (mut rows, mut problems) = (Vec::new(), Vec::new());
    loop {
        let (r, p) = rows_of(std::mem::take(&mut page.entries));
        rows.extend(r);
        problems.extend(p);
        match client.next_page(&page).await? {
            Some(next) => page = next,
            None => break,
        }
    }
    for row in &mut rows {
        row.pack();
    }
    Ok((rows, problems))
}
