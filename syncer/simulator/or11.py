"""OR11 (`GET /api/orders`) on the simulator: offset pagination, `total_count`, a
`Link: <...>; rel="next"` header, filters on states, `start_update_date` and `end_update_date`.

Mirakl allows OR11 once a minute per account: a listing's first page (offset 0) sooner
than `or11_min_interval_seconds` after the previous one gets 429 with Retry-After; the
following pages of a listing are not counted (an assumption: nothing public says how
Mirakl counts them). Orders are served as exports serve them (the seller's or the
operator's view, by the account's auth).
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from syncer.simulator.app import SimulatorState

MAX_PAGE = 100
DEFAULT_PAGE = 10


def register_or11(app: web.Application, state: SimulatorState) -> None:
    """Serve OR11 for `state` on `app`."""
    last_listing: list[float] = []  # time.monotonic() of the last first page served

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(
            {"status": status, "message": message}, status=status, headers=headers
        )

    async def or11(request: web.Request) -> web.StreamResponse:
        state.calls["OR11"] += 1
        fault = state.take_fault("OR11")
        if fault is not None and fault.status is not None:
            headers = (
                None if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            )
            return error(fault.status, f"simulated fault {fault.status}", headers)
        config = state.config
        expected = f"Bearer {config.api_key}" if config.auth == "bearer" else config.api_key
        if not secrets.compare_digest(request.headers.get("Authorization", ""), expected):
            return error(401, "Unauthorized")
        query = request.query
        try:
            page = _int(query.get("max"), "max", 1, MAX_PAGE, DEFAULT_PAGE)
            offset = _int(query.get("offset"), "offset", 0, 2**31 - 1, 0)
            start = query.get("start_update_date")
            since = None if start is None else _date(start)
            end = query.get("end_update_date")
            until = None if end is None else _date(end, "end_update_date")
        except ValueError as exc:
            return error(400, str(exc))
        if query.get("paginate") == "false":
            page, offset = 2**31 - 1, 0
        states = {s for s in query.get("order_state_codes", "").split(",") if s}
        if offset == 0:
            limit = config.or11_min_interval_seconds
            now = time.monotonic()
            if limit is not None and last_listing and now - last_listing[0] < limit:
                wait = limit - (now - last_listing[0])
                return error(429, "Too many requests", {"Retry-After": f"{wait:.3g}"})
            last_listing[:] = [now]
        chosen = []
        for order in state.orders.values():
            if states and order.get("order_state") not in states:
                continue
            exported = state.exported(order)
            if since is not None and exported.updated < since - timedelta(
                seconds=config.update_delta_seconds
            ):
                continue
            if until is not None and exported.updated > until:
                continue
            chosen.append(exported)
        chosen.sort(key=lambda e: e.created)  # stable: ties stay in creation order
        if query.get("order") == "desc":
            chosen.reverse()
        selected = chosen[offset : offset + page]
        body = b'{"orders":[' + b",".join(e.body for e in selected)
        body += b'],"total_count":%d}' % len(chosen)
        headers = {}
        if offset + page < len(chosen) and config.or11_link_header:
            following = request.url.update_query(offset=str(offset + page))
            headers["Link"] = f'<{following}>; rel="next"'
        return web.Response(body=body, content_type="application/json", headers=headers)

    app.router.add_get("/api/orders", or11)


def _int(text: str | None, name: str, low: int, high: int, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{name} must be an integer between {low} and {high}")
    return int(text)


def _date(text: str, name: str = "start_update_date") -> Any:
    from syncer.simulator.app import _parse_date

    return _parse_date(text, name)
