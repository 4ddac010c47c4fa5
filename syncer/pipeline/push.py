"""Send queued order patches to Mirakl with OR04: batches of <= 100 orders, one call a minute.

Rows are marked `sent` (and the call recorded) before anything goes out, and
the answer is written back per order. A pusher that dies in between leaves
`sent` rows, which the next push sends again: OR04 patches are idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from syncer.config import PushConfig, SourceConfig
from syncer.errors import AuthRefused, MiraklError, MiraklUnavailable
from syncer.log import get_logger, log_context
from syncer.pipeline.patches import merge_patches, validate_patch

OR04_MAX_ORDERS = 100


class PatchApi(Protocol):
    async def patch_orders(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


class DueLike(Protocol):
    @property
    def order_id(self) -> str: ...
    @property
    def patch_ids(self) -> list[int]: ...
    @property
    def patches(self) -> list[Any]: ...
    @property
    def current_payment_workflow(self) -> str | None: ...


class OutboxLike(Protocol):
    def push_lock(self, source: str) -> AbstractAsyncContextManager[None]: ...
    async def requeue_unanswered(self, source: str) -> int: ...
    async def next_batch(self, source: str, limit: int) -> Sequence[DueLike]: ...
    async def reject(self, patch_ids: Sequence[int], errors: list[dict[str, Any]]) -> None: ...
    async def seconds_since_last_call(self, source: str) -> float | None: ...
    async def start_call(self, source: str, patch_ids: Sequence[int], orders: int) -> int: ...
    async def record_answer(self, call_id: int, outcomes: Sequence[OrderOutcome]) -> None: ...
    async def call_failed(
        self, call_id: int, patch_ids: Sequence[int], error: str, *, max_attempts: int, final: bool
    ) -> None: ...


@dataclass(frozen=True)
class OrderOutcome:
    """What became of one order's patches in an OR04 answer."""

    patch_ids: list[int]
    status: str  # applied, rejected, or pending (absent from the answer: send again)
    errors: list[dict[str, Any]] | None = None
    result: dict[str, Any] | None = None
    note: str | None = None


@dataclass
class PushSummary:
    source: str
    calls: int = 0
    applied: int = 0
    rejected: int = 0
    requeued: int = 0

    def describe(self) -> str:
        return (
            f"{self.source}: push: {self.calls} OR04 call(s), {self.applied} order(s) applied, "
            f"{self.rejected} rejected"
            + (f", {self.requeued} unanswered patch(es) sent again" if self.requeued else "")
        )


@dataclass
class PushRun:
    source: SourceConfig
    config: PushConfig
    api: PatchApi
    store: OutboxLike
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def run(self) -> PushSummary:
        """Send every pending patch of the source; stop at the first call that fails."""
        name = self.source.name
        summary = PushSummary(name)
        with log_context(source=name):
            async with self.store.push_lock(name):
                summary.requeued = await self.store.requeue_unanswered(name)
                while await self._send_one_batch(summary):
                    pass
            get_logger().info(
                "push_finished",
                calls=summary.calls,
                applied=summary.applied,
                rejected=summary.rejected,
                requeued=summary.requeued,
            )
        return summary

    async def _send_one_batch(self, summary: PushSummary) -> bool:
        """Validate and send the next batch; False when nothing is pending."""
        due = await self.store.next_batch(self.source.name, OR04_MAX_ORDERS)
        if not due:
            return False
        batch: list[tuple[DueLike, dict[str, Any]]] = []
        for order in due:
            merged = merge_patches(order.patches)
            errors = validate_patch(
                order.order_id, merged, current_payment_workflow=order.current_payment_workflow
            )
            if errors:
                await self.store.reject(order.patch_ids, [e.as_json() for e in errors])
                summary.rejected += 1
                get_logger().warning(
                    "patch_rejected_locally",
                    order_id=order.order_id,
                    errors=[e.message for e in errors],
                )
                continue
            batch.append((order, {**merged, "order_id": order.order_id}))
        if batch:
            await self._send(batch, summary)
        return True

    async def _send(
        self, batch: list[tuple[DueLike, dict[str, Any]]], summary: PushSummary
    ) -> None:
        await self._respect_rate_limit()
        patch_ids = [pid for order, _ in batch for pid in order.patch_ids]
        call_id = await self.store.start_call(self.source.name, patch_ids, len(batch))
        summary.calls += 1
        try:
            answers = await self.api.patch_orders([patch for _, patch in batch])
        except MiraklError as exc:
            # Refused as a whole (4xx other than 429) is final; transient failures are retried later.
            final = not isinstance(exc, MiraklUnavailable | AuthRefused) and exc.status is not None
            await self.store.call_failed(
                call_id, patch_ids, str(exc), max_attempts=self.config.max_attempts, final=final
            )
            raise
        by_order = {str(a.get("order_id")): a for a in answers}
        outcomes = []
        for order, _ in batch:
            answer = by_order.get(order.order_id)
            if answer is None:
                outcomes.append(
                    OrderOutcome(
                        order.patch_ids, "pending", note="not in OR04's answer; sending again"
                    )
                )
            elif answer.get("errors"):
                outcomes.append(
                    OrderOutcome(order.patch_ids, "rejected", errors=list(answer["errors"]))
                )
                summary.rejected += 1
            else:
                outcomes.append(
                    OrderOutcome(order.patch_ids, "applied", result=answer.get("updated"))
                )
                summary.applied += 1
        await self.store.record_answer(call_id, outcomes)
        get_logger().info("or04_answered", call_id=call_id, orders=len(batch))

    async def _respect_rate_limit(self) -> None:
        since = await self.store.seconds_since_last_call(self.source.name)
        if since is not None and since < self.config.min_interval_seconds:
            wait = self.config.min_interval_seconds - since
            get_logger().info("push_rate_limit_wait", wait_s=round(wait, 2))
            await self.sleep(wait)
