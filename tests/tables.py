"""Every table as plain rows, to show that a refused input left the database as it was."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import SQLModel

import dispatch.models  # noqa: F401  (registers the tables)
from dispatch import db

# Touched by every authenticated request, whatever it asks for.
VOLATILE = {("api_token", "last_used_at"), ("admin_user", "last_login_at")}


def dump(engine) -> dict[str, list[tuple]]:
    tables = {}
    # Read-only: on SQLite it does not wait for (or take) the write lock.
    with engine.execution_options(**{db.READ_ONLY_OPTION: True}).connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            columns = [c for c in table.columns if (table.name, c.name) not in VOLATILE]
            order = list(table.primary_key.columns) or columns
            rows = connection.execute(sa.select(*columns).order_by(*order)).all()
            tables[table.name] = [tuple(row) for row in rows]
    return tables
