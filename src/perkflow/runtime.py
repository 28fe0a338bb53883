"""Background work that runs beside the API in `perkflow serve` and alone in `perkflow worker`:
delivery to the connected platforms, and periodic jobs (settling points, purging delivered items,
resuming interrupted code generation, evaluating segments, date-triggered workflows and workflow runs
whose wait is over)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from perkflow.core.context import AppContext

log = logging.getLogger("perkflow.runtime")


@dataclass
class PeriodicTask:
    name: str
    interval_s: float
    run: Callable[[], object]
    next_run: float = field(default=0.0)


class BackgroundJobs:
    """Delivery threads plus one thread that runs each periodic task when it is due."""

    def __init__(self, ctx: AppContext, *, delivery_threads: int | None = None) -> None:
        from perkflow.ledger.service import settle_due_accounts
        from perkflow.promotions.service import resume_generation
        from perkflow.segments.runs import run_due
        from perkflow.sync.deliveries import purge_delivered
        from perkflow.sync.worker import DeliveryWorker
        from perkflow.workflows.scheduler import run_schedules

        self.ctx = ctx
        self._stop = threading.Event()
        self.tasks: list[PeriodicTask] = [
            PeriodicTask("settle points", ctx.settings.settle_interval_s, lambda: settle_due_accounts(ctx)),
            PeriodicTask("purge delivered outbox items", 3600.0, lambda: purge_delivered(ctx)),
            # Code generation jobs whose process died (or was stopped) are finished here.
            PeriodicTask("resume code generation", 5.0, lambda: resume_generation(ctx, stop=self._stop)),
            # Segment evaluations (new rules, time-relative rules, reconciliation) in bounded slices.
            PeriodicTask(
                "evaluate segments",
                ctx.settings.segment_jobs_interval_s,
                lambda: run_due(ctx, budget_s=ctx.settings.segment_jobs_interval_s),
            ),
            PeriodicTask(
                "workflow schedules", ctx.settings.workflow_schedule_interval_s, lambda: run_schedules(ctx)
            ),
        ]
        count = ctx.settings.delivery_threads if delivery_threads is None else delivery_threads
        self.workers = [DeliveryWorker(ctx) for _ in range(count)]
        self._threads: list[threading.Thread] = []

    def add(self, task: PeriodicTask) -> None:
        self.tasks.append(task)

    def start(self) -> None:
        if self._threads:
            return
        self._threads.append(threading.Thread(target=self._periodic, name="perkflow-jobs", daemon=True))
        for n, worker in enumerate(self.workers):
            self._threads.append(
                threading.Thread(target=worker.run, name=f"perkflow-delivery-{n}", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.stop()
        for thread in self._threads:
            thread.join(timeout)
        for worker in self.workers:
            worker.close()
        self._threads = []

    def run_forever(self) -> None:
        self.start()
        while not self._stop.is_set():
            self._stop.wait(0.5)
        self.stop()

    def request_stop(self) -> None:
        self._stop.set()

    def _periodic(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for task in self.tasks:
                if task.next_run <= now:
                    try:
                        task.run()
                    except Exception:
                        log.exception("background task %r failed; it will run again", task.name)
                    task.next_run = time.monotonic() + task.interval_s
            wait = min((t.next_run for t in self.tasks), default=1.0) - time.monotonic()
            self._stop.wait(max(0.05, min(wait, 1.0)))
