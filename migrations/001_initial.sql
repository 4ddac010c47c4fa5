-- Orders as Mirakl sent them: typed columns for what people query, raw jsonb for everything.
CREATE TABLE orders (
    source                   text        NOT NULL,
    order_id                 text        NOT NULL,
    commercial_id            text,
    order_state              text,
    order_state_reason_code  text,
    shop_id                  text,
    channel_code             text,
    created_date             timestamptz,
    last_updated_date        timestamptz NOT NULL,
    acceptance_decision_date timestamptz,
    customer_debited_date    timestamptz,
    shipping_deadline        timestamptz,
    currency_iso_code        text,
    price                    numeric,
    shipping_price           numeric,
    total_price              numeric,
    total_commission         numeric,
    payment_type             text,
    payment_workflow         text,
    customer_id              text,
    shipping_type_code       text,
    shipping_zone_code       text,
    has_incident             boolean,
    fully_refunded           boolean,
    raw                      jsonb       NOT NULL,
    run_id                   bigint,
    synced_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, order_id)
);
CREATE INDEX orders_last_updated_idx ON orders (source, last_updated_date);
CREATE INDEX orders_commercial_idx ON orders (source, commercial_id);

-- The lines of each order's latest version, exactly.
CREATE TABLE order_lines (
    source                   text        NOT NULL,
    order_line_id            text        NOT NULL,
    order_id                 text        NOT NULL,
    order_line_index         integer,
    order_line_state         text,
    offer_id                 text,
    offer_sku                text,
    product_sku              text,
    product_title            text,
    category_code            text,
    quantity                 integer,
    price_unit               numeric,
    price                    numeric,
    shipping_price           numeric,
    total_price              numeric,
    commission_fee           numeric,
    total_commission         numeric,
    created_date             timestamptz,
    last_updated_date        timestamptz,
    shipped_date             timestamptz,
    received_date            timestamptz,
    raw                      jsonb       NOT NULL,
    PRIMARY KEY (source, order_line_id)
);
CREATE INDEX order_lines_order_idx ON order_lines (source, order_id);

-- Per source: orders updated up to `watermark` are loaded.
CREATE TABLE sync_state (
    source     text PRIMARY KEY,
    watermark  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per run (differential or full), whatever its outcome.
CREATE TABLE sync_runs (
    run_id        bigserial   PRIMARY KEY,
    source        text        NOT NULL,
    mode          text        NOT NULL CHECK (mode IN ('differential', 'full')),
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    status        text        NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    tracking_id   text,
    exports_total integer     NOT NULL DEFAULT 1,
    exports_done  integer     NOT NULL DEFAULT 0,
    chunks        integer     NOT NULL DEFAULT 0,
    orders        bigint      NOT NULL DEFAULT 0,
    orders_changed bigint     NOT NULL DEFAULT 0,
    lines         bigint      NOT NULL DEFAULT 0,
    bytes         bigint      NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    error         text
);
CREATE INDEX sync_runs_source_idx ON sync_runs (source, run_id DESC);

-- Each export requested from Mirakl. The tracking id is stored before polling,
-- so a restarted worker resumes the export in flight instead of asking again.
CREATE TABLE sync_exports (
    tracking_id   text        PRIMARY KEY,
    source        text        NOT NULL,
    run_id        bigint      NOT NULL REFERENCES sync_runs (run_id),
    mode          text        NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    moves_watermark_to timestamptz,
    status        text        NOT NULL DEFAULT 'requested'
                  CHECK (status IN ('requested', 'merged', 'failed', 'abandoned')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    error         text
);
CREATE UNIQUE INDEX sync_exports_one_in_flight ON sync_exports (source) WHERE status = 'requested';

-- Chunk rows land here (COPY) before the merge; emptied per run.
CREATE UNLOGGED TABLE staged_orders (
    run_id            bigint      NOT NULL,
    chunk             integer     NOT NULL,
    position          integer     NOT NULL,
    order_id          text        NOT NULL,
    last_updated_date timestamptz NOT NULL,
    raw               jsonb       NOT NULL
);
CREATE INDEX staged_orders_run_idx ON staged_orders (run_id, order_id);
