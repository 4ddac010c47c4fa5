"""Named SQL. Values are always bound ($n), never formatted in; the one name formatted
in is a run's staging table, `{staging}`, made by `staging_table` from the run id.

Tables are unqualified: every connection's search_path is the configured schema.
Typed columns are projections of `raw` computed by PostgreSQL, so money stays
exact (jsonb numbers are arbitrary-precision numerics, never floats).
"""

GET_WATERMARK = "SELECT watermark FROM sync_state WHERE source = $1"

IN_FLIGHT_EXPORT = """
SELECT tracking_id, run_id, mode, window_start, window_end, moves_watermark_to, resync_id,
       window_index
FROM sync_exports WHERE source = $1 AND status = 'requested'
"""

# Pacing (migration 010): no OR13 for the source before not_before.
GET_NOT_BEFORE = """
SELECT not_before, reason, now() AS db_now FROM source_pacing
WHERE source = $1 AND not_before > now()
"""

SET_NOT_BEFORE = """
INSERT INTO source_pacing (source, not_before, reason, updated_at)
VALUES ($1, now() + make_interval(secs => $2), $3, now())
ON CONFLICT (source) DO UPDATE SET not_before = EXCLUDED.not_before, reason = EXCLUDED.reason,
    updated_at = now()
RETURNING not_before
"""

# Seconds since the source's last OR13 of this mode (NULL: never).
SECONDS_SINCE_EXPORT = """
SELECT extract(epoch FROM now() - max(requested_at))::float8 FROM sync_exports
WHERE source = $1 AND mode = $2
"""

OPEN_RESYNC = """
SELECT resync_id, window_start, window_end, windows FROM sync_resyncs
WHERE source = $1 AND status = 'open'
"""

BEGIN_RESYNC = """
INSERT INTO sync_resyncs (source, window_start, window_end, windows) VALUES ($1, $2, $3, $4)
RETURNING resync_id
"""

ABANDON_RESYNCS = """
UPDATE sync_resyncs SET status = 'abandoned', finished_at = now()
WHERE source = $1 AND status = 'open'
"""

FINISH_RESYNC = """
UPDATE sync_resyncs SET status = 'done', finished_at = now()
WHERE resync_id = $1 AND status = 'open'
"""

MERGED_WINDOWS = """
SELECT DISTINCT window_index FROM sync_exports
WHERE resync_id = $1 AND status = 'merged' AND window_index IS NOT NULL
"""

# In the merge's transaction: the resync whose last unmerged window this export was is done.
CLOSE_COMPLETE_RESYNC = """
UPDATE sync_resyncs r SET status = 'done', finished_at = now()
FROM sync_exports e
WHERE e.tracking_id = $1 AND r.resync_id = e.resync_id AND r.status = 'open'
  AND (SELECT count(DISTINCT m.window_index) FROM sync_exports m
       WHERE m.resync_id = r.resync_id AND m.status = 'merged') >= r.windows
"""

RUN_RESYNC = "UPDATE sync_runs SET resync_id = $2, resumed_from = $3 WHERE run_id = $1"

# Under the source's lease no other run is alive: a 'running' row is one whose process died
# (or that lost the lease and commits nothing more).
CLOSE_DEAD_RUNS = """
UPDATE sync_runs SET status = 'interrupted', finished_at = now(),
    error = 'the worker stopped before the run finished (crash or kill)'
WHERE source = $1 AND status = 'running'
"""

BEGIN_RUN = """
INSERT INTO sync_runs (source, mode, window_start, window_end, exports_total)
VALUES ($1, $2, $3, $4, $5) RETURNING run_id
"""

RECORD_EXPORT = """
INSERT INTO sync_exports (tracking_id, source, run_id, mode, window_start, window_end,
    moves_watermark_to, resync_id, window_index)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

RUN_TRACKING = "UPDATE sync_runs SET tracking_id = $2 WHERE run_id = $1"

ADOPT_EXPORT = "UPDATE sync_exports SET run_id = $2 WHERE tracking_id = $1 RETURNING source"

CLOSE_EXPORT = """
UPDATE sync_exports SET status = $2, error = $3, finished_at = now() WHERE tracking_id = $1
RETURNING source
"""


def staging_table(run_id: int) -> str:
    """The run's own staging table: made LIKE `staged_orders` when the run begins, emptied
    by TRUNCATE when an export commits and dropped when the run ends. Emptying a shared
    table instead (DELETE) cost 0.8 s per 100k orders at every commit, and a vacuum after."""
    return f"staged_orders_{int(run_id)}"


def on_staging(statement: str, run_id: int) -> str:
    """`statement` with `{staging}` naming the run's staging table."""
    return statement.format(staging=staging_table(run_id))


# No autovacuum: the table lives for one run, and the merge's plans do not need its
# statistics (tests/test_merge_plans.py). In a run of several minutes (a large resync)
# an autoanalyze would read and decompress thousands of staged documents on the cores
# the load runs on, and the TRUNCATE at commit would wait for it to be cancelled (up to
# deadlock_timeout). Not seen in 100k-order runs (20-25 s, under autovacuum_naptime).
CREATE_STAGING = """
CREATE UNLOGGED TABLE {staging} (LIKE staged_orders INCLUDING ALL)
WITH (autovacuum_enabled = off, toast.autovacuum_enabled = off)
"""

EMPTY_STAGING = "TRUNCATE {staging}"

DROP_STAGING = "DROP TABLE IF EXISTS {staging}"

DROP_STAGING_QUICKLY = "SET LOCAL lock_timeout = '5s'"

# Staging that runs of the source left behind when their process died: their own tables,
# and rows in staged_orders itself (where runs staged before each had its own table).
STAGING_OF_SOURCE = """
SELECT c.relname FROM pg_class c JOIN sync_runs r ON c.relname = 'staged_orders_' || r.run_id
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND r.source = $1
"""

CLEAR_SHARED_STAGING_OF_SOURCE = """
DELETE FROM staged_orders WHERE run_id IN (SELECT run_id FROM sync_runs WHERE source = $1)
"""

STAGED_COLUMNS = ("run_id", "batch", "position", "order_id", "last_updated_date", "raw")

# An export is merged batch by batch inside one transaction (so nothing is visible until
# its end), while the next batch is still streaming into staging on another connection.
# `incoming` and `changed` hold one batch at a time; each statement gets the batch number.
CREATE_MERGE_TABLES = """
CREATE TEMP TABLE incoming (order_id text, position integer,
    last_updated_date timestamptz) ON COMMIT DROP;
CREATE TEMP TABLE changed (order_id text) ON COMMIT DROP;
CREATE TEMP TABLE changed_in_export (order_id text) ON COMMIT DROP;
SET LOCAL work_mem = '64MB';
SET LOCAL jit = off
"""

RESET_BATCH_TABLES = "TRUNCATE incoming, changed"

COUNT_EXPORT = """
SELECT (SELECT count(DISTINCT order_id) FROM {staging}),
       (SELECT count(DISTINCT order_id) FROM changed_in_export)
"""

# Which staged copy of each order in the batch wins: the newest (ties: the later one).
# Only keys are sorted; the raw documents stay in staging and are joined in afterwards.
# Batches are merged in order, so across batches the guard below keeps the newest too.
# An order whose stored version is newer, or the same one (same date, same document, no
# shop_id to fill in), is left out here: re-delivered orders (overlap windows, re-scans,
# resyncs) then write nothing at all, not even the row lock an upsert would take.
FILL_INCOMING = """
INSERT INTO incoming
SELECT k.order_id, k.position, k.last_updated_date
FROM (
    SELECT DISTINCT ON (order_id) order_id, position, last_updated_date
    FROM {staging} WHERE run_id = $1 AND batch = $2
    ORDER BY order_id, last_updated_date DESC, position DESC
) k
WHERE NOT EXISTS (
    SELECT 1 FROM orders o
    JOIN {staging} s ON s.run_id = $1 AND s.batch = $2 AND s.position = k.position
    WHERE o.source = $3 AND o.order_id = k.order_id
      AND (o.last_updated_date > k.last_updated_date
           OR (o.last_updated_date = k.last_updated_date
               AND (o.shop_id IS NOT NULL OR coalesce(s.shop_id, $4) IS NULL)
               AND o.raw = s.raw))
)
"""

# Never older over newer: a stored order changes only for a later last_updated_date
# (or the same date with different content). The typed columns were computed while
# staging (migration 006); `raw` is stored as staged (already compressed, where lz4 is).
# shop_id: the order's own (operator view), else the source's configured shop_id ($4,
# text or NULL): a seller's export carries none. A row stored without one gets it when
# the same version comes again (a full resync), never from an older version.
# Each written order carries the merge's change id ($5), and, where the source keeps
# history ($6), adds a row for its version to order_history.
UPSERT_ORDERS = """
WITH upserted AS (
    INSERT INTO orders AS o (
        source, order_id, commercial_id, order_state, order_state_reason_code, shop_id,
        channel_code, created_date, last_updated_date, acceptance_decision_date,
        customer_debited_date, shipping_deadline, currency_iso_code, price, shipping_price,
        total_price, total_commission, payment_type, payment_workflow, customer_id,
        shipping_type_code, shipping_zone_code, has_incident, fully_refunded, raw, run_id,
        synced_at, change_id)
    SELECT $2, i.order_id, s.commercial_id, s.order_state, s.order_state_reason_code,
        coalesce(s.shop_id, $4), s.channel_code, s.created_date::timestamptz, i.last_updated_date,
        s.acceptance_decision_date::timestamptz, s.customer_debited_date::timestamptz,
        s.shipping_deadline::timestamptz, s.currency_iso_code, s.price, s.shipping_price,
        s.total_price, s.total_commission, s.payment_type, s.payment_workflow, s.customer_id,
        s.shipping_type_code, s.shipping_zone_code, s.has_incident, s.fully_refunded,
        s.raw, $1, now(), $5
    FROM incoming i
    JOIN {staging} s ON s.run_id = $1 AND s.batch = $3 AND s.position = i.position
    ON CONFLICT (source, order_id) DO UPDATE SET
        commercial_id = EXCLUDED.commercial_id, order_state = EXCLUDED.order_state,
        order_state_reason_code = EXCLUDED.order_state_reason_code, shop_id = EXCLUDED.shop_id,
        channel_code = EXCLUDED.channel_code, created_date = EXCLUDED.created_date,
        last_updated_date = EXCLUDED.last_updated_date,
        acceptance_decision_date = EXCLUDED.acceptance_decision_date,
        customer_debited_date = EXCLUDED.customer_debited_date,
        shipping_deadline = EXCLUDED.shipping_deadline,
        currency_iso_code = EXCLUDED.currency_iso_code, price = EXCLUDED.price,
        shipping_price = EXCLUDED.shipping_price, total_price = EXCLUDED.total_price,
        total_commission = EXCLUDED.total_commission, payment_type = EXCLUDED.payment_type,
        payment_workflow = EXCLUDED.payment_workflow, customer_id = EXCLUDED.customer_id,
        shipping_type_code = EXCLUDED.shipping_type_code,
        shipping_zone_code = EXCLUDED.shipping_zone_code, has_incident = EXCLUDED.has_incident,
        fully_refunded = EXCLUDED.fully_refunded, raw = EXCLUDED.raw, run_id = EXCLUDED.run_id,
        synced_at = EXCLUDED.synced_at, change_id = EXCLUDED.change_id
    WHERE o.last_updated_date < EXCLUDED.last_updated_date
       OR (o.last_updated_date = EXCLUDED.last_updated_date AND o.raw IS DISTINCT FROM EXCLUDED.raw)
       OR (o.last_updated_date = EXCLUDED.last_updated_date
           AND o.shop_id IS NULL AND EXCLUDED.shop_id IS NOT NULL)
    RETURNING o.order_id, o.last_updated_date, o.order_state, o.order_state_reason_code,
        o.shop_id, o.currency_iso_code, o.price, o.shipping_price, o.total_price,
        o.total_commission
), history AS (
    -- Versions are told apart by last_updated_date, which Mirakl stamps in whole seconds:
    -- two versions within one second share a row, holding the later one (as orders does).
    INSERT INTO order_history AS h (source, order_id, last_updated_date, order_state,
        order_state_reason_code, shop_id, currency_iso_code, price, shipping_price,
        total_price, total_commission, change_id)
    SELECT $2, order_id, last_updated_date, order_state, order_state_reason_code, shop_id,
        currency_iso_code, price, shipping_price, total_price, total_commission, $5
    FROM upserted WHERE $6::boolean
    ON CONFLICT (source, order_id, last_updated_date) DO UPDATE SET
        order_state = EXCLUDED.order_state,
        order_state_reason_code = EXCLUDED.order_state_reason_code,
        shop_id = EXCLUDED.shop_id, currency_iso_code = EXCLUDED.currency_iso_code,
        price = EXCLUDED.price, shipping_price = EXCLUDED.shipping_price,
        total_price = EXCLUDED.total_price, total_commission = EXCLUDED.total_commission,
        change_id = EXCLUDED.change_id, recorded_at = now()
    WHERE (h.order_state, h.order_state_reason_code, h.shop_id, h.currency_iso_code, h.price,
           h.shipping_price, h.total_price, h.total_commission)
          IS DISTINCT FROM
          (EXCLUDED.order_state, EXCLUDED.order_state_reason_code, EXCLUDED.shop_id,
           EXCLUDED.currency_iso_code, EXCLUDED.price, EXCLUDED.shipping_price,
           EXCLUDED.total_price, EXCLUDED.total_commission)
), batch_changed AS (
    INSERT INTO changed SELECT order_id FROM upserted RETURNING order_id
)
-- Kept for the export's count, without a key: an order changed by two batches is
-- counted once by count(DISTINCT) at the end, cheaper than a unique index per row.
INSERT INTO changed_in_export SELECT order_id FROM batch_changed
"""

# The lines of the batch's changed orders, in one statement:
# - `new_lines`: each changed order's lines from its staged document, typed, with a digest
#   of the line's JSON (jsonb_hash_extended: equal for equal jsonb);
# - `upserted`: a line is inserted, or updated in place where its id persists and its
#   digest (or order) differs: an unchanged line of a changed order keeps its row (not
#   even locked) and its change id;
# - `removed`: a stored line of a changed order that the new version no longer has is
#   deleted and tombstoned (`tombstoned`) with the change id; a line that comes back
#   leaves the tombstones (`revived`).
# The old lines are found by one index probe per changed order: the OFFSET 0 subquery
# runs per order, and the DELETE takes the rows by ctid. Any plan the planner could pick
# for a plain join was worse with the statistics it has in the middle of a long
# transaction (order_lines grows by the run's own rows, which no ANALYZE has seen).
# `upserted` and `removed` touch disjoint rows (ids in the new version, ids not in it).
MERGE_CHANGED_LINES = """
WITH new_lines AS MATERIALIZED (
    SELECT $1::text AS source, e->>'order_line_id' AS order_line_id, i.order_id,
        (e->>'order_line_index')::integer AS order_line_index,
        e->>'order_line_state' AS order_line_state, e->>'offer_id' AS offer_id,
        e->>'offer_sku' AS offer_sku, e->>'product_sku' AS product_sku,
        e->>'product_title' AS product_title, e->>'category_code' AS category_code,
        (e->>'quantity')::integer AS quantity, (e->>'price_unit')::numeric AS price_unit,
        (e->>'price')::numeric AS price, (e->>'shipping_price')::numeric AS shipping_price,
        (e->>'total_price')::numeric AS total_price,
        (e->>'commission_fee')::numeric AS commission_fee,
        (e->>'total_commission')::numeric AS total_commission,
        (e->>'created_date')::timestamptz AS created_date,
        (e->>'last_updated_date')::timestamptz AS last_updated_date,
        (e->>'shipped_date')::timestamptz AS shipped_date,
        (e->>'received_date')::timestamptz AS received_date,
        jsonb_hash_extended(e, 0) AS line_digest
    FROM changed c
    JOIN incoming i USING (order_id)
    JOIN {staging} s ON s.run_id = $2 AND s.batch = $3 AND s.position = i.position
    -- The staged document is read (fetched and decompressed) once: OFFSET 0 keeps the
    -- planner from inlining `d.lines` into both places that use it.
    CROSS JOIN LATERAL (SELECT s.raw->'order_lines' AS lines OFFSET 0) d
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(d.lines) = 'array' THEN d.lines ELSE '[]'::jsonb END
    ) AS e
), upserted AS (
    INSERT INTO order_lines AS l (
        source, order_line_id, order_id, order_line_index, order_line_state, offer_id,
        offer_sku, product_sku, product_title, category_code, quantity, price_unit, price,
        shipping_price, total_price, commission_fee, total_commission, created_date,
        last_updated_date, shipped_date, received_date, line_digest, change_id)
    SELECT source, order_line_id, order_id, order_line_index, order_line_state, offer_id,
        offer_sku, product_sku, product_title, category_code, quantity, price_unit, price,
        shipping_price, total_price, commission_fee, total_commission, created_date,
        last_updated_date, shipped_date, received_date, line_digest, $4
    FROM new_lines n
    -- A line stored as it is is left out: not even the row lock of an upsert that then
    -- updates nothing.
    WHERE NOT EXISTS (
        SELECT 1 FROM order_lines l
        WHERE l.source = $1 AND l.order_line_id = n.order_line_id
          AND l.line_digest = n.line_digest AND l.order_id = n.order_id
    )
    ON CONFLICT (source, order_line_id) DO UPDATE SET
        order_id = EXCLUDED.order_id, order_line_index = EXCLUDED.order_line_index,
        order_line_state = EXCLUDED.order_line_state, offer_id = EXCLUDED.offer_id,
        offer_sku = EXCLUDED.offer_sku, product_sku = EXCLUDED.product_sku,
        product_title = EXCLUDED.product_title, category_code = EXCLUDED.category_code,
        quantity = EXCLUDED.quantity, price_unit = EXCLUDED.price_unit, price = EXCLUDED.price,
        shipping_price = EXCLUDED.shipping_price, total_price = EXCLUDED.total_price,
        commission_fee = EXCLUDED.commission_fee, total_commission = EXCLUDED.total_commission,
        created_date = EXCLUDED.created_date, last_updated_date = EXCLUDED.last_updated_date,
        shipped_date = EXCLUDED.shipped_date, received_date = EXCLUDED.received_date,
        line_digest = EXCLUDED.line_digest, change_id = EXCLUDED.change_id
    WHERE l.line_digest IS DISTINCT FROM EXCLUDED.line_digest
       OR l.order_id IS DISTINCT FROM EXCLUDED.order_id
    RETURNING l.order_line_id
), removed AS (
    DELETE FROM order_lines WHERE ctid = ANY (ARRAY(
        SELECT l.ctid FROM changed c
        CROSS JOIN LATERAL (
            SELECT ctid, order_line_id FROM order_lines
            WHERE source = $1 AND order_id = c.order_id OFFSET 0
        ) l
        WHERE NOT EXISTS (SELECT 1 FROM new_lines n WHERE n.order_line_id = l.order_line_id)
    ))
    RETURNING order_line_id, order_id
), tombstoned AS (
    INSERT INTO order_line_tombstones (source, order_line_id, order_id, change_id)
    SELECT $1, order_line_id, order_id, $4 FROM removed
    ON CONFLICT (source, order_line_id) DO UPDATE SET order_id = EXCLUDED.order_id,
        change_id = EXCLUDED.change_id, removed_at = now()
), revived AS (
    DELETE FROM order_line_tombstones t USING upserted u
    WHERE t.source = $1 AND t.order_line_id = u.order_line_id
)
SELECT (SELECT count(*) FROM upserted) AS written, (SELECT count(*) FROM removed) AS removed
"""

# The merge's change id: its transaction's id on the change clock (migration 014).
CURRENT_CHANGE_ID = "SELECT current_change_id()"

# One row per committed merge that changed something (the change feed's index).
RECORD_CHANGE = """
INSERT INTO sync_changes (change_id, source, run_id, orders_changed, lines_written, lines_removed)
VALUES ($1, $2, $3, $4, $5, $6)
"""


# The watermark only ever moves forward.
SET_WATERMARK = """
INSERT INTO sync_state (source, watermark, updated_at) VALUES ($1, $2, now())
ON CONFLICT (source) DO UPDATE SET watermark = GREATEST(sync_state.watermark, EXCLUDED.watermark),
    updated_at = now(),
    moved_at = CASE WHEN EXCLUDED.watermark > sync_state.watermark THEN now()
                    ELSE sync_state.moved_at END
"""

ADD_RUN_COUNTS = """
UPDATE sync_runs SET exports_done = exports_done + $2, chunks = chunks + $3, orders = orders + $4,
    orders_changed = orders_changed + $5, lines = lines + $6, bytes = bytes + $7
WHERE run_id = $1
"""

# Only a row still running: one closed as interrupted by a later run stays as it is.
FINISH_RUN = """
UPDATE sync_runs SET status = $2, error = $3, finished_at = now()
WHERE run_id = $1 AND status = 'running' RETURNING source
"""

STATUS = """
SELECT s.source, st.watermark, now() - st.watermark AS lag,
       r.run_id, r.mode, r.status, r.orders, r.orders_changed, r.lines, r.chunks,
       r.started_at, r.finished_at, r.error, r.resumed_from,
       (SELECT tracking_id FROM sync_exports e WHERE e.source = s.source AND e.status = 'requested')
           AS export_in_flight,
       (SELECT count(*) FROM orders o WHERE o.source = s.source) AS orders_stored,
       (SELECT count(*) FROM order_patches p WHERE p.source = s.source
            AND p.status IN ('pending', 'sent')) AS patches_pending,
       pc.not_before, pc.reason AS not_before_reason,
       rs.resync_id, rs.windows AS resync_windows,
       (SELECT count(DISTINCT e.window_index) FROM sync_exports e
            WHERE e.resync_id = rs.resync_id AND e.status = 'merged') AS resync_windows_merged,
       st.moved_at AS watermark_moved_at, ok.last_success, ok.last_success_started,
       rr.run_id AS rescan_run_id, rr.status AS rescan_result,
       rr.orders_changed AS rescan_corrected, rr.finished_at AS rescan_finished_at
FROM unnest($1::text[]) AS s(source)
LEFT JOIN sync_state st ON st.source = s.source
LEFT JOIN source_pacing pc ON pc.source = s.source AND pc.not_before > now()
LEFT JOIN sync_resyncs rs ON rs.source = s.source AND rs.status = 'open'
LEFT JOIN LATERAL (
    SELECT * FROM sync_runs r WHERE r.source = s.source ORDER BY r.run_id DESC LIMIT 1
) r ON true
LEFT JOIN LATERAL (
    SELECT max(r.finished_at) AS last_success, max(r.started_at) AS last_success_started
    FROM sync_runs r WHERE r.source = s.source AND r.status = 'succeeded'
) ok ON true
LEFT JOIN LATERAL (
    SELECT * FROM sync_runs r WHERE r.source = s.source AND r.mode = 'rescan'
        AND r.status <> 'running'
    ORDER BY r.run_id DESC LIMIT 1
) rr ON true
ORDER BY s.source
"""

RUNS = """
SELECT run_id, source, mode, status, window_start, window_end, tracking_id, exports_done,
       exports_total, resync_id, resumed_from, chunks, orders, orders_changed, lines, bytes,
       started_at, finished_at, finished_at - started_at AS duration, error
FROM sync_runs WHERE ($1::text IS NULL OR source = $1)
ORDER BY run_id DESC LIMIT $2
"""

FRESHNESS = """
SELECT s.source, st.watermark, st.moved_at,
       (SELECT max(finished_at) FROM sync_runs r WHERE r.source = s.source AND r.status = 'succeeded')
           AS last_success,
       (SELECT max(started_at) FROM sync_runs r WHERE r.source = s.source AND r.status = 'succeeded')
           AS last_success_started,
       now() AS db_now
FROM unnest($1::text[]) AS s(source)
LEFT JOIN sync_state st ON st.source = s.source
"""

# Seconds since the oldest change that committed but is not below the high water yet (the
# snapshot's xmin is held back by a transaction still running); NULL: every change is
# readable. The range scan is on sync_changes' key.
FEED_WAITING = """
SELECT extract(epoch FROM now() - min(committed_at))::float8 FROM sync_changes
WHERE change_id >= change_high_water()
"""
