"""The application context: the composition root's product, handed to everything that needs I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from perkflow.core.clock import Clock
from perkflow.core.db import Database
from perkflow.core.settings import Settings
from perkflow.core.uow import UnitOfWork

if TYPE_CHECKING:
    from perkflow.activity.stream import Activity

# A subscriber sees every activity recorded in a unit of work, before it commits.
ActivitySubscriber = Callable[[UnitOfWork, "list[Activity]"], None]


@dataclass
class AppContext:
    settings: Settings
    db: Database
    clock: Clock
    subscribers: list[ActivitySubscriber] = field(default_factory=list)
    # Process-wide caches owned by domain modules (keyed by the owning module's name).
    caches: dict[str, Any] = field(default_factory=dict)

    def uow(self, *, write: bool = True, bulk: bool = False) -> UnitOfWork:
        return UnitOfWork(self, write=write, bulk=bulk)

    def close(self) -> None:
        # Caches that own a thread (the group committer) stop it before the engine goes away.
        for cache in list(self.caches.values()):
            closer = getattr(cache, "close", None)
            if callable(closer):
                closer()
        self.db.dispose()
