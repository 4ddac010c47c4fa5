"""Fetch an export's chunk files the way every contender does: OR13, OR14, OR15 over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson

KEY = "sim-secret-key"


async def chunk_bodies(base_url: str, days: float) -> AsyncIterator[bytes]:
    """Each chunk file of a fresh export of the last `days` days, whole."""
    end = datetime.now(UTC)
    # A day of margin, as the syncer's start_date has: the simulator seeded orders up to
    # `days` before it started, and a long (--repeat) benchmark would lose the oldest.
    start = end - timedelta(days=days + 1)
    body = {
        "start_update_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end_update_date": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(headers={"Authorization": KEY}, timeout=timeout) as http:
        async with http.post(
            f"{base_url}/api/orders/async-export", data=orjson.dumps(body)
        ) as resp:
            tracking_id = (await resp.json())["tracking_id"]
        while True:
            async with http.get(f"{base_url}/api/orders/async-export/status/{tracking_id}") as resp:
                status = await resp.json()
            if status["status"] == "COMPLETED":
                break
            await asyncio.sleep(0.2)
        for url in status.get("urls", []):
            async with http.get(url) as resp:
                yield await resp.read()
