//! Pulling changes: a cursor per request at the server's clock, page by page into the store; records held back or kept as unreadable fetched again.

use super::*;

impl Engine {
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
    pub(super) async fn pull_source(
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
                // Audit events (Hearth's own, sent by send_audit, and others') are the EHR's
                // record, never shown here: not kept.
                if !seen.insert((ty.clone(), id.clone())) || ty == "AuditEvent" {
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
    pub(super) fn trusted_cursor(&self, since: String) -> Result<String> {
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
    pub(super) async fn fetch_again(&self, ty: &str, id: &str, round: &mut Round) -> Result<()> {
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

    /// With the schedule scope, only records of patients already kept (and shared records such
    /// as practitioners) are taken; an appointment for a new patient brings that patient's
    /// records.
    pub(super) fn in_working_set(
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
}
