"""The subscriber list as CSV, streamed: every column ``csv_import`` reads.

Lossless: status and kind are columns, Slack channels are rows like readers,
regions and analysts are written sorted, so `export → import into a fresh
database (with the same analysts) → export` gives the same file.

Constant memory at any size: readers are read by id in chunks of
``CHUNK_ROWS`` as plain Core rows (no ORM objects, no identity map growing
with the list), and each chunk is written out before the next is read.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dispatch import db
from dispatch.models import Analyst, Subscriber, SubscriberAnalyst, SubscriberKind, SubscriberRegion
from dispatch.subscribers import CSV_COLUMNS, LIST_SEPARATOR, WEEKDAYS, csv_cell

CHUNK_ROWS = 1000


def row_cells(*, address: str, name: str, regions: Iterable[str], analysts: Iterable[str], cadence: str,
              send_at: str, timezone: str, weekday: int, format: str, status: str, kind: str) -> list[str]:
    """One subscriber as the cells of CSV_COLUMNS, each guarded against formulas."""
    values = (address, name, LIST_SEPARATOR.join(sorted(regions)), LIST_SEPARATOR.join(sorted(analysts)),
              cadence, send_at, timezone, WEEKDAYS[weekday][:3], format, status, kind)
    return [csv_cell(value) for value in values]


def _value(enum_or_text) -> str:
    return getattr(enum_or_text, "value", enum_or_text)


def rows(engine: Engine, *, kind: SubscriberKind | None = None, chunk_rows: int = CHUNK_ROWS) -> Iterator[list[str]]:
    """Every subscriber (of ``kind``, if given) in id order, as CSV cells,
    read in chunks inside one read-only snapshot."""
    s, link_r, link_a = Subscriber.__table__.c, SubscriberRegion.__table__.c, SubscriberAnalyst.__table__.c
    columns = (s.id, s.address, s.name, s.cadence, s.send_at, s.timezone, s.weekday, s.format, s.status, s.kind)
    with db.read_scope(engine) as session:
        last = 0
        while True:
            query = sa.select(*columns).where(s.id > last).order_by(s.id).limit(chunk_rows)
            if kind is not None:
                query = query.where(s.kind == kind)
            chunk = session.execute(query).all()
            if not chunk:
                return
            ids = [row.id for row in chunk]
            regions: dict[int, list[str]] = defaultdict(list)
            for sid, slug in session.execute(sa.select(link_r.subscriber_id, link_r.region_slug)
                                             .where(link_r.subscriber_id.in_(ids))):
                regions[sid].append(slug)
            analysts: dict[int, list[str]] = defaultdict(list)
            a = Analyst.__table__.c
            for sid, name in session.execute(sa.select(link_a.subscriber_id, a.name)
                                             .join(Analyst.__table__, a.id == link_a.analyst_id)
                                             .where(link_a.subscriber_id.in_(ids))):
                analysts[sid].append(name)
            for row in chunk:
                yield row_cells(address=row.address, name=row.name, regions=regions[row.id],
                                analysts=analysts[row.id], cadence=_value(row.cadence), send_at=row.send_at,
                                timezone=row.timezone, weekday=row.weekday, format=_value(row.format),
                                status=_value(row.status), kind=_value(row.kind))
            last = ids[-1]


def text_chunks(cell_rows: Iterable[list[str]], *, chunk_rows: int = CHUNK_ROWS) -> Iterator[str]:
    """The header, then the rows as text, ``chunk_rows`` at a time (what a
    StreamingResponse or a file write takes)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for cells in cell_rows:
        writer.writerow(cells)
        count += 1
        if count % chunk_rows == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()
