"""Differential, property-based tests of the chunk splitter against orjson on whole files.

Chunk files are generated with adversarial content (quotes, backslashes and `},{"order_id":`
inside strings, \\uXXXX escapes and surrogate pairs, nesting, orders whose first key is not
`order_id`, every JSON whitespace between every token, extra top-level keys) and read in
random pieces, from one byte to the whole file.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer.pipeline.chunks import ChunkFormatError, OrderSplitter

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRAPS = [
    '},{"order_id":',
    '"},{"order_id":"x"}',
    "}]}",
    '],"orders":[',
    "\\",
    '\\"',
    "{[",
    "]}",
    "\u00e9\u20ac\U0001f600\U0001d11e",
]
CHARS = st.one_of(
    st.sampled_from('"\\{}[],: /\n\t\r\x00\x1f\x7fe\u00e9\u20ac\U0001f600\U0001d11e'),
    st.characters(blacklist_categories=("Cs",)),
)
TEXT = st.one_of(
    st.text(CHARS, max_size=12),
    st.lists(st.one_of(st.sampled_from(TRAPS), st.text(CHARS, max_size=3)), max_size=4).map(
        "".join
    ),
)
KEYS = TEXT.filter(lambda key: key != "orders")
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)


def _objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    pairs = st.lists(st.tuples(KEYS, children), max_size=3).map(dict)
    # Objects that start like an order: the fast path's separator then appears nested.
    order_like = st.tuples(TEXT, pairs).map(lambda kv: {"order_id": kv[0], **kv[1]})
    return st.one_of(st.lists(children, max_size=3), pairs, order_like)


VALUES = st.recursive(SCALARS, _objects, max_leaves=8)


@st.composite
def orders(draw: st.DrawFn) -> dict[str, Any]:
    """An order: `order_id` usually first, sometimes elsewhere (or another first key)."""
    pairs = draw(st.lists(st.tuples(KEYS.filter(lambda k: k != "order_id"), VALUES), max_size=4))
    at = draw(st.sampled_from([0, 0, 0, len(pairs)]))
    pairs.insert(min(at, len(pairs)), ("order_id", draw(TEXT)))
    return dict(pairs)


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    """A chunk file and the byte span of each element of its "orders"."""
    top = st.lists(st.tuples(KEYS, VALUES), max_size=2)
    before, after = dict(draw(top)), dict(draw(top))
    after = {key: value for key, value in after.items() if key not in before}
    writer = Writer(random.Random(draw(st.integers(0, 2**32))))
    spans = writer.document(before, draw(st.lists(orders(), max_size=5)), after)
    return bytes(writer.out), spans


WHITESPACE = [b"", b"", b"", b" ", b"\n", b"\t", b"\r\n", b" \n\t\r "]
SHORT_ESCAPES = {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}


class Writer:
    """JSON text with random whitespace between every token and random string escapes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.out = bytearray()

    def ws(self) -> None:
        self.out += self.rng.choice(WHITESPACE)

    def document(
        self, before: dict[str, Any], items: list[dict[str, Any]], after: dict[str, Any]
    ) -> list[tuple[int, int]]:
        spans = []
        self.ws()
        self.out += b"{"
        for key, value in before.items():
            self.member(key, value)
            self.out += b","
        self.ws()
        self.string("orders")
        self.ws()
        self.out += b":"
        self.ws()
        self.out += b"["
        for index, item in enumerate(items):
            self.ws()
            if index:
                self.out += b","
                self.ws()
            start = len(self.out)
            self.value(item)
            spans.append((start, len(self.out)))
        self.ws()
        self.out += b"]"
        for key, value in after.items():
            self.ws()
            self.out += b","
            self.member(key, value)
        self.ws()
        self.out += b"}"
        self.ws()
        return spans

    def member(self, key: str, value: Any) -> None:
        self.ws()
        self.string(key)
        self.ws()
        self.out += b":"
        self.ws()
        self.value(value)
        self.ws()

    def value(self, value: Any) -> None:
        if isinstance(value, dict):
            self.out += b"{"
            for index, (key, item) in enumerate(value.items()):
                if index:
                    self.out += b","
                self.member(key, item)
            self.ws()
            self.out += b"}"
        elif isinstance(value, list):
            self.out += b"["
            for index, item in enumerate(value):
                self.ws()
                if index:
                    self.out += b","
                    self.ws()
                self.value(item)
            self.ws()
            self.out += b"]"
        elif isinstance(value, str):
            self.string(value)
        elif value is None or isinstance(value, bool):
            self.out += orjson.dumps(value)
        else:  # int (beyond 64 bits too) or float
            self.out += repr(value).encode()

    def string(self, text: str) -> None:
        rng = self.rng
        parts = ['"']
        for char in text:
            code = ord(char)
            if char in '"\\':
                parts.append("\\" + char)
            elif code < 0x20 and char in SHORT_ESCAPES and rng.random() < 0.5:
                parts.append("\\" + SHORT_ESCAPES[char])
            elif code < 0x20 or rng.random() < 0.15:
                if code > 0xFFFF:  # a surrogate pair
                    code -= 0x10000
                    pair = (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
                    parts.append("".join(f"\\u{unit:04x}" for unit in pair))
                else:
                    parts.append(f"\\u{code:04X}" if rng.random() < 0.5 else f"\\u{code:04x}")
            elif char == "/" and rng.random() < 0.5:
                parts.append("\\/")
            else:
                parts.append(char)
        parts.append('"')
        self.out += "".join(parts).encode()


@st.composite
def reads(draw: st.DrawFn, size: int) -> list[int]:
    """Where the reads end: every k bytes (1 up to the whole file), or at random points."""
    if draw(st.booleans()):
        step = draw(st.one_of(st.integers(1, 8), st.integers(1, max(1, size))))
        return list(range(step, size, step))
    return sorted(set(draw(st.lists(st.integers(1, max(1, size - 1)), max_size=12))))


def split(document: bytes, cuts: list[int]) -> tuple[list[bytes], list[Any]]:
    """Feed the pieces between `cuts`; (each order's bytes, each parsed order), or raise."""
    splitter = OrderSplitter()
    found: list[bytes] = []
    parsed: list[Any] = []
    for start, stop in zip([0, *cuts], [*cuts, len(document)], strict=True):
        found += splitter.feed(document[start:stop])
        parsed += splitter.parsed
        assert len(found) == len(parsed) == splitter.orders_seen
    splitter.close()
    return found, parsed


@SETTINGS
@given(st.data())
def test_any_document_read_in_any_pieces_yields_each_order_exactly(data: st.DataObject) -> None:
    """Each order's bytes are exactly its element's bytes; parsed it equals orjson's parse."""
    document, spans = data.draw(documents())
    expected = orjson.loads(document)["orders"]
    found, parsed = split(document, data.draw(reads(len(document))))
    assert found == [document[start:stop] for start, stop in spans]
    assert [orjson.loads(item) for item in found] == expected
    assert parsed == expected


@SETTINGS
@given(st.data())
def test_a_truncated_document_is_refused_after_correct_orders_only(data: st.DataObject) -> None:
    """Every prefix raises a truncated ChunkFormatError; what it yielded first is correct."""
    document, spans = data.draw(documents())
    end = len(document.rstrip(b" \t\r\n"))
    lengths = data.draw(st.lists(st.integers(0, end - 1), min_size=1, max_size=8))
    for length in [*lengths, end - 1]:
        prefix = document[:length]
        splitter = OrderSplitter()
        found: list[bytes] = []
        cuts = data.draw(reads(len(prefix)))
        with pytest.raises(ChunkFormatError) as caught:
            for start, stop in zip([0, *cuts], [*cuts, len(prefix)], strict=True):
                found += splitter.feed(prefix[start:stop])
            splitter.close()
        assert caught.value.truncated, caught.value
        assert found == [document[start:stop] for start, stop in spans[: len(found)]]


def _shape_ok(document: bytes) -> bool:
    """What orjson says of the whole file: `{"orders": [objects...]}`."""
    try:
        whole = orjson.loads(document)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(whole, dict)
        and isinstance(whole.get("orders"), list)
        and all(isinstance(item, dict) for item in whole["orders"])
    )


@SETTINGS
@given(st.data())
def test_a_malformed_document_is_refused(data: st.DataObject) -> None:
    """A byte deleted, inserted or replaced: refused iff orjson refuses the whole file."""
    document, _ = data.draw(documents())
    at = data.draw(st.integers(0, len(document) - 1))
    byte = bytes([data.draw(st.sampled_from(b'{}[]",:\\ \x00\xff0en'))])
    edit = data.draw(st.sampled_from(["delete", "insert", "replace"]))
    broken = {
        "delete": document[:at] + document[at + 1 :],
        "insert": document[:at] + byte + document[at:],
        "replace": document[:at] + byte + document[at + 1 :],
    }[edit]
    cuts = data.draw(reads(len(broken)))
    if _shape_ok(broken):
        found, parsed = split(broken, cuts)
        assert parsed == orjson.loads(broken)["orders"]
        assert [orjson.loads(item) for item in found] == parsed
    else:
        with pytest.raises(ChunkFormatError):
            split(broken, cuts)
