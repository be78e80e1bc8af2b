-- Sync: what a sent write produced, writes that build on earlier queued writes, conflicts.

-- The version the server gave a sent write; a later queued write to the same resource
-- (after_seq) is sent with If-Match on that version.
ALTER TABLE outbox ADD COLUMN result_version TEXT;
ALTER TABLE outbox ADD COLUMN after_seq INTEGER REFERENCES outbox (seq);
ALTER TABLE outbox ADD COLUMN sent_at TEXT;
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
