-- The daily re-scan: a differential export over the last days that loads what earlier
-- exports missed, without moving the watermark. Its runs have their own mode.
ALTER TABLE sync_runs DROP CONSTRAINT sync_runs_mode_check;
ALTER TABLE sync_runs ADD CONSTRAINT sync_runs_mode_check
    CHECK (mode IN ('differential', 'full', 'rescan'));

-- When the watermark last moved forward (updated_at changes at every merge that sets it,
-- also to the same value): a watermark that stays put while runs succeed is stalled.
ALTER TABLE sync_state ADD COLUMN moved_at timestamptz;
UPDATE sync_state SET moved_at = updated_at;
ALTER TABLE sync_state ALTER COLUMN moved_at SET NOT NULL,
    ALTER COLUMN moved_at SET DEFAULT now();
