"""Stream a chunk file `{"orders": [...]}` into one order at a time, memory bounded.

The scanner walks the bytes once, finds each order object's extent (strings
and nesting respected), and hands its exact bytes to orjson. Those bytes are
also what lands in `raw`, so numbers keep the exact digits Mirakl sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from syncer.dates import parse_instant

# Runs of non-brace, non-quote bytes and whole strings; stops at { } or a cut-off string.
# Atomic groups (?>...), not possessive quantifiers: those match wrongly before CPython
# 3.11.5 (gh-106052; Debian 12's python3 is 3.11.2) and let a cut-off string pass as whole.
_SKIP = re.compile(rb'(?>(?:[^{}"]+|"(?>(?:[^"\\]+|\\.)*)")*)', re.DOTALL)
_SKIP_ARRAY = re.compile(rb'(?>(?:[^\[\]"]+|"(?>(?:[^"\\]+|\\.)*)")*)', re.DOTALL)
_WS = re.compile(rb"[ \t\r\n]*")
_STRING = re.compile(rb'"(?>(?:[^"\\]+|\\.)*)"', re.DOTALL)
_SCALAR = re.compile(rb"[^,}\s]+")
_FIRST_KEY = re.compile(rb'\{[ \t\r\n]*("[A-Za-z0-9_@.-]+")[ \t\r\n]*:')

ORDER_MONEY = ("price", "shipping_price", "total_price", "total_commission")
ORDER_DATES = (
    "created_date",
    "acceptance_decision_date",
    "customer_debited_date",
    "shipping_deadline",
)
LINE_MONEY = (
    "price_unit",
    "price",
    "shipping_price",
    "total_price",
    "commission_fee",
    "total_commission",
)
LINE_DATES = ("created_date", "last_updated_date", "shipped_date", "received_date")
# Typed as boolean / integer columns by PostgreSQL: checked here so that a bad value is
# refused with the order's name, not by the COPY or the merge with a row number.
ORDER_FLAGS = ("has_incident", "fully_refunded")
LINE_INTEGERS = ("quantity", "order_line_index")


class ChunkFormatError(ValueError):
    """The chunk's bytes are not `{"orders": [...]}`; `position` is the order index if known."""

    def __init__(
        self, reason: str, position: int | None = None, *, truncated: bool = False
    ) -> None:
        super().__init__(reason)
        self.position = position
        self.truncated = truncated


@dataclass(frozen=True)
class ParsedOrder:
    order_id: str
    last_updated_date: datetime
    raw: bytes  # exactly as received (valid UTF-8: orjson parsed it)


class OrderSplitter:
    """Feed bytes in any pieces; get back each complete order object's bytes."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._state = "start"  # start, key, colon, value, orders, after_order, skip, done
        self._depth = 0
        self._obj_start = 0
        self._scan = 0
        self.orders_seen = 0
        self._saw_orders = False
        self._key = b""
        self._skip, self._open, self._close = _SKIP, 0x7B, 0x7D
        # Fast path: the separator between two orders, learnt from the first order's first key.
        self._separator: re.Pattern[bytes] | None = None
        self._fast = True
        # Orders the fast path already parsed, aligned with what feed() returned (None: not parsed).
        self.parsed: list[Any] = []

    def feed(self, data: bytes) -> list[bytes]:
        if self._pos:
            keep = (
                min(self._pos, self._obj_start) if self._state in ("object", "skip") else self._pos
            )
            self._buf = self._buf[keep:]
            self._obj_start -= keep
            self._scan -= keep
            self._pos -= keep
        self._buf += data
        out: list[bytes] = []
        self.parsed = []
        self._run(out)
        return out

    def close(self) -> None:
        """Raise ChunkFormatError unless the document ended exactly after `]}`."""
        if self._state != "done":
            raise ChunkFormatError(
                "the file ended early (truncated)" if self._buf.strip() else "the file is empty",
                self.orders_seen if self._saw_orders else None,
                truncated=True,
            )
        if not self._saw_orders:
            raise ChunkFormatError('no "orders" array in the file')

    def _ws(self) -> bool:
        """Skip whitespace; True when a byte is available."""
        match = _WS.match(self._buf, self._pos)
        assert match is not None
        self._pos = match.end()
        return self._pos < len(self._buf)

    def _run(self, out: list[bytes]) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == "object" and self._scan == self._obj_start and self._fast_order(out):
                continue
            if state in ("object", "skip"):
                if not self._scan_object():
                    return
                if state == "object":
                    out.append(buf[self._obj_start : self._pos])
                    self.parsed.append(None)
                    self.orders_seen += 1
                    self._state = "after_order"
                else:
                    self._state = "after_value"
                continue
            if state == "done":
                if self._ws():
                    raise ChunkFormatError("unexpected data after the end of the document")
                return
            if not self._ws():
                return
            byte = buf[self._pos : self._pos + 1]
            if state == "start":
                if byte != b"{":
                    raise ChunkFormatError('the file is not a JSON object {"orders": [...]}')
                self._pos += 1
                self._state = "key"
            elif state == "key":
                if byte == b"}":
                    self._pos += 1
                    self._state = "done"
                    continue
                match = _STRING.match(buf, self._pos)
                if match is None:
                    if byte != b'"':
                        raise ChunkFormatError("malformed JSON: expected a key")
                    return  # key cut by the read boundary
                self._key = match.group()[1:-1]
                self._pos = match.end()
                self._state = "colon"
            elif state == "colon":
                if byte != b":":
                    raise ChunkFormatError("malformed JSON: expected ':'")
                self._pos += 1
                self._state = "value"
            elif state == "value":
                if self._key == b"orders":
                    if byte != b"[":
                        raise ChunkFormatError('"orders" is not an array')
                    self._saw_orders = True
                    self._pos += 1
                    self._state = "orders"
                elif byte in (b"{", b"["):
                    self._begin_object("skip")
                else:
                    end = self._scalar_end()
                    if end is None:
                        return
                    self._pos = end
                    self._state = "after_value"
            elif state == "after_value":
                if byte == b",":
                    self._pos += 1
                    self._state = "key"
                elif byte == b"}":
                    self._pos += 1
                    self._state = "done"
                else:
                    raise ChunkFormatError("malformed JSON: expected ',' or '}'")
            elif state in ("orders", "after_order"):
                if byte == b"]":
                    self._pos += 1
                    self._state = "after_value"
                elif state == "after_order" and byte == b",":
                    self._pos += 1
                    self._state = "next_order"
                elif state == "orders" and byte == b"{":
                    self._begin_object("object")
                else:
                    raise ChunkFormatError(
                        "an element of orders is not an object", self.orders_seen
                    )
            elif state == "next_order":
                if byte != b"{":
                    raise ChunkFormatError(
                        "an element of orders is not an object", self.orders_seen
                    )
                self._begin_object("object")

    def _fast_order(self, out: list[bytes]) -> bool:
        """Find orders' ends at C speed: the next `},{"<first key>":` and an orjson parse,
        order after order while the separator is found. False when none was taken.

        That separator cannot occur inside a JSON string (its quote would be escaped), so a
        candidate is wrong only when it ends a nested object, or when an order starting with
        another key was skipped over; either way the slice is not one JSON object, orjson
        refuses it, and the exact scan takes over for this order.
        """
        if not self._fast:
            return False
        buf, start = self._buf, self._obj_start
        separator = self._separator
        if separator is None:
            first = _FIRST_KEY.match(buf, start)
            if first is None:
                if len(buf) - start > 4096:
                    self._fast = False  # no simple first key: scan exactly
                return False
            separator = self._separator = re.compile(
                rb"\}[ \t\r\n]*,[ \t\r\n]*(\{)[ \t\r\n]*"
                + re.escape(first.group(1))
                + rb"[ \t\r\n]*:"
            )
        search, loads, parsed = separator.search, orjson.loads, self.parsed
        taken = 0
        while (found := search(buf, start)) is not None:
            data = buf[start : found.start() + 1]
            try:
                order = loads(data)
            except orjson.JSONDecodeError:
                break
            if not isinstance(order, dict):
                break
            out.append(data)
            parsed.append(order)
            taken += 1
            start = found.start(1)
        if not taken:
            return False
        # The cursor stands on the next order's `{`, as after `_begin_object("object")`.
        self.orders_seen += taken
        self._pos = self._obj_start = self._scan = start
        self._depth = 0
        self._skip, self._open, self._close = _SKIP, 0x7B, 0x7D
        return True

    def _begin_object(self, state: str) -> None:
        """Scan an object (or, when skipping, an object or array) starting at the cursor."""
        is_array = self._buf[self._pos] == 0x5B
        self._skip, self._open, self._close = (
            (_SKIP_ARRAY, 0x5B, 0x5D) if is_array else (_SKIP, 0x7B, 0x7D)
        )
        self._obj_start = self._pos
        self._scan = self._pos
        self._depth = 0
        self._state = state

    def _scan_object(self) -> bool:
        """Advance to the end of the current object; False if more bytes are needed."""
        buf, end = self._buf, len(self._buf)
        pos, depth = self._scan, self._depth
        skip, opening, closing = self._skip, self._open, self._close
        while True:
            match = skip.match(buf, pos)
            assert match is not None
            pos = match.end()
            if pos >= end:
                break
            byte = buf[pos]
            if byte == opening:
                depth += 1
            elif byte == closing:
                depth -= 1
                if depth == 0:
                    self._pos = pos + 1
                    return True
            else:  # a string cut by the read boundary: wait for more
                break
            pos += 1
        self._scan, self._depth = pos, depth
        return False

    def _scalar_end(self) -> int | None:
        buf = self._buf
        if buf[self._pos : self._pos + 1] == b'"':
            match = _STRING.match(buf, self._pos)
            return match.end() if match else None
        match = _SCALAR.match(buf, self._pos)
        if match is None or match.end() == len(buf):
            return None
        return match.end()


def parse_order(data: bytes, position: int, parsed: Any = None) -> ParsedOrder:
    """Check one order's bytes (already parsed by the splitter, or not); ChunkFormatError
    names what is wrong."""
    if parsed is not None:
        order = parsed
    else:
        try:
            order = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ChunkFormatError(f"malformed JSON in order: {exc}", position) from None
    if not isinstance(order, dict):
        raise ChunkFormatError("an element of orders is not an object", position)
    order_id = order.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise ChunkFormatError("order has no order_id", position)
    updated = order.get("last_updated_date")
    if not isinstance(updated, str):
        raise ChunkFormatError(f"order {order_id} has no last_updated_date", position)
    try:
        last_updated = parse_instant(updated)
    except ValueError as exc:
        raise ChunkFormatError(f"order {order_id}: last_updated_date {exc}", position) from None
    _check_fields(order, ORDER_MONEY, ORDER_DATES, order_id, None, position)
    for key in ORDER_FLAGS:
        flag = order.get(key)
        if flag is not None and flag is not True and flag is not False and flag not in _FLAG_TEXT:
            raise ChunkFormatError(f"order {order_id}: {key} {flag!r} is not a boolean", position)
    lines = order.get("order_lines")
    if lines is not None:
        if type(lines) is not list:
            raise ChunkFormatError(f"order {order_id}: order_lines is not an array", position)
        for index, line in enumerate(lines):
            if type(line) is not dict or type(line.get("order_line_id")) is not str:
                raise ChunkFormatError(
                    f"order {order_id} line #{index}: no order_line_id", position
                )
            _check_fields(line, LINE_MONEY, LINE_DATES, order_id, index, position)
            for key in LINE_INTEGERS:
                number = line.get(key)
                if number is not None and type(number) is not int:  # bool is not int here
                    raise ChunkFormatError(
                        f"order {order_id} line #{index}: {key} {number!r} is not an integer",
                        position,
                    )
    return ParsedOrder(order_id, last_updated, data)


_FLAG_TEXT = ("true", "false")
_from_iso = datetime.fromisoformat


def _check_fields(
    obj: dict[str, Any],
    money: tuple[str, ...],
    dates: tuple[str, ...],
    order_id: str,
    line: int | None,
    position: int,
) -> None:
    """Money is a JSON number or a numeric string, dates are ISO-8601 (or absent).

    The common case (numbers, dates that parse) costs a type check or one fromisoformat
    per field: this runs for every order of every export.
    """
    get = obj.get
    for key in money:
        value = get(key)
        kind = type(value)
        if value is None or kind is float or kind is int:
            continue
        if kind is str:
            try:
                Decimal(value)
                continue
            except InvalidOperation:
                pass
        raise ChunkFormatError(
            f"{_where(order_id, line)}: {key} {value!r} is not a number", position
        )
    for key in dates:
        value = get(key)
        if value is None:
            continue
        try:
            _from_iso(value)
        except (TypeError, ValueError):
            raise ChunkFormatError(
                f"{_where(order_id, line)}: {key} {value!r} is not a date", position
            ) from None


def _where(order_id: str, line: int | None) -> str:
    return f"order {order_id}" if line is None else f"order {order_id} line #{line}"


def split_orders(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Synchronous helper (tests, tools): all order objects of a chunk given as byte pieces."""
    splitter = OrderSplitter()
    for piece in pieces:
        yield from splitter.feed(piece)
    splitter.close()
