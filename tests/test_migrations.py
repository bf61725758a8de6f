"""Migrations on SQLite and PostgreSQL: from empty, repeated, down and up,
and in step with the models."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel, select

from dispatch import bootstrap, db
from dispatch.models import Region


def test_upgrade_from_empty_then_again_is_harmless(database_url):
    engine = db.create_engine(database_url)
    assert db.current_revision(engine) is None
    assert bootstrap.init_database(engine) == 7
    assert db.is_current(engine)
    assert bootstrap.init_database(engine) == 0  # second run: nothing to do
    with db.session_scope(engine) as session:
        assert len(session.exec(select(Region)).all()) == 7
    tables = set(sa.inspect(engine).get_table_names())
    assert {"sitrep", "subscriber", "delivery", "delivery_attempt", "alembic_version"} <= tables
    engine.dispose()


def test_downgrade_to_empty_and_up_again(database_url):
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    db.downgrade(engine, "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    assert db.is_current(engine)
    engine.dispose()


def test_migrations_match_the_models(database_url):
    """A model change without a migration fails here."""
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []
    engine.dispose()


def test_reseeding_keeps_an_edited_region_name(database_url):
    engine = db.create_engine(database_url)
    bootstrap.init_database(engine)
    with db.session_scope(engine) as session:
        session.get(Region, "americas").name = "The Americas"
    bootstrap.init_database(engine)
    with db.session_scope(engine) as session:
        assert session.get(Region, "americas").name == "The Americas"
    engine.dispose()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(sqlite_url):
    engine = db.create_engine(sqlite_url)
    with engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == db.SQLITE_BUSY_TIMEOUT_MS
        assert pragma("foreign_keys") == 1
    engine.dispose()


def test_server_database_is_not_migrated_implicitly(postgres_url):
    from dispatch.config import Settings
    from dispatch.errors import SchemaError

    import pytest
    with pytest.raises(SchemaError, match="run `dispatch init`"):
        bootstrap.open_engine(Settings(database_url=postgres_url))


def test_sqlite_database_is_created_on_first_use(sqlite_url):
    from dispatch.config import Settings

    engine = bootstrap.open_engine(Settings(database_url=sqlite_url))
    assert db.is_current(engine)
    engine.dispose()


def test_sqlite_migrations_leave_foreign_keys_on(tmp_path):
    """Migrations run with SQLite's foreign keys off (a table rebuild must not
    cascade into the rows that reference it); the connection goes back to the
    pool with them on, or every later ON DELETE CASCADE silently stops."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'fk.db'}", pool_size=1)
    db.upgrade(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
