"""The streaming chunk parser: any split of the bytes gives the same orders; bad files are named."""

from __future__ import annotations

import random
import time
import tomllib
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson
import pytest

from syncer.commands import run_source
from syncer.config import Config, ExportConfig, parse_config
from syncer.errors import ChunkInvalid, ConfigError
from syncer.pipeline.chunks import ChunkFormatError, OrderSplitter, parse_order, split_orders
from syncer.simulator import SimulatorState
from syncer.simulator.orders import dumps, make_order
from syncer.store.sync_store import SyncStore


def pieces(data: bytes, rng: random.Random, largest: int = 50) -> Iterator[bytes]:
    position = 0
    while position < len(data):
        size = rng.randint(1, largest)
        yield data[position : position + size]
        position += size


def sample_orders(count: int) -> list[dict[str, object]]:
    rng = random.Random(3)
    made = [make_order(rng, n, datetime(2026, 1, 1, tzinfo=UTC)) for n in range(count)]
    orders = [orjson.loads(dumps(order)) for order in made]  # plain JSON values
    orders[0]["customer"]["lastname"] = 'Tricky "{quoted}" \\ name ]},'  # type: ignore[index]
    orders[1]["note"] = "brace } inside { a string"
    return orders


@pytest.mark.parametrize("seed", range(8))
def test_any_split_of_a_chunk_yields_the_same_orders(seed: int) -> None:
    """Cutting the bytes at random points never changes what the splitter finds."""
    orders = sample_orders(30)
    document = orjson.dumps({"orders": orders}, option=orjson.OPT_INDENT_2 if seed % 2 else 0)
    found = list(split_orders(pieces(document, random.Random(seed))))
    assert [orjson.loads(item) for item in found] == orders


def test_other_top_level_keys_are_skipped() -> None:
    """Keys besides "orders" (before or after it) are allowed and ignored."""
    document = b'{"total": 2, "meta": {"a": [1, {"b": "}"}]}, "orders": [{"order_id": "x"}, {"order_id": "y"}], "z": "w"}'
    assert [orjson.loads(o)["order_id"] for o in split_orders(iter([document]))] == ["x", "y"]


def test_raw_keeps_the_exact_digits() -> None:
    """The raw text handed to PostgreSQL is the bytes Mirakl sent, digits included."""
    data = (
        b'{"order_id":"A","last_updated_date":"2026-01-01T00:00:00Z","price":12345678901234567.891}'
    )
    assert "12345678901234567.891" in parse_order(data, 0).raw.decode()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"", "empty"),
        (b'[{"order_id": "a"}]', "not a JSON object"),
        (b'{"orders": {"order_id": "a"}}', '"orders" is not an array'),
        (b'{"orders": [{"order_id": "a"}, {"order_id": "b"', "truncated"),
        (b'{"orders": [1, 2]}', "not an object"),
        (b'{"data": []}', 'no "orders" array'),
        (b'{"orders": []} trailing', "after the end"),
    ],
)
def test_malformed_chunks_are_refused_with_a_reason(document: bytes, reason: str) -> None:
    """Each malformed shape raises ChunkFormatError that says what is wrong."""
    with pytest.raises(ChunkFormatError, match=reason):
        list(split_orders(iter([document])))


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        (b'{"last_updated_date": "2026-01-01T00:00:00Z"}', "no order_id"),
        (b'{"order_id": "A"}', "no last_updated_date"),
        (b'{"order_id": "A", "last_updated_date": "yesterday"}', "not an ISO-8601 date"),
        (
            b'{"order_id": "A", "last_updated_date": "2026-01-01T00:00:00Z", "price": "abc"}',
            "price 'abc' is not a number",
        ),
        (
            b'{"order_id": "A", "last_updated_date": "2026-01-01T00:00:00Z", "order_lines": [{"x": 1}]}',
            "no order_line_id",
        ),
        (b'{"order_id": "A", "last_updated_date": "2026-01-01Z", "x": }', "malformed JSON"),
        (
            b'{"order_id": "A", "last_updated_date": "2026-01-01T00:00:00Z", "has_incident": "maybe"}',
            "order A: has_incident 'maybe' is not a boolean",
        ),
        (
            b'{"order_id": "A", "last_updated_date": "2026-01-01T00:00:00Z", '
            b'"order_lines": [{"order_line_id": "A-1", "order_line_index": 1.5}]}',
            r"order A line #0: order_line_index 1\.5 is not an integer",
        ),
    ],
)
def test_invalid_orders_are_named_with_their_position(order: bytes, reason: str) -> None:
    """parse_order says which field is wrong and keeps the position."""
    with pytest.raises(ChunkFormatError, match=reason) as caught:
        parse_order(order, 7)
    assert caught.value.position == 7


def test_mirakl_dates_with_and_without_milliseconds_parse() -> None:
    """`...Z` and `....123Z` and offsets are all read as UTC instants."""
    for text, expected in [
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        ("2026-03-01T10:00:00.120Z", datetime(2026, 3, 1, 10, 0, 0, 120000, tzinfo=UTC)),
        ("2026-03-01T12:00:00+02:00", datetime(2026, 3, 1, 10, tzinfo=UTC)),
    ]:
        data = orjson.dumps({"order_id": "A", "last_updated_date": text})
        assert parse_order(data, 0).last_updated_date == expected


def test_streaming_a_large_chunk_keeps_memory_bounded() -> None:
    """A ~40 MB chunk fed in 256 KB reads is parsed with a peak of a few reads, not the chunk."""
    order = orjson.dumps(sample_orders(2)[0])
    read = 256 * 1024
    block = b"," + b",".join([order] * 100)  # built before measuring: the "network"
    repeats = 40_000_000 // len(block)

    def stream() -> Iterator[bytes]:
        yield b'{"orders":[' + order
        for _ in range(repeats):
            for start in range(0, len(block), read):
                yield block[start : start + read]
        yield b"]}"

    splitter = OrderSplitter()
    tracemalloc.start()
    seen = 0
    for piece in stream():
        seen += len(splitter.feed(piece))
    splitter.close()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seen == 1 + repeats * 100
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a {repeats * len(block)} byte chunk"


def test_fast_path_falls_back_when_its_guess_is_wrong() -> None:
    """A nested object starting like an order, and orders with another first key, split exactly."""
    orders = [
        {
            "order_id": "A",
            "related": [{"order_id": "inner", "x": 1}, {"order_id": "inner2"}],
            "n": "}{",
        },
        {
            "commercial_id": "C",
            "order_id": "B",
        },  # another first key: the guessed separator skips it
        {"order_id": "D", "note": 'a "},{\\"order_id\\":" inside a string'},
        {"order_id": "E"},
    ]
    for seed in range(5):
        document = orjson.dumps({"orders": orders})
        splitter = OrderSplitter()
        found: list[tuple[bytes, object]] = []
        for piece in pieces(document, random.Random(seed), largest=400):
            found += zip(splitter.feed(piece), splitter.parsed, strict=True)
        splitter.close()
        assert [orjson.loads(data) for data, _ in found] == orders
        assert all(parsed is None or parsed == orjson.loads(data) for data, parsed in found)


READ = 256 * 1024


def huge_order_chunk(megabytes: float) -> bytes:
    """A chunk whose second order is about `megabytes` MB: three quarters one long string
    (quotes, backslashes and braces escaped in it), a quarter order lines."""
    small, big = (orjson.dumps(order) for order in sample_orders(2))
    size = int(megabytes * 1_000_000)
    note = ('a "quoted" \\ note },{"order_id": ' * (size // 40 + 1))[: size * 3 // 4]
    lines = [
        {"order_line_id": f"BIG-{n}", "quantity": 1, "price": 9.99} for n in range(size // 200)
    ]
    order = orjson.dumps({"order_id": "BIG", "note": note, "order_lines": lines})
    return b'{"orders":[' + small + b"," + order + b"," + big + b"]}"


def split_seconds(document: bytes, **limits: int) -> float:
    """Seconds to split `document` read in 256 KiB pieces (the best of two tries)."""
    pieces = [document[at : at + READ] for at in range(0, len(document), READ)]
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        assert len(list(split_orders(iter(pieces), **limits))) == 3
        best = min(best, time.perf_counter() - started)
    return best


def test_a_huge_order_is_split_in_linear_time() -> None:
    """A 24 MB order read in 256 KiB pieces takes about 4x a 6 MB one, not 16x."""
    small = split_seconds(huge_order_chunk(6))
    large = split_seconds(huge_order_chunk(24))
    assert large < 8 * small, f"6 MB: {small:.3f} s, 24 MB: {large:.3f} s"


@pytest.mark.parametrize("read", [READ, 1 << 30])
def test_an_order_over_the_limit_is_refused_with_its_position_and_id(read: int) -> None:
    """An order larger than max_order_bytes is refused (not as a truncated file), named."""
    document = huge_order_chunk(3)
    pieces = [document[at : at + read] for at in range(0, len(document), read)]
    splitter = OrderSplitter(max_order_bytes=2 * 1024 * 1024)
    found = 0
    with pytest.raises(
        ChunkFormatError, match=r"order #1 \(BIG\) is larger than 2,097,152"
    ) as caught:
        for piece in pieces:
            found += len(splitter.feed(piece))
    assert (caught.value.position, caught.value.truncated) == (1, False)
    assert found <= 1
    assert len(list(split_orders(iter(pieces), max_order_bytes=4 * 1024 * 1024))) == 3


def test_max_order_megabytes_is_read_and_range_checked() -> None:
    """export.max_order_megabytes defaults to 64 and must be within 1..1024."""
    with open("config.example.toml", "rb") as example:
        data = tomllib.load(example)
    del data["export"]["max_order_megabytes"]
    assert parse_config(data, env={}).export.max_order_megabytes == 64
    data["export"]["max_order_megabytes"] = 2000
    with pytest.raises(
        ConfigError, match=r"export\.max_order_megabytes: must be between 1 and 1024"
    ):
        parse_config(data, env={})


async def test_a_chunk_with_an_order_over_the_limit_fails_the_run_without_retry(
    make_config: Callable[..., Config], store: SyncStore, sim_state: SimulatorState
) -> None:
    """The worker refuses the chunk as invalid (not a broken download to fetch again)."""
    sim_state.seed_orders(5, days=10)
    sim_state.inject("OR15", body=huge_order_chunk(2), times=10)
    export = ExportConfig(poll_interval_seconds=0.02, poll_timeout_minutes=1, max_order_megabytes=1)
    config = make_config(export=export)
    with pytest.raises(ChunkInvalid, match=r"order #1 \(BIG\) is larger than 1,048,576"):
        await run_source(config, store, config.sources[0], "full")
    assert sim_state.faults[0].times == 9, "the chunk was downloaded once"
