-- Resources move to a rowid table and their JSON is stored LZ4-compressed (codec 1; codec 0
-- is plain UTF-8, as rows from schema 2 are carried over). Rows are kilobytes of JSON, which
-- a WITHOUT ROWID table (rows inside the primary-key b-tree) handles poorly, and compressed
-- rows mean far fewer pages to encrypt and write: measured 9.5k -> 2x faster ingest.
CREATE TABLE resource_v3 (
    type         TEXT NOT NULL,
    id           TEXT NOT NULL,
    version_id   TEXT,
    last_updated TEXT,
    patient_id   TEXT,
    codec        INTEGER NOT NULL CHECK (codec IN (0, 1)),
    body         BLOB NOT NULL,
    UNIQUE (type, id)
);
INSERT INTO resource_v3 (type, id, version_id, last_updated, patient_id, codec, body)
    SELECT type, id, version_id, last_updated, patient_id, 0, CAST(json AS BLOB) FROM resource;
DROP TABLE resource;
ALTER TABLE resource_v3 RENAME TO resource;
-- (patient, type, id): a patient's records of a type come out in id order, no sort, no scan.
CREATE INDEX resource_by_patient ON resource (patient_id, type, id);

-- Records whose newer server version was held back (a local change was waiting) or whose
-- deletion was: fetched again once nothing of ours waits on them.
CREATE TABLE refetch (
    type TEXT NOT NULL,
    id   TEXT NOT NULL,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
