"""PostgreSQL: pool, migrations, COPY + merge, watermarks, run history, locks. Knows no HTTP."""
