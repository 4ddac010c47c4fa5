"""The Mirakl API edge: aiohttp client for OR13/OR14/OR15. Knows nothing of Postgres."""

from syncer.mirakl.client import ExportStatus, MiraklClient, open_client

__all__ = ["ExportStatus", "MiraklClient", "open_client"]
