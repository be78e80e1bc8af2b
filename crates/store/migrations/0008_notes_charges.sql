-- The visit note being written: one draft per visit (appointment), saved on every pause of
-- the editor. `body` is the core's JSON of the draft; a save with an older revision than the
-- one stored is ignored.
CREATE TABLE note_draft (
    appointment_id  TEXT PRIMARY KEY,
    revision        INTEGER NOT NULL,
    body            TEXT NOT NULL,
    saved_at        TEXT NOT NULL
);

-- Signed versions of a visit's note (1 = as first signed, 2.. = amendments). Written in the
-- same transaction as the outbox writes that carry it to the EHR (`write_key` = the
-- DocumentReference's create).
CREATE TABLE note_version (
    appointment_id  TEXT NOT NULL,
    version         INTEGER NOT NULL,
    patient_id      TEXT NOT NULL,
    body            TEXT NOT NULL,
    signed_at       TEXT NOT NULL,
    signed_by       TEXT NOT NULL,
    write_key       TEXT NOT NULL,
    PRIMARY KEY (appointment_id, version)
);
CREATE INDEX note_version_patient ON note_version (patient_id);

-- Charges for billing: one HL7 DFT^P03 message each, sent over MLLP. `message` is the text
-- as sent, the same bytes (and MSH-10 `control_id`) on every retry; a correction is a new
-- row (new control id) and the refused one is marked `corrected`.
CREATE TABLE charge (
    charge_id        TEXT PRIMARY KEY,
    appointment_id   TEXT NOT NULL,
    control_id       TEXT NOT NULL UNIQUE,
    body             TEXT NOT NULL,
    message          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
    reason           TEXT,
    created_at       TEXT NOT NULL,
    acked_at         TEXT,
    replaces         TEXT
);
CREATE INDEX charge_due ON charge (state, next_attempt_ms);
CREATE INDEX charge_visit ON charge (appointment_id);

-- Each visit's milestones (for the KPIs): each set once, the first time it happens.
CREATE TABLE visit_milestone (
    appointment_id   TEXT PRIMARY KEY,
    visit_ended_at   TEXT,
    note_signed_at   TEXT,
    charge_acked_at  TEXT
);
