-- Who may run or push a source: one row per (source, kind), taken for a while and renewed.
-- A holder whose process dies stops renewing; its lease is free once expires_at has passed
-- (database clock). `token` grows at every takeover: a write that commits only while the
-- row still carries its holder and token cannot come from a run that lost the lease.
CREATE TABLE leases (
    source      text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('run', 'push')),
    holder      text        NOT NULL,
    token       bigint      NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (source, kind)
);
