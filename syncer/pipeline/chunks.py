"""Stream a chunk file `{"orders": [...]}` into one order at a time, memory bounded.

The scanner walks the bytes once, finds each order object's extent (strings
and nesting respected), and hands its exact bytes to orjson. Those bytes are
also what lands in `raw`, so numbers keep the exact digits Mirakl sent.

Every byte is scanned a bounded number of times whatever the read sizes: an order cut
by a read keeps its bytes in a list of pieces (joined once, when it is complete) and
its scan state (depth, inside a string, a pending backslash), so a long order costs
linear time, and memory of about twice its size, up to `max_order_bytes`. Only plain
regular expressions (character classes, no possessive quantifiers nor atomic groups,
which CPython matched wrongly before 3.11.5) and `bytes.find` are used.
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

DEFAULT_MAX_ORDER_BYTES = 64 * 1024 * 1024  # export.max_order_megabytes

_WS = re.compile(rb"[ \t\r\n]*")
# Outside strings: a whole string without escapes (skipped in one step), or a byte that
# changes the nesting: a bracket, or the quote opening a string with escapes (or cut).
_TOKEN = re.compile(rb'"[^"\\]*"|[\[\]{}"]')
# The end of a number, true, false or null.
_SCALAR_END = re.compile(rb'[ \t\r\n,:\[\]{}"]')
_FIRST_KEY = re.compile(rb'\{[ \t\r\n]*("[A-Za-z0-9_@.-]+")[ \t\r\n]*:')
_LEADING_ORDER_ID = re.compile(rb'\{[ \t\r\n]*"order_id"[ \t\r\n]*:[ \t\r\n]*"([^"\\]{1,200})"')
_BACKSLASH, _QUOTE, _OPEN_BRACE, _OPEN_BRACKET = 0x5C, 0x22, 0x7B, 0x5B

# Where the document is: between tokens (the next byte decides), or inside a value.
_START, _FIRST_KEY_OR_END, _KEY, _COLON, _VALUE, _AFTER_VALUE = range(6)
_ORDERS, _AFTER_ORDER, _NEXT_ORDER, _DONE, _IN_VALUE = range(6, 11)
# The value being read: an order, a top-level value besides "orders", a top-level key.
_ORDER, _SKIPPED, _KEY_NAME = range(3)
# Its kind: an object or array, a string, a number or literal.
_NESTED, _STRING, _SCALAR = range(3)
# What the fast path did: took the order(s), needs more bytes, leaves it to the exact scan.
_TAKEN, _WAIT, _EXACT = range(3)
_UNSEARCHED: Any = object()

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
    """Feed bytes in any pieces; get back each complete order object's bytes (and, in
    `parsed`, aligned with them, each order as orjson parsed it).

    The whole document is checked: top-level keys and values besides "orders" are parsed
    (and ignored), "orders" must appear once, nothing may follow the closing `}`. An order
    (or another top-level value) longer than `max_order_bytes` is refused, not truncated.
    """

    def __init__(self, max_order_bytes: int = DEFAULT_MAX_ORDER_BYTES) -> None:
        self.max_order_bytes = max_order_bytes
        self._state = _START
        self._key: object = None
        self._saw_orders = False
        self.orders_seen = 0
        # The value being read (state _IN_VALUE): what it is, where it starts in the
        # current piece, the bytes of it held from earlier pieces, the exact scan's state.
        self._purpose = _ORDER
        self._kind = _NESTED
        self._start = 0
        self._resume = 0
        self._parts: list[bytes] = []
        self._held = 0
        self._depth = 0
        self._in_string = False
        self._escape = False
        # Fast path: the separator between two orders, learnt from an order's first key.
        # `_fresh`: the current order has not been scanned yet, the fast path may take it.
        self._separator: re.Pattern[bytes] | None = None
        self._fast = True
        self._learn_failures = 0
        self._fresh = False
        self._found: Any = _UNSEARCHED  # the separator's next match in the current piece
        self._last_end: tuple[int, int] | None = None  # the piece's last `]`, last byte before
        self.parsed: list[Any] = []

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        self.parsed = []
        self._found, self._last_end = _UNSEARCHED, None
        if self._state == _IN_VALUE:
            self._start = self._resume = 0
            if self._fresh:
                # Not scanned yet: retry the fast path on the held bytes and this piece, as
                # long as that re-reads no more than the piece itself (linear in total).
                held = self._held
                data = b"".join((*self._parts, data)) if self._parts else data
                self._parts, self._held = [], 0
                if held > len(data) - held or held > self.max_order_bytes:
                    self._fresh = False
        self._run(data, 0, out)
        return out

    def close(self) -> None:
        """Raise ChunkFormatError unless the document ended exactly after `]}`."""
        if self._state != _DONE:
            raise ChunkFormatError(
                "the file is empty"
                if self._state == _START
                else "the file ended early (truncated)",
                self.orders_seen if self._saw_orders else None,
                truncated=True,
            )
        if not self._saw_orders:
            raise ChunkFormatError('no "orders" array in the file')

    def _run(self, data: bytes, pos: int, out: list[bytes]) -> None:
        end = len(data)
        while True:
            state = self._state
            if state == _IN_VALUE:
                if self._fresh:
                    outcome = self._fast_orders(data, out)
                    if outcome == _WAIT:
                        return
                    if outcome == _TAKEN:
                        pos = self._resume
                        continue
                stop = self._scan(data, self._resume)
                if stop < 0:
                    self._hold(data[self._start :])
                    return
                tail = data[self._start : stop]
                self._finish(b"".join((*self._parts, tail)) if self._parts else tail, out)
                pos = stop
                continue
            pos = _WS.match(data, pos).end()  # type: ignore[union-attr]
            if pos >= end:
                return
            byte = data[pos]
            if state in (_ORDERS, _NEXT_ORDER):
                if byte == _OPEN_BRACE:
                    self._begin(pos, _ORDER, _NESTED)
                elif byte == 0x5D and state == _ORDERS:  # ]
                    pos += 1
                    self._state = _AFTER_VALUE
                else:
                    raise ChunkFormatError(
                        "an element of orders is not an object", self.orders_seen
                    )
            elif state == _AFTER_ORDER:
                if byte == 0x2C:  # ,
                    pos += 1
                    self._state = _NEXT_ORDER
                elif byte == 0x5D:  # ]
                    pos += 1
                    self._state = _AFTER_VALUE
                else:
                    raise ChunkFormatError(
                        "malformed JSON: expected ',' or ']' after an order", self.orders_seen
                    )
            elif state == _START:
                if byte != _OPEN_BRACE:
                    raise ChunkFormatError('the file is not a JSON object {"orders": [...]}')
                pos += 1
                self._state = _FIRST_KEY_OR_END
            elif state in (_FIRST_KEY_OR_END, _KEY):
                if byte == _QUOTE:
                    self._begin(pos, _KEY_NAME, _STRING)
                elif byte == 0x7D and state == _FIRST_KEY_OR_END:  # }
                    pos += 1
                    self._state = _DONE
                else:
                    raise ChunkFormatError("malformed JSON: expected a key")
            elif state == _COLON:
                if byte != 0x3A:  # :
                    raise ChunkFormatError("malformed JSON: expected ':'")
                pos += 1
                self._state = _VALUE
            elif state == _VALUE:
                if self._key == "orders":
                    if self._saw_orders:
                        raise ChunkFormatError('"orders" appears twice in the file')
                    if byte != _OPEN_BRACKET:
                        raise ChunkFormatError('"orders" is not an array')
                    self._saw_orders = True
                    pos += 1
                    self._state = _ORDERS
                elif byte in (_OPEN_BRACE, _OPEN_BRACKET):
                    self._begin(pos, _SKIPPED, _NESTED)
                elif byte == _QUOTE:
                    self._begin(pos, _SKIPPED, _STRING)
                elif _SCALAR_END.match(data, pos) is None:
                    self._begin(pos, _SKIPPED, _SCALAR)
                else:
                    raise ChunkFormatError("malformed JSON: expected a value")
            elif state == _AFTER_VALUE:
                if byte == 0x2C:  # ,
                    pos += 1
                    self._state = _KEY
                elif byte == 0x7D:  # }
                    pos += 1
                    self._state = _DONE
                else:
                    raise ChunkFormatError("malformed JSON: expected ',' or '}'")
            else:  # _DONE
                raise ChunkFormatError("unexpected data after the end of the document")

    def _begin(self, pos: int, purpose: int, kind: int) -> None:
        """Start reading a value at `pos` (its first byte)."""
        self._state = _IN_VALUE
        self._purpose, self._kind = purpose, kind
        self._start = pos
        self._parts, self._held = [], 0
        self._depth, self._escape = 0, False
        self._in_string = kind == _STRING
        self._resume = pos + 1 if kind == _STRING else pos
        self._fresh = purpose == _ORDER and self._fast

    def _hold(self, tail: bytes) -> None:
        """Keep the part of the value in this piece until the rest arrives."""
        self._parts.append(tail)
        self._held += len(tail)
        if self._held > self.max_order_bytes:
            self._too_large()

    def _too_large(self) -> None:
        limit = f"{self.max_order_bytes:,} bytes (export.max_order_megabytes)"
        if self._purpose != _ORDER:
            raise ChunkFormatError(f"a top-level value is larger than {limit}")
        first = self._parts[0] if self._parts else b""
        named = _LEADING_ORDER_ID.match(first)
        order = f"order #{self.orders_seen}" + (
            f" ({named.group(1).decode(errors='replace')})" if named else ""
        )
        raise ChunkFormatError(f"{order} is larger than {limit}", self.orders_seen)

    def _finish(self, value: bytes, out: list[bytes]) -> None:
        """A value is complete: check it and move on."""
        purpose = self._purpose
        self._parts, self._held = [], 0
        if purpose == _ORDER:
            self._emit(value, None, out)
            return
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ChunkFormatError(f"malformed JSON at the top level: {exc}") from None
        if len(value) > self.max_order_bytes:
            self._too_large()
        if purpose == _KEY_NAME:
            self._key = parsed
            self._state = _COLON
        else:
            self._state = _AFTER_VALUE

    def _emit(self, data: bytes, order: Any, out: list[bytes]) -> None:
        """One order found: parse it unless the fast path did; it must be valid JSON."""
        if len(data) > self.max_order_bytes:
            self._parts = [data]
            self._too_large()
        if order is None:
            try:
                order = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise ChunkFormatError(
                    f"malformed JSON in order: {exc}", self.orders_seen
                ) from None
        out.append(data)
        self.parsed.append(order)
        self.orders_seen += 1
        self._state = _AFTER_ORDER

    def _fast_orders(self, data: bytes, out: list[bytes]) -> int:
        """Find orders' ends at C speed: the next `},{"<first key>":`, then an orjson parse,
        order after order. Leaves `_resume` after what it took.

        That separator cannot occur inside a JSON string (its quote would be escaped). A
        slice from an order's `{` that orjson accepts as one object is that order: no proper
        prefix of a JSON object is one, so the parse fixes where it ends. A wrong candidate
        (the end of a nested object, or an order with another first key skipped over) is
        refused by orjson, and the exact scan takes this order. With no separator left in
        the piece, the last order of the array is tried up to the last `}` before the last
        `]`; with no `]` either, the order waits for more bytes. Searches are remembered
        for the piece, so no byte is searched twice.
        """
        start = self._start
        separator = self._separator
        if separator is None:
            first = _FIRST_KEY.match(data, start)
            if first is None:
                if data.find(b"]", start) < 0 and data.find(b":", start) < 0:
                    return self._wait(data, start)  # the first key is not here yet
                self._learn_failures += 1
                self._fast = self._learn_failures < 8  # keys of another shape: scan exactly
                return self._exact_from(start)
            separator = self._separator = re.compile(
                rb"\}[ \t\r\n]*,[ \t\r\n]*(\{)[ \t\r\n]*"
                + re.escape(first.group(1))
                + rb"[ \t\r\n]*:"
            )
        view = memoryview(data)
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        found = self._found
        while True:
            if found is _UNSEARCHED or (found is not None and found.start() < start):
                found = separator.search(data, start)
            if found is None:
                break
            stop = found.start() + 1
            try:
                order = loads(view[start:stop])
            except decode_error:
                self._found = found
                return self._exact_from(start)
            self._emit(data[start:stop], order, out)
            start = found.start(1)
            found = _UNSEARCHED
        self._found = None
        if self._last_end is None:
            close = data.rfind(b"]")
            stop = close
            while stop > 0 and data[stop - 1] in b" \t\r\n":
                stop -= 1
            self._last_end = (close, stop)
        close, stop = self._last_end
        if close <= start:
            return self._wait(data, start)
        if data[stop - 1] == 0x7D:  # }
            try:
                order = loads(view[start:stop])
            except decode_error:
                return self._exact_from(start)
            self._emit(data[start:stop], order, out)
            self._resume = stop
            return _TAKEN
        return self._exact_from(start)

    def _exact_from(self, start: int) -> int:
        """The exact scan takes the order starting at `start` (the fast path's cursor)."""
        self._begin(start, _ORDER, _NESTED)
        self._fresh = False
        return _EXACT

    def _wait(self, data: bytes, start: int) -> int:
        """Hold the unscanned order (and what follows it in this piece) for the next piece."""
        self._begin(start, _ORDER, _NESTED)
        self._parts, self._held = [data[start:]], len(data) - start
        return _WAIT

    def _scan(self, data: bytes, pos: int) -> int:
        """The end of the current value in `data`, scanning from `pos`; -1 if it goes on
        past this piece (the scan state is kept for the next one)."""
        if self._kind == _SCALAR:
            found = _SCALAR_END.search(data, pos)
            return -1 if found is None else found.start()
        end = len(data)
        depth, in_string, escape = self._depth, self._in_string, self._escape
        search, find = _TOKEN.search, data.find
        while True:
            if in_string:
                if escape:
                    if pos >= end:
                        break
                    pos += 1
                    escape = False
                quote = find(b'"', pos)
                if quote < 0:  # the string goes on: is its last backslash pending?
                    run = end
                    while run > pos and data[run - 1] == _BACKSLASH:
                        run -= 1
                    escape = (end - run) % 2 == 1
                    pos = end
                    break
                run = quote
                while run > pos and data[run - 1] == _BACKSLASH:
                    run -= 1
                pos = quote + 1
                if (quote - run) % 2:  # an escaped quote
                    continue
                in_string = False
                if depth == 0:
                    return pos
                continue
            found = search(data, pos)
            if found is None:
                pos = end
                break
            first, pos = found.span()
            if pos - first > 1:  # a string without escapes
                continue
            byte = data[first]
            if byte == _QUOTE:
                in_string = True
            elif byte in (_OPEN_BRACE, _OPEN_BRACKET):
                depth += 1
            else:
                depth -= 1
                if depth <= 0:
                    return pos
        self._depth, self._in_string, self._escape = depth, in_string, escape
        return -1


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


def split_orders(
    pieces: Iterator[bytes], max_order_bytes: int = DEFAULT_MAX_ORDER_BYTES
) -> Iterator[bytes]:
    """Synchronous helper (tests, tools): all order objects of a chunk given as byte pieces."""
    splitter = OrderSplitter(max_order_bytes)
    for piece in pieces:
        yield from splitter.feed(piece)
    splitter.close()
