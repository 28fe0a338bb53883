"""Test fixtures: storage tests run on SQLite and, with PERKFLOW_TEST_POSTGRES_URL set, on PostgreSQL."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings
from sqlalchemy import create_engine, text

from perkflow.bootstrap import build_context, import_all_tables, upgrade_database
from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.core.db import normalize_url
from perkflow.core.settings import Settings

PG_URL = os.environ.get("PERKFLOW_TEST_POSTGRES_URL")

# CI must be reproducible: there Hypothesis explores a fixed set of examples; locally it varies.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
BACKENDS = ["sqlite", "postgres"] if PG_URL else ["sqlite"]
START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_database(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL test database, migrated once; unreachable means the run fails, never skips."""
    assert PG_URL, "PERKFLOW_TEST_POSTGRES_URL is not set"
    engine = create_engine(normalize_url(PG_URL))
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    except Exception as exc:  # pragma: no cover - CI must see this
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    finally:
        engine.dispose()
    upgrade_database(PG_URL)
    return PG_URL


def _truncate_postgres(url: str) -> None:
    import_all_tables()
    from perkflow.core.schema import metadata

    engine = create_engine(normalize_url(url))
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        conn.execute(text("ALTER SEQUENCE activity_seq RESTART WITH 1"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "perkflow.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings of the test: its database, and an instance key of its own (never ./var)."""
    return Settings(database_url=database_url, secret_key_file=tmp_path / "secret.key")


@pytest.fixture
def ctx(settings: Settings, clock: ManualClock) -> Iterator[AppContext]:
    context = build_context(settings, clock=clock)
    yield context
    context.close()


@pytest.fixture
def admin_key(ctx: AppContext) -> str:
    from perkflow.auth.service import create_api_key
    from perkflow.core import transactions

    return transactions.run(ctx, lambda uow: create_api_key(uow, "tests", ["admin"]))[1]


@pytest.fixture
def api(ctx: AppContext, admin_key: str) -> Iterator[TestClient]:
    """An HTTP client for the API (in-process ASGI), authenticated as admin."""
    from perkflow.api.app import create_app

    with TestClient(create_app(ctx), headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield client


@pytest.fixture
def demo(ctx: AppContext) -> AppContext:
    """The demo program installed (tiers Bronze 0 / Silver 10 / Gold 50 / Platinum 100)."""
    from perkflow.core import transactions
    from perkflow.demo.program import install_demo_program

    transactions.run(ctx, install_demo_program)
    return ctx


def key_with(ctx: AppContext, *scopes: str) -> str:
    from perkflow.auth.service import create_api_key
    from perkflow.core import transactions

    return transactions.run(ctx, lambda uow: create_api_key(uow, "scoped", list(scopes)))[1]


def event(customer: str, action: str, **data: Any) -> dict[str, Any]:
    return {"customer": customer, "action": action, "data": data}
