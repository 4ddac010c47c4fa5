-- Faster loads, measured with bench/ (docs/benchmarks.md).

-- The merge finds staged rows by (run_id, chunk, position) through a hash join on the
-- small set of winning keys; an index on staged_orders only slowed every COPY down.
DROP INDEX staged_orders_run_idx;

-- Staged documents live for minutes: store them out of line without compressing them,
-- which saves a compression on COPY and a decompression in the merge.
ALTER TABLE staged_orders ALTER COLUMN raw SET STORAGE EXTERNAL;

-- lz4 compresses raw documents several times faster than the default pglz, where the
-- server was built with it (Debian's is; some embedded builds are not).
DO $$
BEGIN
    ALTER TABLE orders ALTER COLUMN raw SET COMPRESSION lz4;
    ALTER TABLE order_lines ALTER COLUMN raw SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL build: raw stays pglz-compressed';
END
$$;
