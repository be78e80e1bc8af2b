-- Resources exactly as the server sent them, plus what the views query.
CREATE TABLE resource (
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version_id   TEXT,
    last_updated TEXT,
    patient_id   TEXT,
    json         TEXT NOT NULL,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE INDEX resource_by_patient ON resource (patient_id, type) WHERE patient_id IS NOT NULL;

-- Projection: appointments by start instant (UTC, RFC 3339 with Z) and practitioner.
CREATE TABLE appointment_index (
    id              TEXT PRIMARY KEY,
    start_utc       TEXT NOT NULL,
    practitioner_id TEXT
) WITHOUT ROWID;
CREATE INDEX appointment_by_start ON appointment_index (start_utc, practitioner_id);

-- Projection: observations by patient, LOINC code and time.
CREATE TABLE observation_index (
    id         TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    code       TEXT,
    effective  TEXT
) WITHOUT ROWID;
CREATE INDEX observation_by_patient ON observation_index (patient_id, code, effective);

-- Writes waiting for the EHR, in order. The idempotency key makes a replay one write.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT,
    method          TEXT NOT NULL CHECK (method IN ('create', 'update', 'delete')),
    if_match        TEXT,
    body            TEXT,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'conflict', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL
);

CREATE TABLE sync_cursor (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

-- Tamper-evident audit log: each row's hash covers the previous row's hash.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    entity    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
