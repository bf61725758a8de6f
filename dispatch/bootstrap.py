"""Open the configured database, creating or upgrading it where that is safe.

The embedded SQLite default is created on first run, so a newcomer never has
to run `dispatch init` first. A server database (PostgreSQL) is shared by many
processes, so it is only ever migrated by an explicit `dispatch init`.
"""

from __future__ import annotations

import secrets

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from dispatch import db, taxonomy
from dispatch.config import Settings
from dispatch.errors import SchemaError
from dispatch.models import StoredSetting

SECRET_KEY_SETTING = "secret_key"


def init_database(engine: Engine) -> int:
    """Create or upgrade the schema and seed the regions; harmless to repeat.
    Returns how many regions were added."""
    db.upgrade(engine)
    with db.session_scope(engine) as session:
        return taxonomy.seed_regions(session)


def open_engine(settings: Settings) -> Engine:
    engine = db.create_engine(settings.database_url, pool_size=settings.db_pool_size,
                              statement_timeout=settings.db_statement_timeout)
    if db.is_current(engine):
        return engine
    if engine.dialect.name == "sqlite":
        init_database(engine)
        return engine
    current = db.current_revision(engine)
    state = "has no dispatch schema" if current is None else f"is at schema {current}"
    raise SchemaError(
        f"the database {engine.url.render_as_string(hide_password=True)} {state}; "
        f"run `dispatch init` to create or upgrade it (schema {db.head_revision(engine)})"
    )


def secret_key(engine: Engine, settings: Settings) -> str:
    """The key that signs subscribers' links: DISPATCH_SECRET_KEY if set,
    else one generated on first use and kept in the database, so that every
    process and every restart signs alike."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    with db.session_scope(engine) as session:
        stored = session.get(StoredSetting, SECRET_KEY_SETTING)
        if stored is not None:
            return stored.value
    try:
        with db.session_scope(engine) as session:
            session.add(StoredSetting(key=SECRET_KEY_SETTING, value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another process stored one first: use theirs
    with db.session_scope(engine) as session:
        return session.get(StoredSetting, SECRET_KEY_SETTING).value
