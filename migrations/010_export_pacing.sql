-- Mirakl limits how often OR13 may be called (differential exports every 5 min at most, full
-- ones every 24 h). Per source: no OR13 before `not_before` (a long Retry-After on a 429, or
-- a full resync waiting for its spacing); runs before then are skipped with `reason`.
CREATE TABLE source_pacing (
    source     text        PRIMARY KEY,
    not_before timestamptz NOT NULL,
    reason     text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A full resync, recorded so that one that stopped (kill, failure, deadline, spacing) goes on
-- from its first window not merged. Its windows are `full_windows(window_start, window_end)`;
-- the merged ones are its sync_exports rows with status 'merged'.
CREATE TABLE sync_resyncs (
    resync_id    bigserial   PRIMARY KEY,
    source       text        NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    windows      integer     NOT NULL,
    status       text        NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'done', 'abandoned')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE UNIQUE INDEX sync_resyncs_one_open ON sync_resyncs (source) WHERE status = 'open';

ALTER TABLE sync_exports ADD COLUMN resync_id bigint REFERENCES sync_resyncs (resync_id),
    ADD COLUMN window_index integer;
CREATE INDEX sync_exports_requested_idx ON sync_exports (source, mode, requested_at DESC);

-- A run that continues a resync says from which window (1-based); 'deferred': it stopped
-- early to respect Mirakl's call frequency and the next run goes on.
ALTER TABLE sync_runs ADD COLUMN resync_id bigint, ADD COLUMN resumed_from integer;
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_status_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted', 'deferred'));
