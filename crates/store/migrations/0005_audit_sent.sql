-- Audit entries sent to the EHR (as FHIR AuditEvents), each at most once: the resource the
-- EHR made of it, or why it refused it for good. Kept beside the chain, not in it.
CREATE TABLE audit_sent (
    seq      INTEGER PRIMARY KEY REFERENCES audit_log(seq),
    sent_at  TEXT NOT NULL,
    resource TEXT,
    refused  TEXT
) WITHOUT ROWID;
