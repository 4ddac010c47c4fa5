"""The chunk splitter alone: a simulator chunk split in network-sized pieces, many times.

    python -m bench.splitter [--megabytes 9] [--piece-kib 256] [--rounds 15] [--huge-megabytes 0]

Builds one chunk file `{"orders":[...]}` the way the simulator serves it (each order
`orjson.dumps` of `make_order`, joined by commas), feeds it to `OrderSplitter` in pieces
of `--piece-kib`, and prints the median (and min/max) milliseconds per chunk and MB/s.
Each round checks the number of orders found. `--huge-megabytes N` also times one chunk
holding a single order of about N MB (a long `order_lines` array) between two small ones.
No network and no database: this measures the splitter, not the worker.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime

import orjson

from syncer.pipeline.chunks import OrderSplitter
from syncer.simulator.orders import dumps, make_order


def simulator_chunk(megabytes: float) -> tuple[bytes, int]:
    """A chunk file of about `megabytes` MB of simulator orders, and its order count."""
    rng = random.Random(7)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    orders: list[bytes] = []
    size = 0
    while size < megabytes * 1_000_000:
        orders.append(dumps(make_order(rng, len(orders), created)))
        size += len(orders[-1]) + 1
    return b'{"orders":[' + b",".join(orders) + b"]}", len(orders)


def huge_chunk(megabytes: float) -> bytes:
    """A chunk whose middle order is about `megabytes` MB: one long string field (with
    escaped quotes and backslashes in it) and its order_lines repeated, between two small
    orders. A long string is the worst case for a scanner that rescans a value cut by a read.
    """
    rng = random.Random(8)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    small = dumps(make_order(rng, 0, created))
    big = make_order(rng, 1, created)
    size = int(megabytes * 1_000_000)
    note = ('a "quoted" \\ note },{"order_id": ' * (size // 2 // 40 + 1))[: size // 2]
    line = dumps(big["order_lines"][0])
    lines = [orjson.loads(line)] * max(1, (size // 2) // (len(line) + 1))
    body = dumps({**big, "note": note, "order_lines": lines})
    return b'{"orders":[' + small + b"," + body + b"," + small + b"]}"


def split_ms(document: bytes, piece_bytes: int, **limits: int) -> tuple[float, int]:
    """Milliseconds to split `document` fed in `piece_bytes` pieces, and the orders found."""
    pieces = [document[at : at + piece_bytes] for at in range(0, len(document), piece_bytes)]
    started = time.perf_counter()
    splitter = OrderSplitter(**limits)
    found = 0
    for piece in pieces:
        found += len(splitter.feed(piece))
    splitter.close()
    return (time.perf_counter() - started) * 1000, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=9.0)
    parser.add_argument("--piece-kib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--huge-megabytes", type=float, default=0.0)
    args = parser.parse_args()
    piece = args.piece_kib * 1024
    document, count = simulator_chunk(args.megabytes)
    print(
        f"python {platform.python_version()} ({sys.executable}); chunk {len(document) / 1e6:.1f} MB, "
        f"{count} orders, pieces of {args.piece_kib} KiB, {args.rounds} rounds"
    )
    split_ms(document, piece)  # warm up
    times = []
    for _ in range(args.rounds):
        elapsed, found = split_ms(document, piece)
        if found != count:
            sys.exit(f"found {found} orders, expected {count}")
        times.append(elapsed)
    median = statistics.median(times)
    print(
        f"split: median {median:.1f} ms/chunk (min {min(times):.1f}, max {max(times):.1f}), "
        f"{len(document) / 1e6 / (median / 1000):.0f} MB/s"
    )
    if args.huge_megabytes:
        document = huge_chunk(args.huge_megabytes)
        elapsed, found = split_ms(document, piece, max_order_bytes=2 * len(document))
        print(
            f"huge order: {len(document) / 1e6:.1f} MB chunk, {found} orders, {elapsed / 1000:.2f} s, "
            f"{len(document) / 1e6 / (elapsed / 1000):.1f} MB/s"
        )


if __name__ == "__main__":
    main()
