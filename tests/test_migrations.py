"""The Alembic migrations create exactly the schema the table definitions describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from perkflow.bootstrap import import_all_tables
from perkflow.core.db import normalize_url
from perkflow.core.schema import metadata


def test_migrations_match_the_models(database_url: str) -> None:
    import_all_tables()
    engine = create_engine(normalize_url(database_url))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []
