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
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            render_item=render_item,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("dispatch runs its migrations online only: use `dispatch init`")
run_migrations_online()
