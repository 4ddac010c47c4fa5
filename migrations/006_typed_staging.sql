-- The orders' typed columns are computed while staging, by the backend that runs the
-- COPY (it holds each parsed document in memory anyway), instead of in the merge that
-- follows: the merge then copies columns, and the two backends share the work evenly.
-- Dates stay text here (text -> timestamptz depends on the session's TimeZone, so it is
-- not allowed in a generated column) and are cast in the merge. Measured in
-- docs/benchmarks.md.
ALTER TABLE staged_orders
    ADD COLUMN commercial_id text GENERATED ALWAYS AS (raw->>'commercial_id') STORED,
    ADD COLUMN order_state text GENERATED ALWAYS AS (raw->>'order_state') STORED,
    ADD COLUMN order_state_reason_code text
        GENERATED ALWAYS AS (raw->>'order_state_reason_code') STORED,
    ADD COLUMN shop_id text GENERATED ALWAYS AS (raw->>'shop_id') STORED,
    ADD COLUMN channel_code text GENERATED ALWAYS AS (raw->'channel'->>'code') STORED,
    ADD COLUMN created_date text GENERATED ALWAYS AS (raw->>'created_date') STORED,
    ADD COLUMN acceptance_decision_date text
        GENERATED ALWAYS AS (raw->>'acceptance_decision_date') STORED,
    ADD COLUMN customer_debited_date text
        GENERATED ALWAYS AS (raw->>'customer_debited_date') STORED,
    ADD COLUMN shipping_deadline text GENERATED ALWAYS AS (raw->>'shipping_deadline') STORED,
    ADD COLUMN currency_iso_code text GENERATED ALWAYS AS (raw->>'currency_iso_code') STORED,
    ADD COLUMN price numeric GENERATED ALWAYS AS ((raw->>'price')::numeric) STORED,
    ADD COLUMN shipping_price numeric
        GENERATED ALWAYS AS ((raw->>'shipping_price')::numeric) STORED,
    ADD COLUMN total_price numeric GENERATED ALWAYS AS ((raw->>'total_price')::numeric) STORED,
    ADD COLUMN total_commission numeric
        GENERATED ALWAYS AS ((raw->>'total_commission')::numeric) STORED,
    ADD COLUMN payment_type text GENERATED ALWAYS AS (raw->>'payment_type') STORED,
    ADD COLUMN payment_workflow text GENERATED ALWAYS AS (raw->>'payment_workflow') STORED,
    ADD COLUMN customer_id text GENERATED ALWAYS AS (raw->'customer'->>'customer_id') STORED,
    ADD COLUMN shipping_type_code text GENERATED ALWAYS AS (raw->>'shipping_type_code') STORED,
    ADD COLUMN shipping_zone_code text GENERATED ALWAYS AS (raw->>'shipping_zone_code') STORED,
    ADD COLUMN has_incident boolean GENERATED ALWAYS AS ((raw->>'has_incident')::boolean) STORED,
    ADD COLUMN fully_refunded boolean
        GENERATED ALWAYS AS ((raw->>'fully_refunded')::boolean) STORED;

-- Staged documents compressed with lz4, where the server has it: the COPY compresses
-- each document once, and the merge stores that compressed value in orders.raw as it
-- is (no second compression). Without lz4 they stay uncompressed (004): pglz would
-- cost more than it saves.
DO $$
BEGIN
    ALTER TABLE staged_orders ALTER COLUMN raw SET COMPRESSION lz4;
    ALTER TABLE staged_orders ALTER COLUMN raw SET STORAGE EXTENDED;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL build: staged documents stay uncompressed';
END
$$;

-- Each batch's merge reads only that batch's staged rows, and a join on the full key
-- stays one probe per row whatever plan is chosen (rows arrive in key order, so the
-- index grows at its right edge). Without it, every batch scanned all of the run's
-- staging so far.
CREATE INDEX staged_orders_batch_idx ON staged_orders (run_id, batch, position);
