"""Alembic environment: migrations are generated from the tables registered on perkflow's metadata."""

from __future__ import annotations

import logging

from alembic import context
from sqlalchemy import create_engine, pool

from perkflow.bootstrap import import_all_tables
from perkflow.core.schema import metadata

import_all_tables()
config = context.config
if config.attributes.get("configure_logger", True) and config.config_file_name:
    logging.basicConfig(level=logging.WARNING)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
