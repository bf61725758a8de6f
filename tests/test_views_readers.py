"""views.readers (plain queries over one JSON array of ids, enumerations read
as their stored strings) gives what views.recipient makes of the ORM rows,
on SQLite and PostgreSQL."""

from sqlmodel import select

from dispatch import db, sitreps, subscribers, views
from dispatch.models import Subscriber, SubscriberKind, SubscriberStatus
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES


def test_readers_are_the_recipients_the_orm_rows_make(engine):
    with db.session_scope(engine) as session:
        sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed")  # the analysts
        made = [
            subscribers.add_subscriber(session, "plain@example.org"),
            subscribers.add_subscriber(session, "chooses@example.org", prefs=Preferences(
                name="Zoë Núñez", regions=["americas", "Europe and Eurasia"], analysts=["Samir Haddad", "Dana Whitfield"],
                cadence="weekly", weekday="friday", send_at="18:30", timezone="Asia/Tokyo", format="text")),
            subscribers.add_subscriber(session, "C0DEMOASIA", kind=SubscriberKind.slack,
                                       prefs=Preferences(regions=["americas"])),
            subscribers.add_subscriber(session, "gone@example.org", status=SubscriberStatus.unsubscribed,
                                       prefs=Preferences(cadence="immediate", analysts=["Dana Whitfield"])),
            # the same choices as readers above, and nearly the same
            subscribers.add_subscriber(session, "americas@example.org", prefs=Preferences(regions=["americas"])),
            subscribers.add_subscriber(session, "plain2@example.org"),
            subscribers.add_subscriber(session, "americas-dana@example.org", prefs=Preferences(
                regions=["americas"], analysts=["Dana Whitfield"])),
        ]
        ids = [s.id for s in made]
    with db.session_scope(engine) as session:
        names = views.region_names(session)
        expected = {s.id: (s.status, views.recipient(s, names))
                    for s in session.exec(select(Subscriber).where(Subscriber.id.in_(ids))).all()}
        found = views.readers(session, [*ids, max(ids) + 1000])  # an id that is not there is left out
    assert found == expected
    assert {status for status, _ in found.values()} == {SubscriberStatus.active, SubscriberStatus.unsubscribed}
    assert all(type(status) is SubscriberStatus for status, _ in found.values())
    # Readers with the same choices share their sets and names (made once a batch).
    assert found[ids[4]][1].regions is found[ids[2]][1].regions
    assert found[ids[5]][1].region_names is found[ids[0]][1].region_names
    assert found[ids[6]][1].regions == found[ids[2]][1].regions and found[ids[6]][1].analysts != frozenset()
    chooses = found[ids[1]][1]
    assert (chooses.kind, chooses.cadence, chooses.format, chooses.weekday) == ("email", "weekly", "text", 4)
    assert chooses.analyst_names == ("Dana Whitfield", "Samir Haddad")
