"""Migration 0016 (event webhooks) rebuilds the delivery table on SQLite:
the delivery log (delivery_attempt, which cascades from delivery) survives
it on both backends, and so do the deliveries."""

from __future__ import annotations

import sqlalchemy as sa

from dispatch import db


def test_the_delivery_log_survives_the_upgrade_and_the_downgrade(database_url):
    engine = db.create_engine(database_url)
    db.upgrade(engine, "0011")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO subscriber (id, kind, address, address_key, name, timezone, send_at, cadence, weekday, "
            "format, status, bounce_count, created_at) VALUES (1, 'email', 'a@example.org', 'a@example.org', '', "
            "'UTC', '07:00', 'daily', 0, 'html', 'active', 0, '2026-01-01 00:00:00')"))
        for id_ in (1, 2):
            connection.execute(sa.text(
                "INSERT INTO delivery (id, subscriber_id, window_key, sitrep_ids, status, attempts, created_at) "
                "VALUES (:id, 1, :w, '[]', 'sent', 1, '2026-01-01 00:00:00')"), {"id": id_, "w": f"daily:{id_}"})
            connection.execute(sa.text("INSERT INTO delivery_attempt (delivery_id, at, outcome, detail) "
                                       "VALUES (:d, '2026-01-01 00:00:00', 'sent', 'ok')"), {"d": id_})

    def state():
        with engine.connect() as connection:
            return (connection.execute(sa.text("SELECT id, window_key FROM delivery ORDER BY id")).all(),
                    connection.execute(sa.text("SELECT delivery_id, detail FROM delivery_attempt ORDER BY id")).all())

    before = state()
    db.upgrade(engine, "0016")
    assert state() == before and len(before[1]) == 2
    db.downgrade(engine, "0011")
    assert state() == before
    engine.dispose()
