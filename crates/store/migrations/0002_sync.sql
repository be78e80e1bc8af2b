-- Sync: what a sent write produced, writes that build on earlier queued writes, writes the
-- user discarded, and conflicts.

-- The outbox gains: the version the server gave a sent write (a later queued write to the
-- same resource, after_seq, is sent with If-Match on it), when it was sent, and the state
-- 'discarded' (the user kept the EHR's version instead). Rebuilt to widen the state check.
CREATE TABLE outbox_v2 (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT,
    method          TEXT NOT NULL CHECK (method IN ('create', 'update', 'delete')),
    if_match        TEXT,
    body            TEXT,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'conflict', 'failed', 'discarded')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    result_version  TEXT,
    after_seq       INTEGER,
    sent_at         TEXT
);
INSERT INTO outbox_v2 (seq, idempotency_key, resource_type, resource_id, method, if_match, body,
                       state, attempts, last_error, created_at)
    SELECT seq, idempotency_key, resource_type, resource_id, method, if_match, body,
           state, attempts, last_error, created_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
CREATE INDEX outbox_by_resource ON outbox (resource_type, resource_id, state);

-- A write the server refused because the resource changed there (412): both versions kept
-- until the user chooses. Nothing is overwritten on either side meanwhile.
CREATE TABLE conflict (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_seq     INTEGER NOT NULL UNIQUE REFERENCES outbox (seq),
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    local_json     TEXT NOT NULL,
    server_json    TEXT,
    server_version TEXT,
    detected_at    TEXT NOT NULL,
    resolution     TEXT CHECK (resolution IN ('keep-mine', 'take-theirs')),
    resolved_at    TEXT
);
