"""The unit of work: one database transaction shared by every service call of a request.

Services never commit. They write through the unit of work, and components attached to it
(repositories, the activity log) buffer hot-path writes and flush them in bulk just before the
single commit, so that a state change, its activity record and the work items it causes always
land together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Connection

from perkflow.core.clock import TimeFormats
from perkflow.core.gcpause import gc_paused

if TYPE_CHECKING:
    from perkflow.core.context import AppContext


class Component(Protocol):
    """Something attached to a unit of work that may hold buffered writes."""

    def before_commit(self) -> bool:
        """Run pre-commit work; return True if it produced work another pass should see."""
        ...

    def flush(self) -> None: ...


C = TypeVar("C", bound=Component)


class UnitOfWork:
    def __init__(self, ctx: AppContext, *, write: bool = True, bulk: bool = False) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.write = write
        self.now: datetime = ctx.clock.now()
        self.times = TimeFormats()
        self._components: dict[type[Any], Component] = {}
        self._after_commit: list[Callable[[], None]] = []
        self._on_commit: list[Callable[[], None]] = []
        self._committed = False
        self._conn_cm: Any = None
        # Bulk units of work pause the cyclic garbage collector (see perkflow.core.gcpause).
        self._gc_pause = gc_paused() if bulk else None
        self.conn: Connection

    def __enter__(self) -> UnitOfWork:
        if self._gc_pause is not None:
            self._gc_pause.__enter__()
        self._conn_cm = self.db.connect(write=self.write, long=self._gc_pause is not None)
        self.conn = self._conn_cm.__enter__()
        self.conn.begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed and self.conn.in_transaction():
                self.conn.rollback()
        finally:
            self._conn_cm.__exit__(exc_type, exc, tb)
            # Components point back at the unit of work; dropping them breaks that cycle, so a
            # batch's buffered rows and aggregates are freed by reference counting now instead of
            # being scanned (and then freed) by the cyclic collector when it comes back.
            self._components.clear()
            if self._gc_pause is not None:
                self._gc_pause.__exit__(None, None, None)
        if self._committed:
            for callback in self._after_commit:
                callback()

    def component(self, cls: type[C]) -> C:
        """The unit of work's single instance of a component, created on first use."""
        found = self._components.get(cls)
        if found is None:
            found = cls(self)  # type: ignore[call-arg]
            self._components[cls] = found
        return found  # type: ignore[return-value]

    def has_component(self, cls: type[Any]) -> bool:
        return cls in self._components

    def flush(self) -> None:
        for component in list(self._components.values()):
            component.flush()

    def commit(self) -> None:
        if not self.write:
            raise RuntimeError("a read-only unit of work cannot commit")
        # Components may create work for each other (an activity triggers an outbox item, a workflow
        # records another activity); loop until a pass produces nothing new.
        for _ in range(100):
            produced = [c.before_commit() for c in list(self._components.values())]  # every one must run
            if not any(produced):
                break
        else:  # pragma: no cover - a subscriber loop is a bug
            raise RuntimeError("activity subscribers did not settle after 100 passes")
        self.flush()
        self.conn.commit()
        self.db.note_commit()
        self._committed = True
        for callback in self._on_commit:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the unit of work has committed and released its connection."""
        self._after_commit.append(callback)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` right after the commit, while this process still holds the SQLite write
        lock (process caches that must not interleave with another writer are updated there)."""
        self._on_commit.append(callback)
