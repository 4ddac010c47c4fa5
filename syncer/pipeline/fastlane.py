"""The fast lane: between exports, OR11 lists the orders in the states someone must act on
(by default WAITING_ACCEPTANCE and SHIPPING) updated since the lane's cursor, and merges
them like an export's batch. It only brings orders sooner: it never moves the export's
watermark, never writes an older version over a newer one, and what it leaves (a pass cut
short by max_pages or a 429) the next differential export brings anyway.

One pass per source at a time across replicas (the lease of kind 'lane'). The cursor moves
to the moment the pass began, once every page it was going to read was read (also when it
stopped at fast_lane.max_pages: the rest is the export's); a 429 keeps it, and the pages
read before it are merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from syncer.config import Config, FastLaneConfig, SourceConfig
from syncer.dates import utc_now
from syncer.errors import RateLimited
from syncer.log import get_logger
from syncer.mirakl.client import OrdersPage, open_client
from syncer.pipeline.chunks import ChunkFormatError, OrderSplitter, parse_order
from syncer.store.binary_copy import StagedRow
from syncer.store.lane_store import LANE_RUN_ID, LanePass, LaneStore
from syncer.store.lease import LANE, LeaseKeeper
from syncer.store.sync_store import SyncStore

PAGE_ORDERS = 100  # Mirakl's largest OR11 page


class OrdersApi(Protocol):
    async def list_orders(
        self,
        *,
        states: tuple[str, ...] = (),
        start_update: datetime | None = None,
        max_per_page: int = 100,
        offset: int = 0,
        next_url: str | None = None,
    ) -> OrdersPage: ...


@dataclass(frozen=True)
class LaneSummary:
    source: str
    pages: int
    orders_read: int
    orders_changed: int
    orders_refused: int
    truncated: bool
    rate_limited: bool

    def describe(self) -> str:
        text = (
            f"lane {self.source}: {self.orders_read} orders read in {self.pages} pages, "
            f"{self.orders_changed} changed"
        )
        if self.orders_refused:
            text += f", {self.orders_refused} refused"
        if self.truncated:
            text += " (stopped at fast_lane.max_pages; the rest is left to the export)"
        if self.rate_limited:
            text += " (OR11 answered 429; the rest waits for the next pass)"
        return text


class FastLane:
    def __init__(
        self,
        source: SourceConfig,
        lane: FastLaneConfig,
        client: OrdersApi,
        store: LaneStore,
        leases: LeaseKeeper,
    ) -> None:
        self._source = source
        self._lane = lane
        self._client = client
        self._store = store
        self._leases = leases
        self._log = get_logger(source=source.name)

    async def run_pass(self) -> LaneSummary:
        """One pass under the lane's lease (RunSkipped if another process holds it)."""
        name = self._source.name
        async with self._leases.hold(LANE, name):
            started = utc_now()
            cursor = await self._store.cursor(name)
            since = (
                None if cursor is None else cursor - timedelta(minutes=self._source.overlap_minutes)
            )
            rows: list[StagedRow] = []
            pages = refused = offset = 0
            next_url: str | None = None
            truncated = limited = False
            while True:
                if pages >= self._lane.max_pages:
                    truncated = True
                    break
                try:
                    page = await self._client.list_orders(
                        states=self._lane.states,
                        start_update=since,
                        max_per_page=PAGE_ORDERS,
                        offset=offset,
                        next_url=next_url,
                    )
                except RateLimited as exc:
                    limited = True
                    self._log.warning("lane_rate_limited", pages_read=pages, error=str(exc))
                    break
                pages += 1
                read, bad = self._stage(page, rows)
                refused += bad
                offset += read
                next_url = page.next_url
                if next_url is None and (read == 0 or offset >= page.total_count):
                    break
            if truncated:
                self._log.warning(
                    "lane_truncated",
                    pages=pages,
                    max_pages=self._lane.max_pages,
                    note="more orders than fast_lane.max_pages pages; left to the export",
                )
            done = LanePass(
                orders_read=len(rows),
                pages=pages,
                truncated=truncated,
                cursor_to=None if limited else started,
                error="OR11 answered 429" if limited else None,
            )
            changed = await self._store.merge(
                name, rows, done, shop_id=self._source.shop_id, history=self._source.history
            )
        return LaneSummary(name, pages, len(rows), changed, refused, truncated, limited)

    def _stage(self, page: OrdersPage, rows: list[StagedRow]) -> tuple[int, int]:
        """The page's orders appended to `rows`; a malformed order is logged and left out
        (the export brings it, or refuses it, in its turn). Returns (orders, refused)."""
        splitter = OrderSplitter()
        try:
            pieces = splitter.feed(page.body)
            parsed = splitter.parsed
            splitter.close()
        except ChunkFormatError as exc:
            self._log.error("lane_page_refused", error=str(exc))
            return 0, 1
        refused = 0
        for data, order in zip(pieces, parsed, strict=True):
            try:
                good = parse_order(data, len(rows), order)
            except ChunkFormatError as exc:
                refused += 1
                self._log.error("lane_order_refused", error=str(exc))
                continue
            rows.append(
                (LANE_RUN_ID, 0, len(rows), good.order_id, good.last_updated_date, good.raw)
            )
        return len(pieces), refused


async def lane_source(config: Config, store: SyncStore, source: SourceConfig) -> LaneSummary:
    """One fast-lane pass of one source with its own HTTP session."""
    async with open_client(source, config.http) as client:
        lane = FastLane(source, config.fast_lane, client, LaneStore(store.pool), store.leases)
        return await lane.run_pass()
