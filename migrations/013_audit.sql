-- The count audit: per source and day of last_updated_date, the mirror's order count against
-- Mirakl's (OR11 total_count). It only reports; the re-scan repairs.
CREATE TABLE sync_audits (
    audit_id        bigserial   PRIMARY KEY,
    source          text        NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    days            integer     NOT NULL DEFAULT 0,
    mismatched_days integer     NOT NULL DEFAULT 0,
    -- [{"day": "2026-01-31", "mirror": n, "mirakl": n}], one per day audited
    details         jsonb       NOT NULL DEFAULT '[]',
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'ok', 'mismatch', 'deferred', 'failed')),
    error           text
);
CREATE INDEX sync_audits_source_idx ON sync_audits (source, audit_id DESC);
