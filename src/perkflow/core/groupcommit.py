"""Group commit: concurrent small write requests applied by one writer thread in shared transactions.

SQLite has one writer at a time, so concurrent publications queue for the write lock anyway; each
then pays for a thread hop, a connection checkout, BEGIN IMMEDIATE, the lock hand-over and a commit.
Here the requests of one event loop are queued to a single writer thread that runs everything waiting
in one unit of work and commits once, and hands each caller its own result only after that commit.

A failing item must not fail the others, and the components of a unit of work (identity maps,
activity chains, id sequences) cannot be rewound to the middle of a transaction. So when an item
raises, the whole transaction is rolled back: the items before it are applied again as a batch, the
failing item is run on its own through `transactions.run` (exactly the path it would have taken
without batching, with its retries), and the items after it are tried as the next batch.
Whether a database benefits is decided in `Database.groups_commits`; elsewhere `run_write` is a
plain `transactions.run` in the thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork

log = logging.getLogger("perkflow.groupcommit")
T = TypeVar("T")
CACHE_KEY = "core.group_commit"


@dataclass(slots=True)
class Job:
    """One item: its work, and how its outcome reaches the caller. A job made by `run` / `run_many`
    resolves `future` on its event loop; any other job has `deliver` called on the writer thread."""

    work: Callable[[UnitOfWork], Any]
    deliver: Callable[[Job], None] | None = field(default=None, repr=False)
    future: asyncio.Future[Any] | None = field(default=None, repr=False)
    result: Any = None
    error: BaseException | None = None
    delivered: bool = False


def _settle(jobs: list[Job]) -> None:
    """On the caller's event loop: resolve the futures of jobs whose outcomes are known."""
    for job in jobs:
        future = job.future
        if future is None or future.done():  # the caller went away (cancelled)
            continue
        if job.error is not None:
            future.set_exception(job.error)
        else:
            future.set_result(job.result)


def _deliver(jobs: list[Job]) -> None:
    """Hand outcomes over, waking each event loop once for all of its jobs (each wake-up is a
    write to the loop's self-pipe, which per job cost as much as a publication's SQL)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
    for job in jobs:
        if job.delivered:
            continue
        job.delivered = True
        if job.future is not None:
            by_loop.setdefault(job.future.get_loop(), []).append(job)
        elif job.deliver is not None:
            job.deliver(job)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, settled)


class GroupCommitter:
    """One writer thread per application context; started on first use, stopped by `close`."""

    max_batch = 100

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._queue: deque[Job] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = True
        self._closed = False
        self._thread: threading.Thread | None = None
        # How many transactions committed batches, and how many items they carried (for tests and
        # for judging whether batching happens under a given load).
        self.batches = 0
        self.items = 0

    # -- submitting ---------------------------------------------------------------------------------

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs for the writer; each outcome is handed over (see `Job`) once it is durable or
        known to have failed, never before the commit."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the group committer is closed")
            self._queue.extend(jobs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="perkflow-group-commit", daemon=True)
                self._thread.start()
            if self._idle:
                self._wake.notify()

    async def run(self, work: Callable[[UnitOfWork], T]) -> T:
        """Run `work` in a shared write transaction and return its result after the commit."""
        return (await self.run_many([work]))[0]

    async def run_many(self, works: list[Callable[[UnitOfWork], Any]]) -> list[Any]:
        """Run several works queued together; raise the first failure after all have finished."""
        loop = asyncio.get_running_loop()
        jobs = [Job(work, future=loop.create_future()) for work in works]
        self.submit(jobs)
        results = await asyncio.gather(*(job.future for job in jobs if job.future), return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome
        return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)

    # -- the writer ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._idle = True
                    self._wake.wait()
                self._idle = False
                if not self._queue:  # closed and drained
                    return
                count = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
            try:
                self.apply(batch)
            except BaseException as exc:  # pragma: no cover - apply delivers every outcome itself
                log.exception("group commit failed", exc_info=exc)
                for job in batch:
                    if not job.delivered:
                        job.error = exc
                _deliver(batch)

    def apply(self, batch: list[Job]) -> None:
        """Apply `batch` as one transaction (see the module docstring for what happens on failure)
        and deliver every job's outcome. Runs on the writer thread; callable directly in tests."""
        while batch:
            failed_at = self._try_batch(batch)
            if failed_at is None:
                return
            done, failing, rest = batch[:failed_at], batch[failed_at], batch[failed_at + 1 :]
            if done:
                self.apply(done)
            self._alone(failing)
            batch = rest

    def _try_batch(self, batch: list[Job]) -> int | None:
        """None when the batch committed and was delivered, else the index of the item that raised."""
        if len(batch) == 1:
            self._alone(batch[0])
            return None
        results: list[Any] = []
        committed = False
        try:
            with self.ctx.uow(write=True) as uow:
                for index, job in enumerate(batch):
                    try:
                        results.append(job.work(uow))
                    except Exception:
                        return index
                uow.commit()
                committed = True
        except Exception as exc:
            if not committed:
                # BEGIN or COMMIT failed (busy, a constraint checked at commit): nothing was written;
                # each item then takes its own transaction with the usual retries.
                log.warning("a batch of %d could not commit (%s); applying one by one", len(batch), exc)
                for job in batch:
                    self._alone(job)
                return None
            # Committed, then an after-commit callback failed: the items are done and must not be
            # applied twice.
            log.exception("after-commit work of a batch failed", exc_info=exc)
        self.batches += 1
        self.items += len(batch)
        for job, result in zip(batch, results, strict=True):
            job.result = result
        _deliver(batch)
        return None

    def _alone(self, job: Job) -> None:
        try:
            job.result = transactions.run(self.ctx, job.work)
        except Exception as exc:
            job.error = exc
        else:
            self.batches += 1
            self.items += 1
        _deliver([job])


def committer(ctx: AppContext) -> GroupCommitter:
    with _create_lock:
        found = ctx.caches.get(CACHE_KEY)
        if found is None:
            found = ctx.caches[CACHE_KEY] = GroupCommitter(ctx)
        return found


_create_lock = threading.Lock()


async def run_write(ctx: AppContext, work: Callable[[UnitOfWork], T]) -> T:
    """Run a small write request: grouped with concurrent ones where the database gains from it,
    otherwise in its own transaction on the thread pool."""
    if ctx.db.groups_commits:
        return await committer(ctx).run(work)
    return await run_in_threadpool(transactions.run, ctx, work)
