-- Order corrections to send to Mirakl with OR04 (PUT /api/orders).
-- Insert one row per order: `patch` is an OR04 order object (the fields to change;
-- null removes a value); `order_id` inside it is optional and must match.
CREATE TABLE order_patches (
    patch_id    bigserial   PRIMARY KEY,
    source      text        NOT NULL,
    order_id    text        NOT NULL,
    patch       jsonb       NOT NULL,
    status      text        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'sent', 'applied', 'rejected', 'failed')),
    attempts    integer     NOT NULL DEFAULT 0,
    -- Why it was refused: [{"code", "field", "message"}], from Mirakl or from local validation.
    errors      jsonb,
    last_error  text,
    batch_id    bigint,
    -- What Mirakl reported as updated.
    result      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    finished_at timestamptz
);
CREATE INDEX order_patches_pending_idx ON order_patches (source, patch_id) WHERE status IN ('pending', 'sent');
CREATE INDEX order_patches_order_idx ON order_patches (source, order_id);

-- One row per OR04 call: the rate limit (one call a minute per source) is read from here,
-- so it holds across restarts and replicas.
CREATE TABLE push_calls (
    call_id     bigserial   PRIMARY KEY,
    source      text        NOT NULL,
    orders      integer     NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text        NOT NULL DEFAULT 'sending'
                CHECK (status IN ('sending', 'answered', 'failed')),
    applied     integer,
    rejected    integer,
    error       text
);
CREATE INDEX push_calls_source_idx ON push_calls (source, call_id DESC);
