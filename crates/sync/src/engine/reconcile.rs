//! Reconciliation: the working set compared with the EHR by id and version, a slice at a time (finds deletions `_lastUpdated` searches never show).

use super::*;

impl Engine {
    /// Whether the working set is due for a comparison with the EHR (or one is under way).
    pub(super) fn reconcile_due(&self) -> Result<bool> {
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
    pub(super) async fn reconcile_step(
        &self,
        round: &mut Round,
        mut chunks: usize,
    ) -> Result<bool> {
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

    pub(super) async fn reconcile_chunk(
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
    pub(super) async fn versions_at_ehr(
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
}
