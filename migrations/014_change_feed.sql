-- The change feed (docs/warehouse.md): every row the worker writes carries the id of the
-- change (one merge transaction) that last wrote it, and a consumer reads "everything
-- changed since N" up to change_high_water(), below which no change can still commit.
--
-- A change id is the merge transaction's own id (pg_current_xact_id(), 64 bits, never
-- wraps) plus an offset kept here. The offset is 0 until a database is restored into
-- another cluster, whose transaction ids start lower: ensure_change_clock() then moves
-- it so that new ids come after every id already stored (the worker calls it at start
-- and after migrating).
CREATE TABLE sync_change_clock (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    id_offset bigint  NOT NULL DEFAULT 0
);
INSERT INTO sync_change_clock DEFAULT VALUES;

-- One row per committed change: a merge (export, re-scan or fast lane) that changed at
-- least one row. Change 1 stands for every row stored before this migration.
CREATE TABLE sync_changes (
    change_id      bigint      PRIMARY KEY,
    source         text,
    run_id         bigint,
    orders_changed integer     NOT NULL DEFAULT 0,
    lines_written  integer     NOT NULL DEFAULT 0,
    lines_removed  integer     NOT NULL DEFAULT 0,
    committed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO sync_changes (change_id, source) VALUES (1, NULL);

-- A constant default is stored once in the catalog: no table rewrite, whatever its size.
ALTER TABLE orders ADD COLUMN change_id bigint NOT NULL DEFAULT 1;
ALTER TABLE orders ALTER COLUMN change_id DROP DEFAULT;
CREATE INDEX orders_change_idx ON orders (change_id);

-- Lines keep their typed columns and a digest of their JSON (jsonb_hash_extended: 64
-- bits, equal for equal jsonb, three times cheaper than md5 of the text), to update
-- only lines that changed; their full JSON is read from orders.raw (order_line_documents
-- below) instead of being stored a second time. A line stored before this migration has
-- no digest yet: it is rewritten once, the next time its order changes.
DROP VIEW order_line_refunds;
DROP VIEW order_line_cancelations;
ALTER TABLE order_lines DROP COLUMN raw;
ALTER TABLE order_lines ADD COLUMN line_digest bigint;
ALTER TABLE order_lines ADD COLUMN change_id bigint NOT NULL DEFAULT 1;
ALTER TABLE order_lines ALTER COLUMN change_id DROP DEFAULT;
CREATE INDEX order_lines_change_idx ON order_lines (change_id);

-- A line that a newer version of its order no longer has: removed from order_lines, and
-- remembered here with the change that removed it. A line that comes back leaves this
-- table again: a line id is in order_lines or here, never both.
CREATE TABLE order_line_tombstones (
    source        text        NOT NULL,
    order_line_id text        NOT NULL,
    order_id      text        NOT NULL,
    change_id     bigint      NOT NULL,
    removed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, order_line_id)
);
CREATE INDEX order_line_tombstones_change_idx ON order_line_tombstones (change_id);

-- One row per version of an order the worker has seen (sources with history = true),
-- a version being a last_updated_date (whole seconds: two versions within one second
-- share a row, holding the later). Mirakl's export carries only the latest state:
-- history begins when the worker first sees an order, and versions between two syncs
-- are not seen. Orders already stored start with their current version.
CREATE TABLE order_history (
    source                  text        NOT NULL,
    order_id                text        NOT NULL,
    last_updated_date       timestamptz NOT NULL,
    order_state             text,
    order_state_reason_code text,
    shop_id                 text,
    currency_iso_code       text,
    price                   numeric,
    shipping_price          numeric,
    total_price             numeric,
    total_commission        numeric,
    change_id               bigint      NOT NULL,
    recorded_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, order_id, last_updated_date)
);
CREATE INDEX order_history_change_idx ON order_history (change_id);
INSERT INTO order_history (source, order_id, last_updated_date, order_state,
    order_state_reason_code, shop_id, currency_iso_code, price, shipping_price, total_price,
    total_commission, change_id)
SELECT source, order_id, last_updated_date, order_state, order_state_reason_code, shop_id,
       currency_iso_code, price, shipping_price, total_price, total_commission, change_id
FROM orders;

-- The id of the change the calling transaction writes. FOR SHARE: a clock move waits for
-- the merges in flight, so no id is taken under one offset and read under another.
CREATE FUNCTION current_change_id() RETURNS bigint
LANGUAGE sql VOLATILE SET search_path FROM CURRENT AS $$
    SELECT pg_current_xact_id()::text::bigint + id_offset FROM sync_change_clock FOR SHARE
$$;

-- Every change with an id below this has committed (or never will): the snapshot's xmin
-- is the oldest transaction still running anywhere in the cluster. Capped at the last
-- recorded change + 1, so a consumer's stored position is always an id this database
-- has handed out (which is what lets ensure_change_clock() keep ids increasing after a
-- restore).
CREATE FUNCTION change_high_water() RETURNS bigint
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT least(
        pg_snapshot_xmin(pg_current_snapshot())::text::bigint
            + (SELECT id_offset FROM sync_change_clock),
        (SELECT max(change_id) FROM sync_changes) + 1)
$$;

-- Moves the clock past every stored change id if it is behind (a restore into another
-- cluster); returns by how much it moved (0: it was ahead). The snapshot's xmax is the
-- next transaction id to be handed out, so the check itself takes none.
CREATE FUNCTION ensure_change_clock() RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $$
DECLARE
    behind bigint;
BEGIN
    SELECT (SELECT max(change_id) FROM sync_changes) + 1
           - (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + id_offset)
    INTO behind FROM sync_change_clock;
    IF behind <= 0 THEN
        RETURN 0;
    END IF;
    -- Waits for the merges in flight (they hold the clock FOR SHARE), then looks again.
    PERFORM 1 FROM sync_change_clock FOR UPDATE;
    SELECT (SELECT max(change_id) FROM sync_changes) + 1
           - (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + id_offset)
    INTO behind FROM sync_change_clock;
    behind := greatest(behind, 0);
    UPDATE sync_change_clock SET id_offset = id_offset + behind;
    RETURN behind;
END
$$;

-- Each line's JSON, read from its order's document (one row per element of
-- orders.raw->'order_lines', the lines order_lines holds). Filter on source and order_id
-- to read a few orders' lines by index.
CREATE VIEW order_line_documents AS
SELECT o.source, o.order_id, e->>'order_line_id' AS order_line_id, e AS raw
FROM orders o
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(o.raw->'order_lines') = 'array' THEN o.raw->'order_lines' ELSE '[]'::jsonb END
) AS e;

-- The refund and cancelation views, same columns as before, now read from the order's
-- document.
CREATE VIEW order_line_refunds AS
SELECT d.source, d.order_id, d.order_line_id, o.shop_id, o.currency_iso_code,
       r->>'id' AS refund_id, (r->>'amount')::numeric AS amount,
       (r->>'quantity')::integer AS quantity, (r->>'shipping_amount')::numeric AS shipping_amount,
       (r->>'commission_amount')::numeric AS commission_amount, r->>'reason_code' AS reason_code,
       coalesce(r->>'refund_state', r->>'state') AS state,
       (r->>'created_date')::timestamptz AS created_date, r AS raw,
       coalesce(r->>'refund_state', r->>'state') AS refund_state,
       r->>'order_refund_id' AS order_refund_id,
       (r->>'commission_total_amount')::numeric AS commission_total_amount
FROM orders o
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(o.raw->'order_lines') = 'array' THEN o.raw->'order_lines' ELSE '[]'::jsonb END
) AS e
CROSS JOIN LATERAL (SELECT o.source, o.order_id, e->>'order_line_id' AS order_line_id) d
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(e->'refunds') = 'array' THEN e->'refunds' ELSE '[]'::jsonb END
) AS r;

CREATE VIEW order_line_cancelations AS
SELECT d.source, d.order_id, d.order_line_id, o.shop_id, o.currency_iso_code,
       c->>'id' AS cancelation_id, (c->>'amount')::numeric AS amount,
       (c->>'quantity')::integer AS quantity, (c->>'shipping_amount')::numeric AS shipping_amount,
       (c->>'commission_amount')::numeric AS commission_amount, c->>'reason_code' AS reason_code,
       (c->>'created_date')::timestamptz AS created_date, c AS raw
FROM orders o
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(o.raw->'order_lines') = 'array' THEN o.raw->'order_lines' ELSE '[]'::jsonb END
) AS e
CROSS JOIN LATERAL (SELECT o.source, o.order_id, e->>'order_line_id' AS order_line_id) d
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(e->'cancelations') = 'array' THEN e->'cancelations' ELSE '[]'::jsonb END
) AS c;
