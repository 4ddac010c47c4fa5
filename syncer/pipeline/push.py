"""Send queued order patches to Mirakl with OR04: batches of <= 100 orders, one call a minute.

Rows are marked `sent` (and the call recorded) before anything goes out, and
the answer is written back per order. A pusher that dies in between leaves
`sent` rows, which the next push sends again: OR04 patches are idempotent.

One bad row never blocks the others. Each row is decoded and checked on its own,
under its own guard: whatever is wrong with it (not an object, nested too deep,
too large, an OR04 rule broken, even an unexpected exception) rejects that row
alone, with the reason, and the order's other rows are merged and sent. Calls are
cut to stay under `push.max_request_bytes`; a call refused as a whole for its body
(413 and other 4xx that are not about the key or the endpoint) is split in halves,
sent again at the allowed pace, until the order at fault is alone and rejected.
Transient failures make the rows wait (exponential backoff with jitter) and, after
`push.max_attempts` sends, end `failed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from syncer.config import PushConfig, SourceConfig
from syncer.errors import AuthRefused, MiraklError, MiraklUnavailable
from syncer.log import get_logger, log_context
from syncer.pipeline.patches import PatchError, check_shape, merge_patches, validate_patch

OR04_MAX_ORDERS = 100
# `{"orders":[` and `]}` around the orders of a request body.
REQUEST_OVERHEAD_BYTES = len(b'{"orders":[]}')
# Refusals of a whole call that say nothing about its body: the rows are not at fault.
NOT_ABOUT_THE_BODY = frozenset({401, 403, 404, 405, 407, 408, 429})


class PatchApi(Protocol):
    async def patch_orders(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]: ...


class DueLike(Protocol):
    @property
    def order_id(self) -> str: ...
    @property
    def patch_ids(self) -> list[int]: ...
    @property
    def raw_patches(self) -> list[str | None]: ...
    @property
    def patch_bytes(self) -> list[int]: ...
    @property
    def current_payment_workflow(self) -> str | None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How rows wait after a transient failure, and when they stop being sent."""

    max_attempts: int
    base_seconds: float
    max_seconds: float


class OutboxLike(Protocol):
    def push_lock(self, source: str) -> AbstractAsyncContextManager[None]: ...
    async def requeue_unanswered(self, source: str) -> int: ...
    async def next_batch(
        self, source: str, limit: int, max_text_bytes: int
    ) -> Sequence[DueLike]: ...
    async def reject(self, patch_ids: Sequence[int], errors: list[dict[str, Any]]) -> None: ...
    async def seconds_since_last_call(self, source: str) -> float | None: ...
    async def start_call(self, source: str, patch_ids: Sequence[int], orders: int) -> int: ...
    async def record_answer(
        self,
        call_id: int,
        outcomes: Sequence[OrderOutcome],
        *,
        retry: RetryPolicy,
        error: str | None = None,
    ) -> None: ...
    async def call_failed(
        self, call_id: int, patch_ids: Sequence[int], error: str, *, retry: RetryPolicy | None
    ) -> int: ...


@dataclass(frozen=True)
class OrderOutcome:
    """What became of one order's patches in an OR04 answer."""

    patch_ids: list[int]
    status: str  # applied, rejected, or pending (absent from the answer: send again later)
    errors: list[dict[str, Any]] | None = None
    result: dict[str, Any] | None = None
    note: str | None = None


@dataclass(frozen=True)
class Entry:
    """One order ready to go: its valid rows merged into one OR04 order object."""

    order_id: str
    patch_ids: list[int]
    body: dict[str, Any]
    size_bytes: int  # compact JSON, as it goes out


@dataclass
class PushSummary:
    source: str
    calls: int = 0
    applied: int = 0  # orders
    rejected: int = 0  # orders refused by Mirakl + rows refused here
    requeued: int = 0
    rejected_locally: int = 0  # rows refused before sending (part of `rejected`)
    split_calls: int = 0  # calls refused as a whole and split in halves
    deferred: int = 0  # rows waiting after a transient failure
    failed: int = 0  # rows given up after push.max_attempts sends (dead letters)

    def describe(self) -> str:
        extras = [
            f"{self.requeued} unanswered patch(es) sent again" if self.requeued else "",
            f"{self.split_calls} call(s) refused whole and split" if self.split_calls else "",
            f"{self.deferred} patch(es) deferred" if self.deferred else "",
            f"{self.failed} patch(es) failed for good" if self.failed else "",
        ]
        return (
            f"{self.source}: push: {self.calls} OR04 call(s), {self.applied} order(s) applied, "
            f"{self.rejected} rejected" + "".join(f", {e}" for e in extras if e)
        )


class CallRefused(Exception):
    """A whole OR04 call was refused for its body: split it."""

    def __init__(self, error: MiraklError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class PushRun:
    source: SourceConfig
    config: PushConfig
    api: PatchApi
    store: OutboxLike
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            self.config.max_attempts, self.config.retry_base_seconds, self.config.retry_max_seconds
        )

    async def run(self) -> PushSummary:
        """Send every due patch of the source.

        A row's own problem never raises: it is rejected and the push goes on. The run
        stops, raising, only when Mirakl or the database fails for everyone (transient
        failure after retries, API key refused): the rows of that call wait.
        """
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
                rejected_locally=summary.rejected_locally,
                split_calls=summary.split_calls,
                requeued=summary.requeued,
            )
        return summary

    async def _send_one_batch(self, summary: PushSummary) -> bool:
        """Check and send the next due orders; False when nothing is due."""
        due = await self.store.next_batch(
            self.source.name, OR04_MAX_ORDERS, 2 * self.config.max_patch_bytes
        )
        if not due:
            return False
        ready = []
        for order in due:
            entry = await self._prepare(order, summary)
            if entry is not None:
                ready.append(entry)
        for batch in self._pack(ready):
            await self._send(batch, summary)
        return True

    async def _prepare(self, order: DueLike, summary: PushSummary) -> Entry | None:
        """The order's valid rows merged, in order; each invalid row is rejected alone."""
        kept_ids: list[int] = []
        kept: list[dict[str, Any]] = []
        for patch_id, raw, size in zip(
            order.patch_ids, order.raw_patches, order.patch_bytes, strict=True
        ):
            try:
                patch, errors = self._check_row(order, raw, size)
            except Exception as exc:  # a row's own failure stays its own
                patch, errors = None, [_unexpected("checking the patch", exc)]
            if errors or patch is None:
                await self._reject_locally(order.order_id, [patch_id], errors, summary)
                continue
            kept_ids.append(patch_id)
            kept.append(patch)
        if not kept:
            return None
        # Rows valid alone are merged (later fields win). Should the merge still break a rule,
        # the rows cannot be told apart: all of them are rejected with the merge's errors.
        try:
            merged = merge_patches(kept)
            errors = validate_patch(
                order.order_id, merged, current_payment_workflow=order.current_payment_workflow
            )
            body = {**merged, "order_id": order.order_id}
            size = len(orjson.dumps(body))
            budget = self.config.max_request_bytes - REQUEST_OVERHEAD_BYTES
            if not errors and size > budget:
                errors = [
                    PatchError(
                        "TOO_LARGE",
                        "",
                        f"the order's {len(kept)} patches merged are {size} bytes; "
                        f"one call carries at most {budget} (push.max_request_bytes)",
                    )
                ]
        except Exception as exc:  # this order's failure stays its own
            errors = [_unexpected("merging the patches", exc)]
        if errors:
            await self._reject_locally(order.order_id, kept_ids, errors, summary)
            return None
        return Entry(order.order_id, kept_ids, body, size)

    def _check_row(
        self, order: DueLike, raw: str | None, text_bytes: int
    ) -> tuple[dict[str, Any] | None, list[PatchError]]:
        """Decode and check one row alone, as if it were the order's only patch."""
        limit = self.config.max_patch_bytes
        if raw is None:
            return None, [_too_large(text_bytes, limit, "as stored")]
        try:
            patch = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if "depth" in str(exc) or "recursion" in str(exc):
                return None, [PatchError("TOO_DEEP", "", f"the patch is nested too deep: {exc}")]
            return None, [PatchError("INVALID_JSON", "", f"the patch cannot be read: {exc}")]
        shape = check_shape(patch)
        if shape:
            return None, shape
        size = len(orjson.dumps(patch))
        if size > limit:
            return None, [_too_large(size, limit, "as JSON")]
        errors = validate_patch(
            order.order_id, patch, current_payment_workflow=order.current_payment_workflow
        )
        return patch, errors

    async def _reject_locally(
        self, order_id: str, patch_ids: list[int], errors: list[PatchError], summary: PushSummary
    ) -> None:
        await self.store.reject(patch_ids, [e.as_json() for e in errors])
        summary.rejected += len(patch_ids)
        summary.rejected_locally += len(patch_ids)
        get_logger().warning(
            "patch_rejected_locally",
            order_id=order_id,
            patch_ids=patch_ids,
            errors=[e.message[:300] for e in errors],
        )

    def _pack(self, entries: list[Entry]) -> Iterator[list[Entry]]:
        """Consecutive calls of at most 100 orders and push.max_request_bytes each."""
        batch: list[Entry] = []
        size = REQUEST_OVERHEAD_BYTES
        for entry in entries:
            grown = size + entry.size_bytes + (1 if batch else 0)
            if batch and (len(batch) >= OR04_MAX_ORDERS or grown > self.config.max_request_bytes):
                yield batch
                batch, grown = [], REQUEST_OVERHEAD_BYTES + entry.size_bytes
            batch.append(entry)
            size = grown
        if batch:
            yield batch

    async def _send(self, batch: list[Entry], summary: PushSummary) -> None:
        """One call; a whole-call refusal for its body splits it until the culprit is alone."""
        try:
            await self._call(batch, summary)
        except CallRefused as refused:
            summary.split_calls += 1
            half = len(batch) // 2
            get_logger().warning(
                "or04_refused_whole_splitting",
                orders=len(batch),
                status=refused.error.status,
                error=str(refused.error)[:300],
            )
            await self._send(batch[:half], summary)
            await self._send(batch[half:], summary)

    async def _call(self, batch: list[Entry], summary: PushSummary) -> None:
        await self._respect_rate_limit()
        patch_ids = [pid for entry in batch for pid in entry.patch_ids]
        call_id = await self.store.start_call(self.source.name, patch_ids, len(batch))
        summary.calls += 1
        try:
            answers = await self.api.patch_orders([entry.body for entry in batch])
        except MiraklError as exc:
            await self._call_failed(call_id, batch, patch_ids, exc, summary)
            return
        by_order = {str(answer.get("order_id")): answer for answer in answers}
        outcomes = [self._outcome(entry, by_order.get(entry.order_id), summary) for entry in batch]
        await self.store.record_answer(call_id, outcomes, retry=self.retry)
        get_logger().info("or04_answered", call_id=call_id, orders=len(batch))

    async def _call_failed(
        self,
        call_id: int,
        batch: list[Entry],
        patch_ids: list[int],
        exc: MiraklError,
        summary: PushSummary,
    ) -> None:
        """Settle a call that got no usable answer; raise unless the batch can be split."""
        message = str(exc)
        if _refused_for_its_body(exc):
            if len(batch) > 1:
                await self.store.call_failed(
                    call_id, patch_ids, f"{message}; split and sent again", retry=None
                )
                raise CallRefused(exc)
            error = {"code": f"HTTP_{exc.status}", "field": "", "message": message}
            outcome = OrderOutcome(patch_ids, "rejected", errors=[error])
            await self.store.record_answer(call_id, [outcome], retry=self.retry, error=message)
            summary.rejected += 1
            get_logger().warning(
                "patch_rejected_alone", order_id=batch[0].order_id, error=message[:300]
            )
            return
        if isinstance(exc, AuthRefused) or exc.status in NOT_ABOUT_THE_BODY - {408, 429}:
            # The key or the endpoint is wrong: not the rows' doing, no attempt spent.
            await self.store.call_failed(call_id, patch_ids, message, retry=None)
            raise exc
        # Transient (5xx, 429, timeouts, network, a 200 that is not OR04's answer): rows wait.
        failed = await self.store.call_failed(call_id, patch_ids, message, retry=self.retry)
        summary.deferred += len(patch_ids) - failed
        summary.failed += failed
        get_logger().warning(
            "or04_failed_rows_wait", rows=len(patch_ids) - failed, dead_letters=failed
        )
        raise exc

    def _outcome(
        self, entry: Entry, answer: dict[str, Any] | None, summary: PushSummary
    ) -> OrderOutcome:
        if answer is None:
            return OrderOutcome(
                entry.patch_ids, "pending", note="not in OR04's answer; sending again later"
            )
        errors = answer.get("errors")
        if errors:
            summary.rejected += 1
            return OrderOutcome(entry.patch_ids, "rejected", errors=_error_list(errors))
        summary.applied += 1
        return OrderOutcome(entry.patch_ids, "applied", result=answer.get("updated"))

    async def _respect_rate_limit(self) -> None:
        since = await self.store.seconds_since_last_call(self.source.name)
        if since is not None and since < self.config.min_interval_seconds:
            wait = self.config.min_interval_seconds - since
            get_logger().info("push_rate_limit_wait", wait_s=round(wait, 2))
            await self.sleep(wait)


def _refused_for_its_body(exc: MiraklError) -> bool:
    """A 4xx for the whole call that is about what was sent (413, 400, 422...)."""
    if isinstance(exc, AuthRefused | MiraklUnavailable) or exc.status is None:
        return False
    return 400 <= exc.status < 500 and exc.status not in NOT_ABOUT_THE_BODY


def _error_list(errors: object) -> list[dict[str, Any]]:
    """Mirakl's errors for one order as [{"code", "field", "message"}], whatever their shape."""
    if isinstance(errors, list) and all(isinstance(e, dict) for e in errors):
        return list(errors)
    return [{"code": "REFUSED", "field": "", "message": str(errors)[:1000]}]


def _too_large(size: int, limit: int, measured: str) -> PatchError:
    return PatchError(
        "TOO_LARGE",
        "",
        f"the patch is {size} bytes {measured}; at most {limit} (push.max_patch_bytes)",
    )


def _unexpected(doing: str, exc: Exception) -> PatchError:
    return PatchError("UNREADABLE", "", f"{doing} failed: {type(exc).__name__}: {exc}"[:1000])
