"""Core definitions of the columns the quick read commands use (`dispatch
sitrep list`, `regions`, `analysts`), without SQLModel or the ORM.

Importing dispatch.models costs SQLModel, pydantic models and the mappers:
about 0.35 s, more than such a command's whole budget beside SQLAlchemy
itself (issue 14: ≤ 0.8 s). Only the columns read are named, with the
models' own types where a value is converted (dates, instants);
tests/test_read_tables.py holds each one to the column of dispatch.models
it stands for.
"""

import sqlalchemy as sa

from dispatch.coltypes import UTCDateTime

sitrep = sa.table(
    "sitrep",
    sa.column("id", sa.Integer),
    sa.column("title", sa.String),
    sa.column("event_date", sa.Date),
    sa.column("status", sa.String),  # a SitrepStatus value
    sa.column("approved_at", UTCDateTime),
    sa.column("approved_by", sa.String),
    sa.column("priority", sa.Integer),
    sa.column("flash", sa.Boolean),
    sa.column("source_text", sa.Text),
)

sitrep_region = sa.table("sitrep_region", sa.column("sitrep_id", sa.Integer), sa.column("region_slug", sa.String))

region = sa.table("region", sa.column("slug", sa.String), sa.column("name", sa.String))

analyst = sa.table("analyst", sa.column("id", sa.Integer), sa.column("name", sa.String),
                   sa.column("title", sa.String), sa.column("slug", sa.String))
