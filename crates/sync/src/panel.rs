//! What the top bar and the sync panel show, and the user's conflict choices.

use crate::engine::SyncHandle;
use hearth_ipc::{
    ConflictChoice, ConflictField, ConflictView, Connectivity, FailedWriteChoice, FailedWriteView,
    ProblemView, ResolveConflictRequest, SettleFailedWriteRequest, SyncPanel, SyncSummary,
};
use hearth_model::row::resource_row_raw;
use hearth_model::sync_link::{QueuedOnce, SyncLink};
use hearth_model::ModelError;
use hearth_store::Resolution;
use serde_json::Value;
use std::collections::BTreeMap;

/// Fields that differ between two versions of a resource, leaf by leaf (`meta` left out: it
/// always differs). At most `limit` rows.
pub(crate) fn differing_fields(
    mine: &str,
    theirs: Option<&str>,
    limit: usize,
) -> Vec<ConflictField> {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &parse(mine), &mut a);
    if let Some(t) = theirs {
        flatten("", &parse(t), &mut b);
    }
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| !k.starts_with("meta.") && !k.starts_with("text."))
        .filter(|k| a.get(*k) != b.get(*k))
        .take(limit)
        .map(|k| ConflictField {
            field: k.clone(),
            mine: a.get(k).cloned().unwrap_or_else(|| "(none)".into()),
            theirs: if theirs.is_some() {
                b.get(k).cloned().unwrap_or_else(|| "(none)".into())
            } else {
                "(record deleted at the EHR)".into()
            },
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&join(k), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn describe(
    summary: &hearth_store::OutboxSummary,
    online: Option<bool>,
    initial_done: bool,
) -> String {
    let mut parts = Vec::new();
    match online {
        None => parts.push("Connecting to the EHR…".to_string()),
        Some(false) => parts.push(
            "Offline: the EHR cannot be reached. Your work is saved on this computer.".to_string(),
        ),
        Some(true) if !initial_done => parts.push("Downloading records…".to_string()),
        Some(true) => parts.push("Up to date with the EHR".to_string()),
    }
    if summary.pending > 0 {
        parts.push(format!(
            "{} change{} waiting to be sent",
            summary.pending,
            if summary.pending == 1 { "" } else { "s" }
        ));
    }
    if summary.conflicts > 0 {
        parts.push(format!(
            "{} change{} need{} your decision",
            summary.conflicts,
            if summary.conflicts == 1 { "" } else { "s" },
            if summary.conflicts == 1 { "s" } else { "" }
        ));
    }
    parts.join(" · ")
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl SyncHandle {
    fn summary_now(&self) -> Result<(Connectivity, SyncSummary), ModelError> {
        let outbox = self.store.outbox_summary()?;
        let rejected = self.store.rejected_count()?;
        let st = self.state();
        let connectivity = match st.online {
            Some(true) => Connectivity::Online,
            _ => Connectivity::Offline,
        };
        let mut description = describe(&outbox, st.online, st.initial_done);
        if let Some(e) = &st.last_error {
            if st.online != Some(false) {
                description = format!("{description} · {e}");
            }
        }
        Ok((
            connectivity,
            SyncSummary {
                queued_writes: count(outbox.pending),
                last_success: st.last_success.clone(),
                description,
                conflicts: count(outbox.conflicts),
                failed_writes: count(outbox.failed),
                unreadable_records: count(rejected),
                progress: st.progress.clone(),
            },
        ))
    }
}

impl SyncLink for SyncHandle {
    fn nudge(&self) {
        self.changed_locally();
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<hearth_model::sync_link::SyncPulse> {
        SyncHandle::subscribe(self)
    }

    fn set_join_link(
        &self,
        appointment_id: &str,
        url: &str,
        actor: &str,
    ) -> Result<(), ModelError> {
        self.set_appointment_join_link(appointment_id, url, actor)
            .map(|_| ())
            .map_err(ModelError::from)
    }

    fn queue_once(
        &self,
        key: &str,
        resource: serde_json::Value,
        actor: &str,
    ) -> Result<QueuedOnce, ModelError> {
        let (queued, new) = SyncHandle::queue_once(self, key, resource, actor)?;
        Ok(if new {
            QueuedOnce::Queued { seq: queued.seq }
        } else {
            QueuedOnce::AlreadyQueued { seq: queued.seq }
        })
    }

    fn summary(&self) -> (Connectivity, SyncSummary) {
        self.summary_now().unwrap_or_else(|e| {
            (
                Connectivity::Offline,
                SyncSummary::idle(format!("The local data file cannot be read: {e}")),
            )
        })
    }

    fn panel(&self) -> Result<SyncPanel, ModelError> {
        let (_, summary) = self.summary_now()?;
        let conflicts = self
            .store
            .conflicts()?
            .into_iter()
            .map(|c| ConflictView {
                id: c.id,
                record: c.resource_type.clone(),
                detected_at: c.detected_at.clone(),
                fields: differing_fields(&c.local_json, c.server_json.as_deref(), 40),
            })
            .collect();
        let failed = self
            .store
            .outbox_failed()?
            .into_iter()
            .map(|e| FailedWriteView {
                seq: e.seq,
                record: match &e.write.resource_id {
                    Some(id) => format!("{}/{id}", e.write.resource_type),
                    None => format!("new {}", e.write.resource_type),
                },
                message: e
                    .last_error
                    .unwrap_or_else(|| "the EHR refused this change".into()),
            })
            .collect();
        // Each by type and id (or where the EHR served it), with what is wrong.
        let unreadable = self
            .store
            .rejected()?
            .into_iter()
            .map(|r| ProblemView {
                record: r.record,
                message: r.message,
            })
            .collect();
        Ok(SyncPanel {
            summary,
            conflicts,
            failed,
            unreadable,
        })
    }

    fn resolve(&self, request: &ResolveConflictRequest) -> Result<(), ModelError> {
        let conflict = self
            .store
            .conflicts()?
            .into_iter()
            .find(|c| c.id == request.conflict_id)
            .ok_or_else(|| ModelError::NotFound {
                what: format!("conflict {}", request.conflict_id),
            })?;
        let (choice, theirs) = match request.choice {
            ConflictChoice::KeepMine => (Resolution::KeepMine, None),
            ConflictChoice::TakeTheirs => (
                Resolution::TakeTheirs,
                conflict
                    .server_json
                    .as_deref()
                    .map(resource_row_raw)
                    .transpose()?,
            ),
        };
        self.store
            .resolve_conflict(conflict.id, choice, theirs.as_ref(), "workstation-user")?;
        self.changed_locally();
        Ok(())
    }

    fn settle_failed(&self, request: &SettleFailedWriteRequest) -> Result<(), ModelError> {
        let retry = request.choice == FailedWriteChoice::Retry;
        self.store
            .settle_failed(request.seq, retry, "workstation-user")
            .map_err(|e| match e {
                hearth_store::StoreError::NoSuchOutboxEntry { seq } => ModelError::NotFound {
                    what: format!("refused change {seq}"),
                },
                other => other.into(),
            })?;
        self.changed_locally();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fields_that_differ_are_shown_side_by_side() {
        let mine = r#"{"resourceType":"Appointment","id":"a","meta":{"versionId":"1"},"status":"arrived","x":[1,2]}"#;
        let theirs = r#"{"resourceType":"Appointment","id":"a","meta":{"versionId":"2"},"status":"cancelled","x":[1,3]}"#;
        let d = differing_fields(mine, Some(theirs), 10);
        let got: Vec<_> = d
            .iter()
            .map(|f| (f.field.as_str(), f.mine.as_str(), f.theirs.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![("status", "arrived", "cancelled"), ("x[1]", "2", "3")]
        );
        assert_eq!(
            differing_fields(mine, None, 10)[0].theirs,
            "(record deleted at the EHR)"
        );
    }
}
