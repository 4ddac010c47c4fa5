-- One bad outbox row never blocks the others.
-- A patch must be a JSON object. NOT VALID: rows already queued are not checked (the pusher
-- rejects them one by one, with the reason); a CHECK also applies to every UPDATE of a row,
-- hence the one exception: such an old row may still be marked rejected.
ALTER TABLE order_patches ADD CONSTRAINT order_patches_patch_is_object
    CHECK (jsonb_typeof(patch) = 'object' OR status = 'rejected') NOT VALID;

-- A patch whose call failed transiently (5xx, 429, timeout, network) waits until then before
-- it is sent again (backoff with jitter); NULL: due now.
ALTER TABLE order_patches ADD COLUMN next_attempt_at timestamptz;
