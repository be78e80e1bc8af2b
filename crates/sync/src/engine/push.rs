//! Pushing the outbox: conditional creates, `If-Match` updates, replays recognised, conflicts kept, only server errors counted.

use super::*;

pub(super) enum Sent {
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

impl Engine {
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

    pub(super) async fn send(
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
    pub(super) async fn find_own_version(
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
