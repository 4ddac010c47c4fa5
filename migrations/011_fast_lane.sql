-- The fast lane (OR11): per source, how far its last complete pass read (`cursor`, the
-- worker's clock when that pass began) and what the last pass did. The lane never touches
-- sync_state: the export's watermark is the only promise that nothing was missed.
CREATE TABLE sync_lanes (
    source         text        PRIMARY KEY,
    cursor         timestamptz,
    last_pass_at   timestamptz NOT NULL DEFAULT now(),
    orders_read    integer     NOT NULL DEFAULT 0,
    orders_changed integer     NOT NULL DEFAULT 0,
    pages          integer     NOT NULL DEFAULT 0,
    truncated      boolean     NOT NULL DEFAULT false,
    error          text
);

-- The lane's passes are fenced by a lease of their own kind.
ALTER TABLE leases DROP CONSTRAINT leases_kind_check;
ALTER TABLE leases ADD CONSTRAINT leases_kind_check CHECK (kind IN ('run', 'push', 'lane'));
