"""One run: windows, the export job, the chunk stream, parse -> rows. Knows neither aiohttp nor asyncpg."""
