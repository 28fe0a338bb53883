"""The composition root: builds the application context and wires the activity subscribers."""

from __future__ import annotations

from pathlib import Path

from perkflow.core.clock import Clock, SystemClock
from perkflow.core.context import AppContext
from perkflow.core.db import Database
from perkflow.core.settings import Settings, get_settings


def import_all_tables() -> None:
    """Register every table on the shared metadata (migrations and schema checks need them all)."""
    import perkflow.activity.tables
    import perkflow.auth.tables
    import perkflow.events.tables
    import perkflow.ledger.tables
    import perkflow.members.tables
    import perkflow.programs.tables
    import perkflow.promotions.tables
    import perkflow.rewards.tables
    import perkflow.segments.tables
    import perkflow.sync.tables
    import perkflow.tiers.tables
    import perkflow.workflows.tables  # noqa: F401


def build_context(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    clock: Clock | None = None,
    pool: bool = True,
) -> AppContext:
    settings = settings or get_settings()
    if database_url is not None:
        settings = settings.model_copy(update={"database_url": database_url})
    import_all_tables()
    db = Database(settings.database_url, busy_timeout_s=settings.sqlite_busy_timeout_s, pool=pool)
    ctx = AppContext(settings=settings, db=db, clock=clock or SystemClock())
    from perkflow.sync.outbox import enqueue_activities

    ctx.subscribers.append(enqueue_activities)
    from perkflow.promotions.distribution import distribute_activities

    ctx.subscribers.append(distribute_activities)
    from perkflow.segments.evaluation import maintain_memberships

    ctx.subscribers.append(maintain_memberships)
    from perkflow.workflows.engine import run_workflows

    ctx.subscribers.append(run_workflows)
    return ctx


def migrations_path() -> Path:
    return Path(__file__).parent / "migrations"


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision`."""
    from alembic import command
    from alembic.config import Config

    from perkflow.core.db import normalize_url

    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)
