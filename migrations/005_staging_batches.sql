-- Staged rows are numbered by staging batch (a run's COPYs, in order), not by chunk file:
-- batches are merged one after another while the next one streams in.
ALTER TABLE staged_orders RENAME COLUMN chunk TO batch;
