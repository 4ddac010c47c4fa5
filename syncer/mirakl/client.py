"""aiohttp client for Mirakl's asynchronous order export (OR13, OR14, OR15).

Only this module catches aiohttp errors; it raises `syncer.errors` instead.
Retries: 429 honours Retry-After everywhere; 5xx and network errors are
retried with backoff on OR14 and OR15 (idempotent reads) but on OR13 only when
the request never reached Mirakl, since a retried OR13 could start a second
export. The API key never appears in a log line or an error message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from syncer.config import HttpConfig, SourceConfig
from syncer.dates import format_instant
from syncer.errors import (
    AuthRefused,
    ChunkGone,
    ExportBusy,
    ExportNotFound,
    MiraklError,
    MiraklUnavailable,
    StreamBroken,
)
from syncer.log import get_logger
from syncer.mirakl.retry import Backoff
from syncer.redact import redact_url

EXPORT_PATH = "/api/orders/async-export"
ORDERS_PATH = "/api/orders"
READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class ExportStatus:
    status: str
    urls: tuple[str, ...]
    last_updated: str | None


class MiraklClient:
    """One source's view of the export API."""

    def __init__(self, session: aiohttp.ClientSession, source: SourceConfig, http: HttpConfig):
        self._session = session
        self._source = source
        self._http = http
        key = source.require_api_key().reveal()
        self._headers = {
            "Authorization": f"Bearer {key}" if source.auth == "bearer" else key,
            "Accept": "application/json",
        }
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._params = {"shop_id": str(source.shop_id)} if source.shop_id is not None else {}
        self._backoff = Backoff(
            http.backoff_base_seconds, http.backoff_max_seconds, http.retry_after_max_seconds
        )
        self._log = get_logger(source=source.name)

    async def start_export(
        self,
        start_update: datetime,
        end_update: datetime,
        *,
        items_per_chunk: int | None = None,
        megabytes_per_chunk: int | None = None,
    ) -> str:
        """OR13: ask for an export of orders updated in [start, end]; return the tracking id."""
        body: dict[str, Any] = {
            "start_update_date": format_instant(start_update),
            "end_update_date": format_instant(end_update),
        }
        if items_per_chunk is not None:
            body["items_per_chunk"] = items_per_chunk
        if megabytes_per_chunk is not None:
            body["megabytes_per_chunk"] = megabytes_per_chunk
        url = self._source.base_url + EXPORT_PATH

        async def call() -> Any:
            async with self._session.post(
                url, params=self._params, headers=self._json_headers, data=orjson.dumps(body)
            ) as resp:
                if resp.status == 409:
                    raise ExportBusy(
                        f"OR13 refused: an export is already in progress ({_message(await resp.read())})",
                        status=409,
                    )
                return await self._json_or_raise(resp, "OR13")

        answer = await self._with_retries("OR13", call, idempotent=False)
        tracking_id = answer.get("tracking_id") if isinstance(answer, dict) else None
        if not isinstance(tracking_id, str) or not tracking_id:
            raise MiraklError("OR13 answered without a tracking_id")
        return tracking_id

    async def export_status(self, tracking_id: str) -> ExportStatus:
        """OR14: the export's status and, once COMPLETED, its chunk URLs."""
        url = f"{self._source.base_url}{EXPORT_PATH}/status/{tracking_id}"

        async def call() -> Any:
            async with self._session.get(url, params=self._params, headers=self._headers) as resp:
                if resp.status == 404:
                    raise ExportNotFound(f"OR14: tracking id {tracking_id} is unknown", status=404)
                return await self._json_or_raise(resp, "OR14")

        answer = await self._with_retries("OR14", call, idempotent=True)
        if not isinstance(answer, dict) or not isinstance(answer.get("status"), str):
            raise MiraklError("OR14 answered without a status")
        urls = answer.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise MiraklError("OR14 answered with malformed urls")
        last = answer.get("last_updated")
        return ExportStatus(answer["status"], tuple(urls), last if isinstance(last, str) else None)

    async def patch_orders(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OR04: patch up to 100 orders; one result per order (`updated` or `errors`).

        PUT with the same patch is idempotent, so transient failures are retried.
        """
        url = self._source.base_url + ORDERS_PATH
        body = orjson.dumps({"orders": orders})

        async def call() -> Any:
            async with self._session.put(
                url, params=self._params, headers=self._json_headers, data=body
            ) as resp:
                return await self._json_or_raise(resp, "OR04")

        answer = await self._with_retries("OR04", call, idempotent=True)
        results = answer.get("updated_orders") if isinstance(answer, dict) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise MiraklError("OR04 answered without an updated_orders list")
        return results

    @asynccontextmanager
    async def open_chunk(self, url: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """OR15: open a chunk URL (retrying until the body starts) and yield its byte stream.

        A failure after the body started raises StreamBroken: the caller
        discards what it read and opens the chunk again.
        """
        shown = redact_url(url)
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._http.timeout_seconds,
            sock_read=self._http.timeout_seconds,
        )

        async def call() -> aiohttp.ClientResponse:
            resp = await self._session.get(
                url, params=self._params, headers=self._headers, timeout=timeout
            )
            if resp.status in (404, 410):
                resp.release()
                raise ChunkGone(
                    f"OR15 {shown} answered {resp.status}: the export expired", status=resp.status
                )
            if resp.status != 200:
                try:
                    await self._json_or_raise(resp, f"OR15 {shown}")
                finally:
                    resp.release()
            return resp

        resp = await self._with_retries(f"OR15 {shown}", call, idempotent=True)
        try:
            yield _body_bytes(resp, shown)
        finally:
            resp.release()

    async def _json_or_raise(self, resp: aiohttp.ClientResponse, what: str) -> Any:
        if resp.status in (401, 403):
            raise AuthRefused(
                f"{what}: Mirakl refused the API key of source {self._source.name} ({resp.status})",
                status=resp.status,
            )
        if resp.status == 429 or resp.status >= 500:
            raise _Transient(resp.status, resp.headers.get("Retry-After"))
        body = await resp.read()
        if resp.status != 200:
            raise MiraklError(
                f"{what} answered {resp.status}: {_message(body)}", status=resp.status
            )
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MiraklError(f"{what} answered 200 with a body that is not JSON") from None

    async def _with_retries(
        self, what: str, call: Callable[[], Awaitable[Any]], *, idempotent: bool
    ) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except _Transient as exc:
                if exc.status != 429 and not idempotent:
                    raise MiraklUnavailable(
                        f"{what} answered {exc.status}; not retried (it may have started an export)",
                        status=exc.status,
                    ) from None
                reason, retry_after, status = f"HTTP {exc.status}", exc.retry_after, exc.status
            except aiohttp.ClientConnectorError as exc:
                reason, retry_after, status = f"cannot connect: {exc.os_error}", None, None
            except (TimeoutError, aiohttp.ClientError) as exc:
                if not idempotent:
                    raise MiraklUnavailable(f"{what} failed: {_describe(exc)}") from None
                reason, retry_after, status = _describe(exc), None, None
            if attempt >= self._http.max_attempts:
                raise MiraklUnavailable(
                    f"{what} still failing after {attempt} attempts: {reason}", status=status
                )
            delay = self._backoff.delay_seconds(attempt, retry_after)
            self._log.warning(
                "mirakl_retry", call=what, reason=reason, attempt=attempt, delay_s=round(delay, 2)
            )
            await asyncio.sleep(delay)


class _Transient(Exception):
    def __init__(self, status: int, retry_after: str | None) -> None:
        self.status = status
        self.retry_after = retry_after


async def _body_bytes(resp: aiohttp.ClientResponse, shown: str) -> AsyncIterator[bytes]:
    try:
        async for block in resp.content.iter_chunked(READ_SIZE):
            yield block
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise StreamBroken(f"OR15 {shown}: download broke: {_describe(exc)}") from None


def _message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body[:200].decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@asynccontextmanager
async def open_client(source: SourceConfig, http: HttpConfig) -> AsyncIterator[MiraklClient]:
    """A client with its own session, closed on exit."""
    timeout = aiohttp.ClientTimeout(total=http.timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        yield MiraklClient(session, source, http)
