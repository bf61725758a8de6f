"""Alembic environment: runs against the engine that dispatch.db hands over."""

from alembic import context
from sqlmodel import SQLModel

import dispatch.models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def render_item(type_, obj, autogen_context):
    # New migrations should spell plain SQLAlchemy types, so that they never
    # depend on the current dispatch.models module.
    from dispatch.models import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from dispatch.config import load_settings
        from dispatch.db import create_engine

        engine = create_engine(load_settings().database_url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=sqlite,
                compare_type=True,
                render_item=render_item,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _refuse_broken_references(connection)
            if connection.in_transaction():
                connection.commit()  # the pragma below is ignored inside a transaction
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)


def _sqlite_foreign_keys(connection, *, on: bool) -> None:
    """SQLite's own recipe for changing a table (create new, copy, drop old,
    rename) starts with foreign keys off: with them on, dropping the old
    table deletes every row that references it through ON DELETE CASCADE
    (a batch change to ``delivery`` emptied ``delivery_attempt``). The
    pragma is ignored inside a transaction, so it is set on the raw
    connection before Alembic begins one."""
    connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def _refuse_broken_references(connection) -> None:
    """With the checks off for the migration, check every reference once at
    its end, so a migration can never leave a dangling row behind."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left {len(broken)} rows referencing missing rows, e.g. {broken[0]}")


if context.is_offline_mode():
    raise SystemExit("dispatch runs its migrations online only: use `dispatch init`")
run_migrations_online()
