"""Column types shared by dispatch.models and the Core table definitions
of dispatch.read_tables: SQLAlchemy only, no SQLModel, so that a command
that only reads need not import the models (issue 14)."""

from datetime import datetime, timezone
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend.

    SQLite keeps no offset, so values are stored as naive UTC and come back
    tagged as UTC; PostgreSQL stores timestamptz.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: dispatch stores only aware datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    # The same few instants are written and read thousands of times (every
    # row of a planning pass carries the same ``now``; readers in one time
    # zone share their cursors), and each conversion costs microseconds of
    # parsing or formatting: remember the latest ones, per column and dialect.
    def bind_processor(self, dialect):
        return _remembered(super().bind_processor(dialect))

    def result_processor(self, dialect, coltype):
        return _remembered(super().result_processor(dialect, coltype))


REMEMBERED_INSTANTS = 256  # per column and dialect: a few kB each


def _remembered(process):
    """``process`` with its latest results remembered. Equal aware datetimes
    are the same instant, and every conversion here depends on the instant
    alone, so sharing a result between them is exact."""
    return lru_cache(maxsize=REMEMBERED_INSTANTS)(process) if process is not None else None
