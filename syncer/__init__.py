"""mirakl-order-sync: keep a PostgreSQL copy of Mirakl orders current."""

__version__ = "0.1.0"
