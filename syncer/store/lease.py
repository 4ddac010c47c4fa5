"""Leases: who may run (or push) a source, as a row in PostgreSQL rather than a session lock.

A lease is taken with one statement (a new row, or an expired one taken over with its
token bumped), renewed every TTL/3 by one heartbeat task per process, and released by
expiring it at once. Holding one costs no connection. A heartbeat that finds a lease gone
(taken over, or expired while renewals failed) cancels the task that holds it with
`LeaseLost`; independently, every durable write of a run or push checks the lease as the
last statement before COMMIT (`fence`), so a paused or cut-off holder never commits after
losing it. A killed process's lease is free once its TTL has passed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import asyncpg

from syncer.cancel import cancel_for, reason_instead
from syncer.errors import DatabaseError, LeaseLost, RunSkipped
from syncer.log import get_logger
from syncer.store.db import Database, translated

# A new lease, or an expired one taken over (token + 1); no row returned: someone holds it.
ACQUIRE = """
INSERT INTO leases AS l (source, kind, holder, token, acquired_at, expires_at)
VALUES ($1, $2, $3, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $4))
ON CONFLICT (source, kind) DO UPDATE SET holder = EXCLUDED.holder, token = l.token + 1,
    acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= clock_timestamp()
RETURNING l.token
"""

HELD_BY = """
SELECT holder, greatest(0, extract(epoch FROM expires_at - clock_timestamp()))::float8 AS left_s
FROM leases WHERE source = $1 AND kind = $2
"""

# All of a process's leases in one statement; a lease not returned is lost.
RENEW = """
UPDATE leases l SET expires_at = clock_timestamp() + make_interval(secs => $2)
FROM unnest($3::text[], $4::text[], $5::bigint[]) AS h(source, kind, token)
WHERE l.source = h.source AND l.kind = h.kind AND l.token = h.token AND l.holder = $1
  AND l.expires_at > clock_timestamp()
RETURNING l.source, l.kind
"""

RELEASE = """
UPDATE leases SET expires_at = clock_timestamp()
WHERE source = $1 AND kind = $2 AND holder = $3 AND token = $4
"""

# The last statement before a COMMIT: the row stays locked (FOR SHARE) until the commit,
# so no takeover can slip in between the check and the commit.
FENCE = """
SELECT 1 FROM leases
WHERE source = $1 AND kind = $2 AND holder = $3 AND token = $4
  AND expires_at > clock_timestamp()
FOR SHARE
"""

RUN, PUSH, LANE = "run", "push", "lane"


@dataclass(eq=False)
class Lease:
    source: str
    kind: str
    holder: str
    token: int
    task: asyncio.Task[object]
    trusted_until: float  # time.monotonic(): after this, unrenewed, it counts as lost
    lost: LeaseLost | None = field(default=None)


# The leases the current task (and the tasks it starts) holds: what `fence` checks.
_HELD: ContextVar[tuple[Lease, ...]] = ContextVar("syncer_leases", default=())


def held_lease(kind: str, source: str) -> Lease | None:
    return next((x for x in _HELD.get() if x.kind == kind and x.source == source), None)


async def fence(conn: asyncpg.Connection, kind: str, source: str) -> None:
    """Inside a transaction, as its last statement: LeaseLost (the caller's block rolls
    back) unless the current task still holds the lease. Outside a lease (a benchmark's
    direct calls) there is nothing to check."""
    lease = held_lease(kind, source)
    if lease is None:
        return
    if lease.lost is not None:
        raise lease.lost
    async with translated("checking the lease before commit"):
        ok = await conn.fetchval(FENCE, source, kind, lease.holder, lease.token)
    if not ok:
        lease.lost = LeaseLost(
            f"source {source}: the {kind} lease was lost (expired or taken over by another "
            "process); nothing more was committed"
        )
        raise lease.lost


class LeaseKeeper:
    """Takes, renews and releases one process's leases."""

    def __init__(self, db: Database, ttl_seconds: float = 60.0) -> None:
        self._db = db
        self.ttl_seconds = ttl_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: list[Lease] = []
        self._beat: asyncio.Task[None] | None = None
        self.last_renewed: float | None = None  # time.monotonic() of the last good renewal

    @property
    def interval_seconds(self) -> float:
        return self.ttl_seconds / 3

    @property
    def _margin_seconds(self) -> float:
        return min(5.0, self.ttl_seconds / 6)

    @asynccontextmanager
    async def hold(self, kind: str, source: str) -> AsyncIterator[Lease]:
        """Hold the source's `kind` lease for the block; RunSkipped if another holds it.
        Losing it cancels the block, which then raises LeaseLost."""
        task = asyncio.current_task()
        assert task is not None
        lease = await self._acquire(kind, source, task)
        self._held.append(lease)
        self._start_heartbeat()
        reset = _HELD.set((*_HELD.get(), lease))
        try:
            yield lease
        except asyncio.CancelledError as exc:
            raise reason_instead(exc) from None
        finally:
            _HELD.reset(reset)
            self._held.remove(lease)
            await self._release(lease)
            if not self._held:
                await self._stop_heartbeat()

    async def _acquire(self, kind: str, source: str, task: asyncio.Task[object]) -> Lease:
        started = time.monotonic()
        async with translated(f"taking the {kind} lease"), self._db.acquire() as conn:
            token = await conn.fetchval(ACQUIRE, source, kind, self.holder, self.ttl_seconds)
            if token is None:
                row = await conn.fetchrow(HELD_BY, source, kind)
        if token is None:
            held = f" (lease of {row['holder']}, {row['left_s']:.0f}s left)" if row else ""
            raise RunSkipped(f"source {source}: another {kind} holds the lock; skipped{held}")
        return Lease(
            source,
            kind,
            self.holder,
            int(token),
            task,
            trusted_until=started + self.ttl_seconds - self._margin_seconds,
        )

    async def _release(self, lease: Lease) -> None:
        """Expire the lease now, so the next run need not wait for the TTL (best effort)."""
        try:
            async with translated("releasing the lease"):
                await asyncio.shield(
                    self._db.execute(RELEASE, lease.source, lease.kind, lease.holder, lease.token)
                )
        except (DatabaseError, asyncio.CancelledError) as exc:
            get_logger().warning(
                "lease_not_released",
                source=lease.source,
                kind=lease.kind,
                error=str(exc) or type(exc).__name__,
                free_in_s=self.ttl_seconds,
            )

    def _start_heartbeat(self) -> None:
        if self._beat is None or self._beat.done():
            self._beat = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _stop_heartbeat(self) -> None:
        beat, self._beat = self._beat, None
        if beat is not None and beat is not asyncio.current_task():
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    async def _heartbeat(self) -> None:
        while self._held:
            await asyncio.sleep(self.interval_seconds)
            await self.renew()

    async def renew(self) -> None:
        """Renew every lease held, in one statement; a lease not renewed is lost."""
        held = [x for x in self._held if x.lost is None]
        if not held:
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.interval_seconds), translated("renewing leases"):
                rows = await self._db.fetch(
                    RENEW,
                    self.holder,
                    self.ttl_seconds,
                    [x.source for x in held],
                    [x.kind for x in held],
                    [x.token for x in held],
                )
        except (DatabaseError, TimeoutError) as exc:
            get_logger().warning("lease_renewal_failed", error=str(exc) or "timed out")
            for lease in held:
                if time.monotonic() > lease.trusted_until:
                    self._lose(lease, f"not renewed for {self.ttl_seconds:g}s")
            return
        kept = {(r["source"], r["kind"]) for r in rows}
        for lease in held:
            if (lease.source, lease.kind) in kept:
                lease.trusted_until = started + self.ttl_seconds - self._margin_seconds
            else:
                self._lose(lease, "expired or taken over by another process")
        self.last_renewed = time.monotonic()

    def _lose(self, lease: Lease, why: str) -> None:
        lease.lost = LeaseLost(
            f"source {lease.source}: the {lease.kind} lease was lost ({why}); stopped, "
            "nothing more was committed"
        )
        get_logger().error("lease_lost", source=lease.source, kind=lease.kind, reason=why)
        cancel_for(lease.task, lease.lost)
