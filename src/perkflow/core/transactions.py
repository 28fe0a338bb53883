"""Running a unit of work with retries for the transient failures concurrent writers cause."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from perkflow.core.context import AppContext
from perkflow.core.db import DatabaseBusy
from perkflow.core.errors import Conflict
from perkflow.core.uow import UnitOfWork

T = TypeVar("T")

# PostgreSQL: deadlock detected, serialization failure, lock not available.
RETRYABLE_SQLSTATES = {"40P01", "40001", "55P03"}


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_transient(exc: DBAPIError) -> bool:
    if _sqlstate(exc) in RETRYABLE_SQLSTATES:
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message


def run(
    ctx: AppContext,
    work: Callable[[UnitOfWork], T],
    *,
    write: bool = True,
    attempts: int = 4,
    bulk: bool = False,
) -> T:
    """Run `work` in a unit of work and commit; retry deadlocks, lock timeouts and lost races.

    A unique-key race (two requests inserting the same idempotency key at once on PostgreSQL) is
    retried too: on the next attempt the winner's row is visible and the request becomes a replay.
    """
    for attempt in range(attempts):
        try:
            with ctx.uow(write=write, bulk=bulk) as uow:
                result = work(uow)
                if write:
                    uow.commit()
                return result
        except IntegrityError as exc:
            if attempt == attempts - 1:
                raise Conflict(
                    "a concurrent request changed the same data; retry the request", code="concurrent_update"
                ) from exc
        except (OperationalError, DBAPIError) as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts - 1:
                raise DatabaseBusy("the database stayed busy; retry the request") from exc
        time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover
