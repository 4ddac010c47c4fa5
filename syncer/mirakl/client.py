"""aiohttp client for Mirakl's asynchronous order export (OR13, OR14, OR15).

Only this module catches aiohttp errors; it raises `syncer.errors` instead.
Retries: 429 honours Retry-After everywhere; 5xx and network errors are
retried with backoff on OR14 and OR15 (idempotent reads) but on OR13 only when
the request never reached Mirakl, since a retried OR13 could start a second
export. The API key never appears in a log line or an error message, and is
sent only to the origin (scheme, host, port) of the source's base_url:
redirects are followed here, hop by hop, so that a chunk URL or a redirect to
another host gets no credentials, and an https source never falls back to
plain http.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from yarl import URL

from syncer.config import HttpConfig, SourceConfig
from syncer.dates import format_instant
from syncer.errors import (
    AuthRefused,
    ChunkGone,
    ExportBusy,
    ExportNotFound,
    MiraklError,
    MiraklUnavailable,
    RateLimited,
    StreamBroken,
)
from syncer.log import get_logger
from syncer.mirakl.retry import Backoff, parse_retry_after
from syncer.redact import redact_url

EXPORT_PATH = "/api/orders/async-export"
ORDERS_PATH = "/api/orders"
READ_SIZE = 256 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
DEFAULT_PORTS = {"http": 80, "https": 443}
ANONYMOUS_HEADERS = {"Accept": "application/json"}
# OR13 while another export runs: nothing public says which status Mirakl answers; its
# general rule is 400 for a request in the wrong state, so a 400 whose message says an
# export is already there is treated as 409 (busy), any other 400 is an error.
_BUSY_MESSAGE = re.compile(
    r"\bexports?\b.{0,80}\b(already|in progress|running|pending|ongoing|exists?)\b"
    r"|\balready\b.{0,80}\bexports?\b"
    r"|\bonly one export",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class OrdersPage:
    """One OR11 page: the answer's bytes (`{"orders": [...], "total_count": n}`, orders as
    received), the total Mirakl counts for the query, and the next page's URL if it gave one."""

    body: bytes
    total_count: int
    next_url: str | None


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
        self._origin = url_origin(source.base_url)
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
            async with await self._send("POST", url, "OR13", body=orjson.dumps(body)) as resp:
                if resp.status in (400, 409):
                    message = _message(await resp.read())
                    if resp.status == 409 or _BUSY_MESSAGE.search(message):
                        raise ExportBusy(
                            f"OR13 refused: an export is already in progress ({message})",
                            status=resp.status,
                        )
                    raise MiraklError(f"OR13 answered 400: {message}", status=400)
                if resp.status == 429:
                    self._refuse_long_retry_after(resp.headers.get("Retry-After"))
                return await self._json_or_raise(resp, "OR13")

        answer = await self._with_retries("OR13", call, idempotent=False)
        tracking_id = answer.get("tracking_id") if isinstance(answer, dict) else None
        if not isinstance(tracking_id, str) or not tracking_id:
            raise MiraklError("OR13 answered without a tracking_id")
        return tracking_id

    def _refuse_long_retry_after(self, retry_after: str | None) -> None:
        """OR13 429 asking for a longer wait than http.retry_after_max_seconds: RateLimited
        (the run records when to call again) instead of sleeping that long, or giving up."""
        seconds = None if retry_after is None else parse_retry_after(retry_after, math.inf)
        if seconds is not None and seconds > self._http.retry_after_max_seconds:
            raise RateLimited(
                f"OR13 answered 429: Mirakl asks to wait {seconds:.0f} s (Retry-After), more "
                f"than http.retry_after_max_seconds ({self._http.retry_after_max_seconds:g} s)",
                retry_after_seconds=seconds,
            )

    async def export_status(self, tracking_id: str) -> ExportStatus:
        """OR14: the export's status and, once COMPLETED, its chunk URLs."""
        url = f"{self._source.base_url}{EXPORT_PATH}/status/{tracking_id}"

        async def call() -> Any:
            async with await self._send("GET", url, "OR14") as resp:
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

    async def list_orders(
        self,
        *,
        states: tuple[str, ...] = (),
        start_update: datetime | None = None,
        max_per_page: int = 100,
        offset: int = 0,
        next_url: str | None = None,
        end_update: datetime | None = None,
    ) -> OrdersPage:
        """OR11: one page of orders in `states` updated since `start_update` (and up to
        `end_update`, when given), oldest created
        first; or the page at `next_url` (a previous page's `Link rel="next"`).

        A 429 raises RateLimited at once (the caller waits for its next pass: Mirakl allows
        OR11 once a minute); 5xx and network errors are retried (a read)."""
        if next_url is None:
            query = {"max": str(max_per_page), "offset": str(offset), "sort": "dateCreated"}
            query["order"] = "asc"
            if states:
                query["order_state_codes"] = ",".join(states)
            if start_update is not None:
                query["start_update_date"] = format_instant(start_update)
            if end_update is not None:
                query["end_update_date"] = format_instant(end_update)
            url = str(URL(self._source.base_url + ORDERS_PATH).update_query(query))
            source_params = True
        else:
            url = next_url
            source_params = "shop_id" not in URL(url).query

        async def call() -> Any:
            async with await self._send("GET", url, "OR11", source_params=source_params) as resp:
                if resp.status == 429:
                    retry_after = resp.headers.get("Retry-After")
                    seconds = None if retry_after is None else parse_retry_after(retry_after, 1e9)
                    raise RateLimited(
                        "OR11 answered 429 (Mirakl allows it once a minute)",
                        retry_after_seconds=seconds or 0.0,
                    )
                if resp.status != 200:
                    await self._json_or_raise(resp, "OR11")  # raises
                body = await resp.read()
                link = resp.links.get("next")
                following = str(resp.url.join(URL(str(link["url"])))) if link else None
                return body, following

        body, following = await self._with_retries("OR11", call, idempotent=True)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MiraklError("OR11 answered 200 with a body that is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("orders"), list):
            raise MiraklError("OR11 answered without an orders list")
        total = answer.get("total_count")
        if isinstance(total, bool) or not isinstance(total, int):
            raise MiraklError("OR11 answered without a total_count")
        return OrdersPage(body, total, following)

    async def count_orders(self, start_update: datetime, end_update: datetime) -> int:
        """OR11's `total_count` of the orders updated in [start, end] (one page of one order:
        the count audit). A 429 raises RateLimited, like any OR11 listing."""
        page = await self.list_orders(
            start_update=start_update, end_update=end_update, max_per_page=1
        )
        return page.total_count

    async def patch_orders(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OR04: patch up to 100 orders; one result per order (`updated` or `errors`).

        PUT with the same patch is idempotent, so transient failures are retried.
        """
        url = self._source.base_url + ORDERS_PATH
        body = orjson.dumps({"orders": orders})

        async def call() -> Any:
            async with await self._send("PUT", url, "OR04", body=body) as resp:
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
        discards what it read and opens the chunk again. Each attempt, body
        included, ends by http.chunk_timeout_seconds; sock_read catches a stall.
        A chunk URL on another origin than base_url is fetched without the key.
        """
        shown = redact_url(url)
        what = f"OR15 {shown}"
        limit_seconds = self._http.chunk_timeout_seconds
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._http.timeout_seconds,
            sock_read=self._http.timeout_seconds,
        )
        loop = asyncio.get_running_loop()

        async def call() -> tuple[aiohttp.ClientResponse, float]:
            deadline = loop.time() + limit_seconds
            window = asyncio.timeout_at(deadline)
            try:
                async with window:
                    resp = await self._send("GET", url, what, client_timeout=timeout)
            except TimeoutError:
                if window.expired():
                    raise _ChunkDeadline(limit_seconds) from None
                raise
            if resp.status in (404, 410):
                resp.release()
                raise ChunkGone(
                    f"{what} answered {resp.status}: the export expired", status=resp.status
                )
            if resp.status in (401, 403) and url_origin(str(resp.url)) != self._origin:
                resp.release()
                raise MiraklError(
                    f"{what} answered {resp.status}: its host {redact_url(str(resp.url))} is not "
                    f"the origin of sources.{self._source.name}.base_url, so it was asked without "
                    "the API key",
                    status=resp.status,
                )
            if resp.status != 200:
                try:
                    await self._json_or_raise(resp, what)
                finally:
                    resp.release()
            return resp, deadline

        resp, deadline = await self._with_retries(what, call, idempotent=True)
        try:
            yield _body_bytes(resp, shown, deadline, limit_seconds)
        finally:
            resp.release()

    async def _send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        body: bytes | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
        source_params: bool = True,
    ) -> aiohttp.ClientResponse:
        """One request, redirects followed here: the key and shop_id go only to the origin
        of base_url, and an https source never goes on over plain http."""
        params: dict[str, str] | None = self._params if source_params else None
        secure = self._origin is not None and self._origin[0] == "https"
        for _hop in range(MAX_REDIRECTS + 1):
            secure = self._check_scheme(url, what, secure)
            trusted = self._origin is not None and url_origin(url) == self._origin
            headers = self._headers if trusted else ANONYMOUS_HEADERS
            if body is not None:
                headers = {**headers, "Content-Type": "application/json"}
            extra: dict[str, Any] = {} if client_timeout is None else {"timeout": client_timeout}
            resp = await self._session.request(
                method,
                url,
                params=params if trusted else None,
                headers=headers,
                data=body,
                allow_redirects=False,
                **extra,
            )
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or location is None:
                return resp
            resp.release()
            try:
                url = str(resp.url.join(URL(location)))
            except ValueError:
                raise MiraklError(f"{what}: redirected to an unreadable Location") from None
            params = None  # the Location is the whole target, as aiohttp itself does
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
        raise MiraklError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _check_scheme(self, url: str, what: str, secure: bool) -> bool:
        """Refuse a URL (chunk or redirect target) that is not http(s), or plain http once
        https was used (an https base_url, or an https hop before it): that would send
        the request and the orders unencrypted. Return whether https is now required."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise MiraklError(f"{what}: refused {redact_url(url)}: not an http(s) URL")
        if scheme == "http" and secure:
            raise MiraklError(
                f"{what}: refused {redact_url(url)}: plain http after https "
                f"(sources.{self._source.name}.base_url or a redirect), never downgraded"
            )
        return scheme == "https"

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


class _ChunkDeadline(TimeoutError):
    def __init__(self, limit_seconds: float) -> None:
        super().__init__(f"not finished within http.chunk_timeout_seconds ({limit_seconds:g} s)")


class _Transient(Exception):
    def __init__(self, status: int, retry_after: str | None) -> None:
        self.status = status
        self.retry_after = retry_after


async def _body_bytes(
    resp: aiohttp.ClientResponse, shown: str, deadline: float, limit_seconds: float
) -> AsyncIterator[bytes]:
    """The body in blocks; every read ends by the attempt's deadline (a dribbling server)."""
    while True:
        window = asyncio.timeout_at(deadline)
        try:
            async with window:
                block = await resp.content.read(READ_SIZE)
        except (TimeoutError, aiohttp.ClientError) as exc:
            reason = str(_ChunkDeadline(limit_seconds)) if window.expired() else _describe(exc)
            raise StreamBroken(f"OR15 {shown}: download broke: {reason}") from None
        if not block:
            return
        yield block


def url_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, lowercased, default ports filled in; None if unusable."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return scheme, parts.hostname.rstrip("."), port or DEFAULT_PORTS[scheme]


def _message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body[:200].decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _ChunkDeadline):
        return str(exc)
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@asynccontextmanager
async def open_client(source: SourceConfig, http: HttpConfig) -> AsyncIterator[MiraklClient]:
    """A client with its own session, closed on exit."""
    timeout = aiohttp.ClientTimeout(total=http.timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        yield MiraklClient(session, source, http)
