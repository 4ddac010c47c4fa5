"""aiohttp.web fake of Mirakl's order export, following what is known of the real one.

Rules reproduced: auth header (shop key raw, or Bearer), a date range is
required and pairs go together, a range over one year is refused, the small
delta subtracted from `start_update_date`, `items_per_chunk` and
`megabytes_per_chunk` ranges, PENDING for a few polls, one export at a time,
chunk files `{"orders": [...]}` served on the instance
(`/api/orders/async-export/file/<uuid>?file=<name>`) with the same auth, operator-only
order fields only for Bearer (operator) callers. Control endpoints
under `/_sim/` let tests, benchmarks and the demo move time and change orders
(`POST /_sim/mutate {"update": n, "create": n, "edit": n, "line_share": 0.3}`).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from syncer.simulator.or11 import register_or11
from syncer.simulator.orders import dumps, edit_order, iso, iso_millis, make_order, touch_order

MAX_RANGE = "one year"


@dataclass
class SimulatorConfig:
    api_key: str = "sim-secret-key"
    auth: str = "shop"  # "shop": raw key header; "bearer": "Bearer <key>"
    pending_polls: int = 2  # an export answers PENDING to this many polls...
    pending_seconds: float | None = None  # ...or, when set, completes on its own after this long
    update_delta_seconds: float = 5.0
    max_items_per_chunk: int | None = None  # the server may cut smaller chunks than asked
    busy_status: int = 409  # OR13 while an export runs: 409, or 400 (Mirakl's wrong-state rule)
    # OR13 at most once per this many seconds (Mirakl: differential every 5 min, full every
    # 24 h); a call sooner gets 429 with Retry-After: or13_retry_after_seconds, else the wait
    # left. None: no limit.
    or13_min_interval_seconds: float | None = None
    or13_retry_after_seconds: float | None = None
    or04_min_interval_seconds: float = 60.0  # OR04: at most one call a minute (429 otherwise)
    or11_min_interval_seconds: float | None = 60.0  # OR11 listings: once a minute (429 otherwise)
    or11_link_header: bool = True  # OR11 pages name the next one (Link rel="next"), or not
    or04_max_body_bytes: int | None = None  # OR04: a larger request body is refused with 413
    chunk_piece_delay_seconds: float = 0.0  # OR15: pause between 256 KB pieces (slow downloads)
    chunk_piece_bytes: int = 256 * 1024
    chunk_base_url: str | None = None  # OR14 lists chunk URLs on this origin (a storage host)
    seed: int = 7


@dataclass
class Fault:
    """A scripted misbehaviour: the next `times` calls to `endpoint` answer it instead."""

    endpoint: str  # "OR13", "OR14" or "OR15"
    status: int | None = None  # answer this HTTP status instead of the real answer
    retry_after: float | None = None  # with 429
    retry_after_text: str | None = None  # with 429: this Retry-After as is (an HTTP-date...)
    export_status: str | None = None  # OR14: report this status (FAILED, CANCELED, ...)
    delay_seconds: float = 0.0  # wait before answering (a slow server: read timeouts)
    drop: bool = False  # close the connection without answering (connection reset)
    body: bytes | None = None  # OR15: serve these bytes instead of the chunk
    cut_after_bytes: int | None = None  # OR15: reset the connection after this many bytes
    truncate_after_bytes: int | None = None  # OR15: end the body cleanly after this many bytes
    dribble_seconds: float | None = None  # OR15: send the body one byte per this many seconds
    forget_export: bool = False  # OR14/OR15: the export is gone (expired): 404
    times: int = 1


@dataclass
class SimExport:
    tracking_id: str
    chunks: list[list[bytes]]
    polls: int = 0
    status: str = "PENDING"
    tokens: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    file_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # OR15 URLs' path

    def advance(self, config: SimulatorConfig) -> None:
        """PENDING -> COMPLETED after enough polls, or enough time when pending_seconds is set."""
        if self.status != "PENDING":
            return
        aged = (
            config.pending_seconds is not None
            and time.monotonic() - self.created >= config.pending_seconds
        )
        if self.polls > config.pending_polls or aged:
            self.status = "COMPLETED"
            self.tokens = [secrets.token_hex(8) for _ in self.chunks]


class ExportedOrder(NamedTuple):
    """An order as exports serve it: its JSON, and the dates exports filter on."""

    last_updated_date: str
    updated: datetime
    created: datetime
    body: bytes


class SimulatorState:
    """The simulated Mirakl account: its orders, its clock and its exports."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.rng = random.Random(self.config.seed)
        self.orders: dict[str, dict[str, Any]] = {}
        self.exports: dict[str, SimExport] = {}
        self.calls: Counter[str] = Counter()
        self.clock_offset = timedelta()
        self.faults: list[Fault] = []
        # Extra (e.g. older) order versions appended to every export: the same order
        # twice in one export, an older version after a newer one.
        self.replayed_versions: list[dict[str, Any]] = []
        self.anonymized: set[str] = set()  # orders whose customer was anonymized (AN01)
        # A silent loss: each of these orders is left out of the next export that would hold
        # it (then forgotten), with nothing to tell that export is incomplete.
        self.drop_from_next_export: set[str] = set()
        self.or04_batches: list[
            tuple[float, int]
        ] = []  # (monotonic time, orders) per accepted call
        self._next_number = 1
        # Each order's JSON, kept while its last_updated_date stays the same (every
        # change to an order moves that date, on Mirakl as here; the simulator's own
        # changes also drop the entry). OR13 then costs a list, not one orjson.dumps per
        # order (2 s per 100k orders, which every benchmark contender waited for), and
        # exports share these bytes instead of each holding a copy of its orders.
        self._exported: dict[str, ExportedOrder] = {}
        self._last_or13: datetime | None = None
        # Every OR13 accepted: (time.monotonic(), start_update_date, end_update_date).
        self.or13_log: list[tuple[float, datetime | None, datetime | None]] = []

    def now(self) -> datetime:
        now = datetime.now(UTC) + self.clock_offset
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def advance(self, seconds: float) -> None:
        self.clock_offset += timedelta(seconds=seconds)

    def seed_orders(self, count: int, *, days: float = 730.0) -> list[str]:
        """Create `count` orders spread over the last `days` days."""
        end = self.now()
        ids = []
        for _ in range(count):
            created = end - timedelta(seconds=self.rng.uniform(60, days * 86400))
            ids.append(self._add(created))
        return ids

    def create_orders(self, count: int) -> list[str]:
        """New orders created now."""
        return [self._add(self.now()) for _ in range(count)]

    def update_orders(self, count: int) -> list[str]:
        """Change `count` random existing orders now (state, lines, amounts)."""
        ids = self.rng.sample(sorted(self.orders), min(count, len(self.orders)))
        for order_id in ids:
            touch_order(self.rng, self.orders[order_id], self.now())
            self.changed(order_id)
        return ids

    def edit_orders(self, count: int, *, line_share: float = 0.0) -> list[str]:
        """Make a small change to `count` random existing orders now (see `edit_order`): their
        state; for about `line_share` of them also one line added or removed."""
        ids = self.rng.sample(sorted(self.orders), min(count, len(self.orders)))
        for order_id in ids:
            line_change = self.rng.random() < line_share
            edit_order(self.rng, self.orders[order_id], self.now(), line_change=line_change)
            self.changed(order_id)
        return ids

    def _add(self, created: datetime) -> str:
        operator = self.config.auth == "bearer"  # a seller's key sees the seller's view
        order = make_order(self.rng, self._next_number, created, operator=operator)
        self._next_number += 1
        self.orders[order["order_id"]] = order
        self.exported(order)  # serialised while seeding, not in the first export
        return str(order["order_id"])

    def changed(self, order_id: str) -> None:
        """Forget the exported form of an order that was changed in place."""
        self._exported.pop(order_id, None)

    def exported(self, order: dict[str, Any]) -> ExportedOrder:
        """The order as an export serves it (see `_exported`)."""
        cached = self._exported.get(order["order_id"])
        if cached is not None and cached.last_updated_date == order["last_updated_date"]:
            return cached
        fresh = ExportedOrder(
            order["last_updated_date"],
            datetime.fromisoformat(order["last_updated_date"]),
            datetime.fromisoformat(order["created_date"]),
            dumps(order),
        )
        self._exported[order["order_id"]] = fresh
        return fresh

    def add_documents(self, documents: list[bytes]) -> list[str]:
        """Serve these order documents byte for byte (fixtures); a later one with the same
        order_id replaces the earlier (a newer version)."""
        ids = []
        for body in documents:
            order = orjson.loads(body)
            self.orders[order["order_id"]] = order
            self._exported[order["order_id"]] = ExportedOrder(
                order["last_updated_date"],
                datetime.fromisoformat(order["last_updated_date"]),
                datetime.fromisoformat(order["created_date"]),
                body,
            )
            ids.append(str(order["order_id"]))
        return ids

    def inject(self, endpoint: str, **kwargs: Any) -> Fault:
        """Script a fault (see Fault) for the next calls to `endpoint`."""
        fault = Fault(endpoint, **kwargs)
        self.faults.append(fault)
        return fault

    def take_fault(self, endpoint: str) -> Fault | None:
        for fault in self.faults:
            if fault.endpoint == endpoint and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def running_export(self) -> SimExport | None:
        for export in self.exports.values():
            export.advance(self.config)
            if export.status == "PENDING":
                return export
        return None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status, headers=headers)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object body, or the 400 Mirakl answers instead."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "Request body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "Request body must be a JSON object")
    return body


def _parse_date(text: object, name: str) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a date-time string")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} is not a valid date-time: {text}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone")
    return parsed.astimezone(UTC)


def _longer_than_a_year(start: datetime, end: datetime) -> bool:
    try:
        limit = start.replace(year=start.year + 1)
    except ValueError:  # 29 February
        limit = start.replace(year=start.year + 1, day=28)
    return end > limit


def build_app(state: SimulatorState) -> web.Application:
    """The aiohttp application serving OR13/OR14/OR15 and the `/_sim/` controls."""
    config = state.config

    async def faulty(endpoint: str, request: web.Request) -> web.Response | Fault | None:
        fault = state.take_fault(endpoint)
        if fault is None:
            return None
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.drop:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # aiohttp drops the request: the client sees a reset
        if fault.forget_export and "tracking_id" in request.match_info:
            state.exports.pop(request.match_info["tracking_id"], None)
        if fault.status is None:
            return fault
        headers = (
            {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        )
        if fault.retry_after_text is not None:
            headers = {"Retry-After": fault.retry_after_text}
        return _error(fault.status, f"simulated fault {fault.status}", headers)

    def authorised(request: web.Request) -> bool:
        expected = f"Bearer {config.api_key}" if config.auth == "bearer" else config.api_key
        return secrets.compare_digest(request.headers.get("Authorization", ""), expected)

    async def admit(
        endpoint: str, request: web.Request
    ) -> tuple[web.Response | None, Fault | None]:
        """Count the call, play a scripted fault, check the key: (refusal, fault in play)."""
        state.calls[endpoint] += 1
        fault = await faulty(endpoint, request)
        if isinstance(fault, web.Response):
            return fault, None
        if not authorised(request):
            return _error(401, "Unauthorized"), None
        return None, fault

    async def or13(request: web.Request) -> web.StreamResponse:
        refused, _fault = await admit("OR13", request)
        if refused is not None:
            return refused
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        try:
            created = _range(body, "start_date", "end_date")
            updated = _range(body, "start_update_date", "end_update_date")
            if created is None and updated is None:
                raise ValueError("At least one date range filter is required")
            _fulfillment_center_codes(body)
            items = _bounded(body, "items_per_chunk", 10_000, 1_000_000, 1_000_000)
            megabytes = _bounded(body, "megabytes_per_chunk", 10, 1024, 512)
        except ValueError as exc:
            return _error(400, str(exc))
        if state.running_export() is not None:
            return _error(config.busy_status, "An export is already in progress for this account")
        now = state.now()
        limit = config.or13_min_interval_seconds
        if limit is not None and state._last_or13 is not None:
            wait = limit - (now - state._last_or13).total_seconds()
            if wait > 0:
                asked = config.or13_retry_after_seconds
                retry_after = f"{asked:g}" if asked is not None else str(int(wait) + 1)
                return _error(429, "Too many requests", {"Retry-After": retry_after})
        state._last_or13 = now
        state.or13_log.append((time.monotonic(), *(updated or (None, None))))
        selected = _select(state, created, updated, config.update_delta_seconds)
        selected += [dumps(version) for version in state.replayed_versions]
        cap = min(items, config.max_items_per_chunk or items)
        export = SimExport(str(uuid.uuid4()), _chunk(selected, cap, megabytes * 1024 * 1024))
        state.exports[export.tracking_id] = export
        return web.json_response({"tracking_id": export.tracking_id})

    async def or14(request: web.Request) -> web.StreamResponse:
        refused, fault = await admit("OR14", request)
        if refused is not None:
            return refused
        export = state.exports.get(request.match_info["tracking_id"])
        if export is None:
            return _error(404, "Export not found")
        export.polls += 1
        export.advance(config)
        reported = export.status
        if fault is not None and fault.export_status is not None:
            reported = fault.export_status
            if reported in ("FAILED", "CANCELED"):
                export.status = reported  # terminal: the export is over
        answer: dict[str, Any] = {"status": reported, "last_updated": iso_millis(state.now())}
        if reported == "COMPLETED" and config.chunk_base_url is not None:
            # A storage host (not seen on real Mirakl): the URL itself is the credential.
            answer["urls"] = [
                f"{config.chunk_base_url}/exports/{export.tracking_id}/chunk-{i}.json?token={token}"
                for i, token in enumerate(export.tokens)
            ]
        elif reported == "COMPLETED":
            # As Mirakl: files on the instance itself, behind the same Authorization.
            base = f"{request.scheme}://{request.host}"
            answer["urls"] = [
                f"{base}/api/orders/async-export/file/{export.file_id}?file=chunk-{i}.json"
                for i in range(len(export.chunks))
            ]
        elif reported == "FAILED":
            # OR14 documents no error object; Mirakl's offer export (OF53) sends this one.
            answer["error"] = {"code": "EXPORT_FAILED", "detail": "The export could not be built"}
        return web.json_response(answer)

    async def or15(request: web.Request) -> web.StreamResponse:
        refused, fault = await admit("OR15", request)
        if refused is not None:
            return refused
        file_id = request.match_info["file_id"]
        export = next((e for e in state.exports.values() if e.file_id == file_id), None)
        if export is not None and fault is not None and fault.forget_export:
            state.exports.pop(export.tracking_id, None)
            export = None
        name = request.query.get("file", "")
        names = [f"chunk-{i}.json" for i in range(len(export.chunks))] if export else []
        if export is None or export.status != "COMPLETED" or name not in names:
            return _error(404, "File not found")
        index = names.index(name)
        pieces = _chunk_pieces(export.chunks[index], config.chunk_piece_bytes)
        if fault is not None and fault.body is not None:
            pieces = iter([fault.body])
        if fault is not None and fault.dribble_seconds is not None:
            pieces = _dribble(b"".join(pieces))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        cut = fault.cut_after_bytes if fault is not None else None
        truncate = fault.truncate_after_bytes if fault is not None else None
        limit = cut if cut is not None else truncate
        sent = 0
        for piece in pieces:
            if limit is not None and sent + len(piece) > limit:
                await response.write(piece[: limit - sent])
                if cut is not None:  # a reset in the middle of the body
                    await asyncio.sleep(0.05)
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                break  # a clean end, too early
            await response.write(piece)
            sent += len(piece)
            if fault is not None and fault.dribble_seconds is not None:
                await asyncio.sleep(fault.dribble_seconds)
            elif config.chunk_piece_delay_seconds:
                await asyncio.sleep(config.chunk_piece_delay_seconds)
        await response.write_eof()
        return response

    async def or04(request: web.Request) -> web.StreamResponse:
        refused, _fault = await admit("OR04", request)
        if refused is not None:
            return refused
        limit = config.or04_max_body_bytes
        if limit is not None and len(await request.read()) > limit:
            return _error(413, f"Request body too large: at most {limit} bytes")
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        orders = body.get("orders")
        if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
            return _error(400, "orders must be an array of objects")
        if len(orders) > 100:
            return _error(400, "A maximum of 100 orders can be sent at once")
        now = time.monotonic()
        if state.or04_batches:
            wait = config.or04_min_interval_seconds - (now - state.or04_batches[-1][0])
            if wait > 0:
                return _error(429, "Too many requests", {"Retry-After": f"{wait:.2f}"})
        state.or04_batches.append((now, len(orders)))
        results = [_patch_order(state, patch) for patch in orders]
        return web.json_response({"updated_orders": results})

    async def sim_mutate(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read() or b"{}")
        updated = state.update_orders(int(body.get("update", 0)))
        created = state.create_orders(int(body.get("create", 0)))
        edited = state.edit_orders(
            int(body.get("edit", 0)), line_share=float(body.get("line_share", 0.0))
        )
        return web.json_response({"updated": updated, "created": created, "edited": edited})

    async def sim_advance(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read() or b"{}")
        state.advance(float(body.get("seconds", 0)))
        return web.json_response({"now": iso(state.now())})

    async def sim_stats(request: web.Request) -> web.StreamResponse:
        return web.json_response({"orders": len(state.orders), "calls": dict(state.calls)})

    async def sim_orders(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=dumps({"orders": list(state.orders.values())}),
            content_type="application/json",
        )

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/api/orders/async-export", or13)
    app.router.add_get("/api/orders/async-export/status/{tracking_id}", or14)
    app.router.add_get("/api/orders/async-export/file/{file_id}", or15)
    app.router.add_put("/api/orders", or04)
    app.router.add_post("/_sim/mutate", sim_mutate)
    app.router.add_post("/_sim/advance", sim_advance)
    app.router.add_get("/_sim/stats", sim_stats)
    app.router.add_get("/_sim/orders", sim_orders)
    register_or11(app, state)
    return app


def _patch_order(state: SimulatorState, patch: dict[str, Any]) -> dict[str, Any]:
    """Apply one OR04 order patch as Mirakl would, or say why not."""
    order_id = patch.get("order_id")
    order = state.orders.get(order_id) if isinstance(order_id, str) else None

    def refused(code: str, field_name: str, message: str) -> dict[str, Any]:
        return {
            "order_id": order_id,
            "errors": [{"code": code, "field": field_name, "message": message}],
        }

    if order is None:
        return refused("ORDER_NOT_FOUND", "order_id", f"Order {order_id} not found")
    if "customer" in patch and order_id in state.anonymized:
        return refused(
            "CUSTOMER_ANONYMIZED",
            "customer",
            "Customer data of an anonymized customer cannot be changed",
        )
    stats = patch.get("shop_statistics")
    if isinstance(stats, dict):
        if stats.get("excluded") is None:
            return refused("REQUIRED", "shop_statistics.excluded", "excluded is required")
        if len(str(stats.get("reason") or "")) > 100:
            return refused("TOO_LONG", "shop_statistics.reason", "Max length: 100 characters")
    workflow = patch.get("payment_workflow")
    if workflow is not None and not (
        workflow == "PAY_ON_ACCEPTANCE" and order.get("payment_workflow") == "PAY_ON_DUE_DATE"
    ):
        return refused(
            "INVALID_CHANGE",
            "payment_workflow",
            "Can only be updated from PAY_ON_DUE_DATE to PAY_ON_ACCEPTANCE",
        )
    for key, value in (patch.get("references") or {}).items():
        if value is None or not str(value).strip():
            return refused("BLANK", f"references.{key}", "May not be blank")
    address = (patch.get("customer") or {}).get("billing_address") or {}
    code = address.get("country_iso_code")
    if code is not None and not (isinstance(code, str) and len(code) == 3 and code.isupper()):
        return refused(
            "INVALID_VALUE",
            "customer.billing_address.country_iso_code",
            "Not an ISO 3166-1 alpha-3 code",
        )
    changes = {k: v for k, v in patch.items() if k != "order_id"}
    _deep_apply(order, changes)
    order["last_updated_date"] = iso(state.now())
    state.changed(order["order_id"])
    return {"order_id": order_id, "updated": changes}


def _deep_apply(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_apply(target[key], value)
        else:
            target[key] = value


def _range(body: dict[str, Any], start_key: str, end_key: str) -> tuple[datetime, datetime] | None:
    start, end = body.get(start_key), body.get(end_key)
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise ValueError(f"{start_key} and {end_key} must be given together")
    first, last = _parse_date(start, start_key), _parse_date(end, end_key)
    if last < first:
        raise ValueError(f"{end_key} is before {start_key}")
    if _longer_than_a_year(first, last):
        raise ValueError(f"The range {start_key}..{end_key} must not exceed {MAX_RANGE}")
    return first, last


def _fulfillment_center_codes(body: dict[str, Any]) -> None:
    """OR13 takes `fulfillment_center_codes` as one string of at most 100 characters."""
    value = body.get("fulfillment_center_codes")
    if value is not None and not (isinstance(value, str) and len(value) <= 100):
        raise ValueError("fulfillment_center_codes must be a string of at most 100 characters")


def _bounded(body: dict[str, Any], key: str, low: int, high: int, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer between {low} and {high}")
    return value


def _select(
    state: SimulatorState,
    created: tuple[datetime, datetime] | None,
    updated: tuple[datetime, datetime] | None,
    delta_seconds: float,
) -> list[bytes]:
    chosen = []
    dropped = set()
    for order in state.orders.values():
        exported = state.exported(order)
        if created is not None and not created[0] <= exported.created <= created[1]:
            continue
        if updated is not None and not (
            updated[0] - timedelta(seconds=delta_seconds) <= exported.updated <= updated[1]
        ):
            continue
        if order["order_id"] in state.drop_from_next_export:
            dropped.add(order["order_id"])
            continue
        chosen.append(exported.body)
    state.drop_from_next_export -= dropped  # left out of this export only
    return chosen


def _chunk_pieces(orders: list[bytes], piece_bytes: int) -> Iterator[bytes]:
    """The chunk file `{"orders":[...]}` as pieces of about `piece_bytes`."""
    buffer = [b'{"orders":[']
    size = 0
    for position, order in enumerate(orders):
        buffer.append(b"," + order if position else order)
        size += len(order)
        if size >= piece_bytes:
            yield b"".join(buffer)
            buffer, size = [], 0
    buffer.append(b"]}")
    yield b"".join(buffer)


def _dribble(body: bytes) -> Iterator[bytes]:
    """The body one byte at a time (a server that never stalls long enough to time out)."""
    for position in range(len(body)):
        yield body[position : position + 1]


def _chunk(orders: list[bytes], items: int, max_bytes: int) -> list[list[bytes]]:
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for order in orders:
        if current and (len(current) >= items or size + len(order) > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(order)
        size += len(order) + 1
    if current:
        chunks.append(current)
    return chunks


@asynccontextmanager
async def serve(
    state: SimulatorState, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve the simulator on loopback; yield its base URL."""
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


async def serve_forever(state: SimulatorState, host: str, port: int) -> None:
    """Run until cancelled (the `syncer simulator` command)."""
    async with serve(state, host, port) as url:
        print(f"simulator listening on {url} ({len(state.orders)} orders)", flush=True)
        await asyncio.Event().wait()
