"""Open the configured database, creating or upgrading it where that is safe.

The embedded SQLite default is created on first run, so a newcomer never has
to run `dispatch init` first. A server database (PostgreSQL) is shared by many
processes, so it is only ever migrated by an explicit `dispatch init`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from dispatch.desk import audit as _audit  # noqa: F401 (registers the audit log's flush hook)
from dispatch import db, taxonomy
from dispatch.events import emit as _events  # noqa: F401 - its session hooks emit status-change events
from dispatch.config import Settings
from dispatch.errors import SchemaError, SettingsError
from dispatch.models import StoredSetting

SECRET_KEY_SETTING = "secret_key"
INSTALLATION_SETTING = "installation_id"


def init_database(engine: Engine) -> int:
    """Create or upgrade the schema and seed the regions; harmless to repeat.
    Returns how many regions were added."""
    db.upgrade(engine)
    with db.session_scope(engine) as session:
        return taxonomy.seed_regions(session)


def open_engine(settings: Settings) -> Engine:
    engine = db.configured_engine(settings)
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


KEY_FILE_MAX_BYTES = 4096


@dataclass(frozen=True)
class KeySource:
    """Where the link- and session-signing key comes from, for ``dispatch config``."""

    kind: str  # environment | file | database
    path: Path | None = None

    def describe(self) -> str:
        if self.kind == "environment":
            return "DISPATCH_SECRET_KEY"
        if self.kind == "file":
            return f"the file {self.path} (owner-only, 0600)"
        return "the database (PostgreSQL: shared by every process that uses it)"


def key_source(engine: Engine, settings: Settings) -> KeySource:
    """DISPATCH_SECRET_KEY if set; else DISPATCH_SECRET_KEY_FILE; else, on
    SQLite, a file beside the database (``subscribers.db.key``), so that
    whoever can read the database cannot forge links or admin sessions with
    it; else (PostgreSQL, many hosts) the database, guarded by its credentials."""
    if settings.secret_key is not None:
        return KeySource("environment")
    if settings.secret_key_file is not None:
        return KeySource("file", settings.secret_key_file.expanduser())
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return KeySource("file", Path(database).expanduser().with_name(Path(database).name + ".key"))
    return KeySource("database")


def secret_key(engine: Engine, settings: Settings) -> str:
    """The key that signs subscribers' links and admin sessions: the same in
    every process and after every restart (see ``key_source``)."""
    source = key_source(engine, settings)
    if source.kind == "environment":
        return settings.secret_key.get_secret_value()
    if source.kind == "file":
        return _key_from_file(engine, source.path)
    return _key_from_database(engine)


def _key_from_file(engine: Engine, path: Path) -> str:
    if not path.exists():
        # An installation that kept its key in the database moves it here,
        # so that links already sent keep working.
        with db.session_scope(engine) as session:
            stored = session.get(StoredSetting, SECRET_KEY_SETTING)
            key = stored.value if stored is not None else secrets.token_urlsafe(32)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process wrote it first: use theirs
            else:
                with os.fdopen(fd, "w") as file:
                    file.write(key + "\n")
            if stored is not None:
                session.delete(stored)
    with path.open("rb") as file:
        data = file.read(KEY_FILE_MAX_BYTES + 1)
    key = data.decode("utf-8", "replace").strip()
    if len(data) > KEY_FILE_MAX_BYTES or len(key) < 16:
        raise SettingsError(f"the secret key file {path} must hold one key of 16 to {KEY_FILE_MAX_BYTES} characters")
    return key


def _key_from_database(engine: Engine) -> str:
    return _stored_once(engine, SECRET_KEY_SETTING, lambda: secrets.token_urlsafe(32))


def installation_id(engine: Engine) -> str:
    """A random part made once per database and kept in it: every Message-ID
    carries it, so a new database never reuses an old one's ids. Not a
    secret (it is in every message), only unique."""
    return _stored_once(engine, INSTALLATION_SETTING, lambda: secrets.token_hex(6))


def _stored_once(engine: Engine, key: str, make) -> str:
    with db.read_scope(engine) as session:  # almost always there: no write lock to wait for
        stored = session.get(StoredSetting, key)
        if stored is not None:
            return stored.value
    try:
        with db.session_scope(engine) as session:
            session.add(StoredSetting(key=key, value=make()))
    except IntegrityError:
        pass  # another process stored one first: use theirs
    with db.session_scope(engine) as session:
        return session.get(StoredSetting, key).value
