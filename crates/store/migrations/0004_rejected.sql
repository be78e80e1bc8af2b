-- Records the EHR served that Hearth could not read, kept until a later fetch reads them: each
-- is fetched again on later rounds (when its type and id are known) and shown by name in the
-- sync panel and the hearth-sync tool, instead of being named once and then lost behind the
-- pull cursor.
CREATE TABLE rejected (
    -- `Type/id`, or where the EHR served it (the entry's fullUrl) when the type is unreadable.
    record        TEXT PRIMARY KEY,
    resource_type TEXT,
    resource_id   TEXT,
    message       TEXT NOT NULL,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    fetches       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX rejected_by_resource ON rejected (resource_type, resource_id);

-- Only server errors (5xx, 429) count toward giving a write up; offline and sign-in failures
-- never do.
ALTER TABLE outbox ADD COLUMN server_errors INTEGER NOT NULL DEFAULT 0;
