-- Set once the audit chain is keyed with the audit key kept in the OS keychain. A database
-- with this row whose audit key is gone from the keychain is refused: its chain is never
-- "carried over" to a new key (that would re-key a chain rewritten by someone holding only
-- the database key).
CREATE TABLE audit_keyed (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    keyed_at  TEXT NOT NULL
);
