"""The simulator keeps Mirakl's rules, checked over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import orjson
import pytest

from syncer.dates import utc_now
from syncer.simulator import SimulatorConfig, SimulatorState, serve
from syncer.simulator.orders import iso

KEY = "sim-secret-key"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": KEY}) as session:
        yield session


async def or13(
    http: aiohttp.ClientSession, url: str, **body: object
) -> tuple[int, dict[str, object]]:
    async with http.post(f"{url}/api/orders/async-export", data=orjson.dumps(body)) as resp:
        return resp.status, await resp.json()


async def completed_urls(http: aiohttp.ClientSession, url: str, tracking_id: str) -> list[str]:
    for _ in range(10):
        async with http.get(f"{url}/api/orders/async-export/status/{tracking_id}") as resp:
            answer = await resp.json()
        if answer["status"] == "COMPLETED":
            return list(answer.get("urls", []))
        assert answer["status"] == "PENDING"
    raise AssertionError("never completed")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "At least one date range"),
        ({"start_update_date": "2026-01-01T00:00:00Z"}, "must be given together"),
        (
            {
                "start_update_date": "2024-01-01T00:00:00Z",
                "end_update_date": "2025-01-01T00:00:01Z",
            },
            "exceed one year",
        ),
        ({"start_date": "2026-02-01T00:00:00Z", "end_date": "2026-01-01T00:00:00Z"}, "before"),
        (
            {
                "start_date": "2026-01-01T00:00:00Z",
                "end_date": "2026-02-01T00:00:00Z",
                "items_per_chunk": 9999,
            },
            "items_per_chunk",
        ),
        (
            {
                "start_date": "2026-01-01T00:00:00Z",
                "end_date": "2026-02-01T00:00:00Z",
                "megabytes_per_chunk": 2048,
            },
            "megabytes_per_chunk",
        ),
        ({"start_date": "yesterday", "end_date": "2026-02-01T00:00:00Z"}, "not a valid date-time"),
    ],
)
async def test_or13_refuses_bad_parameters_with_400(
    http: aiohttp.ClientSession, sim_url: str, body: dict[str, object], message: str
) -> None:
    """Missing or unpaired ranges, ranges over a year, chunk sizes out of range: 400 with a reason."""
    status, answer = await or13(http, sim_url, **body)
    assert status == 400
    assert message in str(answer["message"])


async def test_auth_is_required_on_every_endpoint(sim_url: str, sim_state: SimulatorState) -> None:
    """Without the key, OR13, OR14 and OR15 answer 401."""
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(f"{sim_url}/api/orders/async-export", data=b"{}") as resp:
            assert resp.status == 401
        async with anonymous.get(f"{sim_url}/api/orders/async-export/status/x") as resp:
            assert resp.status == 401
        async with anonymous.get(
            f"{sim_url}/api/orders/async-export/file/x?file=chunk-0.json"
        ) as resp:
            assert resp.status == 401


async def test_bearer_mode_wants_the_scheme_word() -> None:
    """An operator-style simulator accepts `Bearer <key>` and refuses the raw key."""
    state = SimulatorState(SimulatorConfig(auth="bearer"))
    async with serve(state) as url, aiohttp.ClientSession() as session:
        body = orjson.dumps(
            {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-01-02T00:00:00Z"}
        )
        async with session.post(
            f"{url}/api/orders/async-export", data=body, headers={"Authorization": KEY}
        ) as resp:
            assert resp.status == 401
        async with session.post(
            f"{url}/api/orders/async-export", data=body, headers={"Authorization": f"Bearer {KEY}"}
        ) as resp:
            assert resp.status == 200


async def test_one_export_at_a_time_then_pending_then_chunks(
    http: aiohttp.ClientSession, sim_url: str, sim_state: SimulatorState
) -> None:
    """A second OR13 while one is PENDING is refused; once COMPLETED the chunks hold the orders."""
    sim_state.config.pending_polls = 2
    sim_state.config.max_items_per_chunk = 4
    sim_state.seed_orders(10, days=3)
    window = {
        "start_update_date": iso(sim_state.now() - timedelta(days=4)),
        "end_update_date": iso(sim_state.now()),
    }
    status, answer = await or13(http, sim_url, **window)
    assert status == 200
    tracking_id = str(answer["tracking_id"])
    status, answer = await or13(http, sim_url, **window)
    assert status == 409 and "already in progress" in str(answer["message"])
    urls = await completed_urls(http, sim_url, tracking_id)
    assert len(urls) == 3
    found = []
    for url in urls:
        async with http.get(url) as resp:
            found += [o["order_id"] for o in orjson.loads(await resp.read())["orders"]]
    assert sorted(found) == sorted(sim_state.orders)
    async with http.get(urls[0].split("?")[0] + "?file=forged.json") as resp:
        assert resp.status == 404


async def test_update_filter_subtracts_the_small_delta(
    http: aiohttp.ClientSession, sim_url: str, sim_state: SimulatorState
) -> None:
    """An order updated just before start_update_date (within the delta) is exported too."""
    sim_state.config.pending_polls = 0
    sim_state.config.update_delta_seconds = 5
    [order_id] = sim_state.create_orders(1)
    stamp = sim_state.now()
    sim_state.orders[order_id]["last_updated_date"] = iso(stamp - timedelta(seconds=3))
    status, answer = await or13(
        http,
        sim_url,
        start_update_date=iso(stamp),
        end_update_date=iso(stamp + timedelta(seconds=1)),
    )
    assert status == 200
    urls = await completed_urls(http, sim_url, str(answer["tracking_id"]))
    async with http.get(urls[0]) as resp:
        assert [o["order_id"] for o in (await resp.json())["orders"]] == [order_id]
    sim_state.orders[order_id]["last_updated_date"] = iso(stamp - timedelta(seconds=30))
    status, answer = await or13(
        http,
        sim_url,
        start_update_date=iso(stamp),
        end_update_date=iso(stamp + timedelta(seconds=1)),
    )
    assert await completed_urls(http, sim_url, str(answer["tracking_id"])) == [], (
        "empty export: no URL"
    )


async def export_everything(http: aiohttp.ClientSession, url: str) -> dict[str, object]:
    """Every order of a fresh export, by id, as served."""
    status, answer = await or13(
        http,
        url,
        start_update_date=iso(utc_now() - timedelta(days=300)),
        end_update_date=iso(utc_now() + timedelta(days=1)),
    )
    assert status == 200
    served: dict[str, object] = {}
    for chunk_url in await completed_urls(http, url, str(answer["tracking_id"])):
        async with http.get(chunk_url) as resp:
            served.update({o["order_id"]: o for o in orjson.loads(await resp.read())["orders"]})
    return served


async def test_every_export_serves_orders_as_they_are_now(
    http: aiohttp.ClientSession, sim_url: str, sim_state: SimulatorState
) -> None:
    """Exports reuse each order's JSON while it is unchanged: an order changed between two
    exports (by the simulator, by OR04, or in place by a test) is served as it is now."""
    sim_state.config.pending_polls = 0
    ids = sim_state.seed_orders(30, days=30)
    first = await export_everything(http, sim_url)
    assert first == sim_state.orders
    sim_state.update_orders(5)
    async with http.put(
        f"{sim_url}/api/orders",
        data=orjson.dumps({"orders": [{"order_id": ids[0], "references": {"x": "NEW"}}]}),
    ) as resp:
        assert resp.status == 200, await resp.text()
    in_place = sim_state.orders[ids[1]]
    in_place["last_updated_date"] = iso(sim_state.now() - timedelta(minutes=1))
    in_place["order_state"] = "CLOSED"
    second = await export_everything(http, sim_url)
    assert second == sim_state.orders
    assert second != first
    assert second[ids[1]]["order_state"] == "CLOSED"  # type: ignore[index]


async def test_control_endpoints_change_orders_and_time(
    http: aiohttp.ClientSession, sim_url: str, sim_state: SimulatorState
) -> None:
    """`/_sim/mutate` creates and updates orders; `/_sim/advance` moves the clock."""
    sim_state.seed_orders(5)
    before = sim_state.now()
    async with http.post(
        f"{sim_url}/_sim/mutate", data=orjson.dumps({"update": 2, "create": 3})
    ) as resp:
        answer = await resp.json()
    assert len(answer["updated"]) == 2 and len(answer["created"]) == 3
    assert len(sim_state.orders) == 8
    async with http.post(f"{sim_url}/_sim/advance", data=orjson.dumps({"seconds": 3600})) as resp:
        assert resp.status == 200
    assert sim_state.now() - before >= timedelta(hours=1)


async def test_edit_changes_the_state_and_at_most_one_line(
    http: aiohttp.ClientSession, sim_url: str, sim_state: SimulatorState
) -> None:
    """`/_sim/mutate {"edit": n}` (for benchmarks of re-delivery): each edited order gets
    another state and a new last_updated_date, and with `line_share` one line added or
    removed; every other line, every amount and every other order stays as it was."""
    sim_state.config.pending_polls = 0
    sim_state.seed_orders(40, days=30)
    before = await export_everything(http, sim_url)
    async with http.post(
        f"{sim_url}/_sim/mutate", data=orjson.dumps({"edit": 20, "line_share": 1.0})
    ) as resp:
        edited = set((await resp.json())["edited"])
    after = await export_everything(http, sim_url)  # served as changed, not from a cache
    assert len(edited) == 20 and after.keys() == before.keys()
    kinds = set()
    for order_id, old in before.items():
        new = after[order_id]
        assert isinstance(old, dict) and isinstance(new, dict)
        if order_id not in edited:
            assert new == old
            continue
        assert new["order_state"] != old["order_state"]
        assert new["last_updated_date"] > old["last_updated_date"]
        differing = {k for k in old if old[k] != new[k]}
        assert differing == {"order_state", "last_updated_date", "order_lines"}
        old_lines = {line["order_line_id"]: line for line in old["order_lines"]}
        new_lines = {line["order_line_id"]: line for line in new["order_lines"]}
        (moved,) = old_lines.keys() ^ new_lines.keys()  # exactly one line added or removed
        kinds.add("added" if moved in new_lines else "removed")
        assert all(new_lines[i] == old_lines[i] for i in old_lines.keys() & new_lines.keys())
    assert kinds == {"added", "removed"}

    (order_id,) = sim_state.edit_orders(1)  # no line_share: the lines stay as they were
    assert sim_state.orders[order_id]["order_lines"] == after[order_id]["order_lines"]  # type: ignore[index]


def test_simulator_imports_nothing_from_the_rest_of_syncer() -> None:
    """The simulator stands where Mirakl stands: no import of syncer outside syncer.simulator."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "syncer" / "simulator"
    for path in root.glob("*.py"):
        for line in path.read_text().splitlines():
            match = re.match(r"\s*(?:from|import)\s+(syncer[.\w]*)", line)
            if match:
                assert match.group(1).startswith("syncer.simulator"), f"{path.name}: {line}"


async def test_seller_view_hides_operator_fields_and_prints_real_numbers(
    http: aiohttp.ClientSession, sim_url: str, sim_state: SimulatorState
) -> None:
    """A seller's chunk has no shop_id/shop_name/customer.email, whole-second order dates,
    amounts with two decimals and rates with four, on /api/orders/async-export/file/<uuid>."""
    sim_state.seed_orders(30, days=3)
    window = {
        "start_update_date": iso(sim_state.now() - timedelta(days=4)),
        "end_update_date": iso(sim_state.now()),
    }
    _status, answer = await or13(http, sim_url, **window)
    urls = await completed_urls(http, sim_url, str(answer["tracking_id"]))
    assert all("/api/orders/async-export/file/" in url and "?file=" in url for url in urls)
    async with http.get(urls[0]) as resp:
        body = await resp.read()
    orders = orjson.loads(body)["orders"]
    assert not any("shop_id" in o or "shop_name" in o or "email" in o["customer"] for o in orders)
    assert all(
        o["last_updated_date"].endswith(":00Z") or o["last_updated_date"][-4] != "." for o in orders
    )
    assert b'"commission_rate_vat":20.0000' in body and b'"total_deduced_amount":0.00' in body
    assert any(o["channel"] is None for o in orders) and any(
        o["delivery_date"] is None for o in orders
    )


async def test_operator_view_has_shop_fields_and_failed_has_an_error() -> None:
    """With Bearer auth orders carry shop_id and customer.email; OR14 FAILED carries an error."""
    state = SimulatorState(SimulatorConfig(auth="bearer", pending_polls=0))
    state.seed_orders(5, days=3)
    assert all(o["shop_id"] == 2001 and "email" in o["customer"] for o in state.orders.values())
    state.inject("OR14", export_status="FAILED")
    headers = {"Authorization": f"Bearer {KEY}"}
    async with serve(state) as url, aiohttp.ClientSession(headers=headers) as session:
        status, answer = await or13(
            session,
            url,
            start_date=iso(state.now() - timedelta(days=4)),
            end_date=iso(state.now()),
            fulfillment_center_codes="DEFAULT",
        )
        assert status == 200
        async with session.get(
            f"{url}/api/orders/async-export/status/{answer['tracking_id']}"
        ) as resp:
            failed = await resp.json()
    assert failed["status"] == "FAILED" and failed["error"]["code"]
