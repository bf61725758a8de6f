import pytest
from sqlmodel import select

from dispatch import csv_import, sitreps, subscribers
from dispatch.errors import DuplicateError, FieldError, InputError, NotFoundError
from dispatch.models import Cadence, MailFormat, Subscriber, SubscriberKind, SubscriberStatus
from dispatch.sitrep_text import parse
from dispatch.subscribers import Preferences

from .conftest import FIXTURES


def count(session) -> int:
    return len(session.exec(select(Subscriber)).all())


@pytest.fixture
def with_analysts(session):
    sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text()), actor="ed")
    return session


# --- field checks (no database) ---------------------------------------------

@pytest.mark.parametrize("value", ["not-an-email", "a@b", "x@@example.org", "a b@example.org",
                                   "evil@example.org\r\nBcc: x@example.org"])
def test_invalid_email_addresses(value):
    with pytest.raises(FieldError) as caught:
        subscribers.check_email(value)
    assert caught.value.field == "email"


def test_email_is_normalised():
    assert subscribers.check_email(" Reader@Example.ORG ") == "Reader@example.org"


def test_unknown_time_zone_suggests_close_names():
    with pytest.raises(FieldError, match=r"tz: unknown time zone 'London'; did you mean Europe/London"):
        subscribers.check_timezone("London")
    with pytest.raises(FieldError, match="IANA name"):
        subscribers.check_timezone("Mars/Olympus")
    assert subscribers.check_timezone("America/New_York") == "America/New_York"


@pytest.mark.parametrize("value, expected", [("7:05", "07:05"), ("23:59", "23:59"), ("00:00", "00:00")])
def test_send_at(value, expected):
    assert subscribers.check_send_at(value) == expected


@pytest.mark.parametrize("value", ["24:00", "7", "07:60", "seven", "7:5"])
def test_send_at_rejects(value):
    with pytest.raises(FieldError, match="HH:MM"):
        subscribers.check_send_at(value)


@pytest.mark.parametrize("value, expected", [("mon", 0), ("Sunday", 6), ("4", 4), ("wed", 2)])
def test_weekday(value, expected):
    assert subscribers.check_weekday(value) == expected


@pytest.mark.parametrize("value", ["C0123ABCD", "https://hooks.slack.com/services/T1/B2/xyz",
                                   "https://hooks.slack-gov.com/services/T1/B2/xyz"])
def test_slack_addresses(value):
    assert subscribers.check_slack_address(value) == value


@pytest.mark.parametrize("value, hosts, problem", [
    ("http://127.0.0.1:9999/webhook/abc", (), "127.0.0.1 is not a Slack webhook host"),
    ("https://internal.example.org/hook", (), "internal.example.org is not a Slack webhook host"),
    ("https://169.254.169.254/latest/meta-data", (), "169.254.169.254 is not a Slack webhook host"),
    ("http://hooks.slack.com/services/T1/B2/xyz", (), "must be https"),
    ("http://hooks.example.org/x", ("hooks.example.org",), "must be https"),
    ("https://u:p@hooks.slack.com/services/T1/B2/xyz", (), "user name or password"),
    ("https://hooks.slack.com:x/services", (), "not a URL"),
    ("https://hooks.slack.com/a b", (), "spaces"),
])
def test_webhook_urls_only_on_slack_or_listed_hosts(value, hosts, problem):
    with pytest.raises(FieldError, match=problem) as caught:
        subscribers.check_slack_address(value, webhook_hosts=hosts)
    assert caught.value.field == "channel"


@pytest.mark.parametrize("value, hosts", [
    ("http://127.0.0.1:9999/webhook/abc", ("127.0.0.1",)),  # the local sink, once listed (and loopback allowed)
    ("http://localhost:8026/webhook/abc", ("localhost",)),
    ("https://hooks.example.org/x", ("hooks.example.org",)),
])
def test_listed_webhook_hosts_are_accepted(value, hosts):
    assert subscribers.check_slack_address(value, webhook_hosts=hosts,
                                           private_networks=("127.0.0.0/8", "::1/128")) == value


@pytest.mark.parametrize("value", ["#general", "general", "http://hooks.example.com/x", "ftp://x"])
def test_slack_addresses_rejected(value):
    with pytest.raises(FieldError, match="channel ID"):
        subscribers.check_slack_address(value)


# --- stored subscribers (SQLite and PostgreSQL) -------------------------------

def test_add_with_preferences(with_analysts):
    session = with_analysts
    s = subscribers.add_subscriber(session, "reader@example.org", prefs=Preferences(
        name="Reader", regions=["americas", "Europe and Eurasia"], analysts=["Dana Whitfield", "samir-haddad"],
        cadence="weekly", send_at="6:45", timezone="Europe/London", weekday="fri", format="text"))
    assert s.status == SubscriberStatus.active and s.confirmed_at is not None
    assert [r.slug for r in s.regions] == ["americas", "europe-eurasia"]
    assert [a.slug for a in s.analysts] == ["dana-whitfield", "samir-haddad"]
    assert (s.cadence, s.send_at, s.timezone, s.weekday, s.format) == (
        Cadence.weekly, "06:45", "Europe/London", 4, MailFormat.text)


def test_analyst_by_name_with_rank(with_analysts):
    s = subscribers.add_subscriber(with_analysts, "r@example.org",
                                   prefs=Preferences(analysts=["Colonel Dana Whitfield"]))
    assert [a.name for a in s.analysts] == ["Dana Whitfield"]


@pytest.mark.parametrize("prefs, message", [
    (Preferences(regions=["narnia"]), "region: unknown region 'narnia'; allowed: americas"),
    (Preferences(analysts=["Nobody Known"]), "analyst: unknown analyst 'Nobody Known'; known: Dana Whitfield"),
    (Preferences(cadence="hourly"), "cadence: 'hourly' is not one of immediate|daily|weekly"),
    (Preferences(format="pdf"), "format: 'pdf' is not one of html|text"),
    (Preferences(timezone="Nowhere/Town"), "tz: unknown time zone"),
    (Preferences(send_at="25:00"), "at: '25:00' is not a time of day"),
])
def test_bad_preferences_write_nothing(with_analysts, prefs, message):
    session = with_analysts
    with pytest.raises(FieldError) as caught:
        subscribers.add_subscriber(session, "r@example.org", prefs=prefs)
    assert str(caught.value).startswith(message)
    session.rollback()
    assert count(session) == 0


def test_duplicate_address(session):
    subscribers.add_subscriber(session, "r@example.org")
    with pytest.raises(DuplicateError, match="already subscribed"):
        subscribers.add_subscriber(session, "r@example.org")


def test_edit_keeps_unmentioned_fields_and_validates_first(with_analysts):
    session = with_analysts
    s = subscribers.add_subscriber(session, "r@example.org", prefs=Preferences(regions=["americas"], send_at="07:00"))
    with pytest.raises(FieldError):
        subscribers.edit_subscriber(session, "r@example.org", Preferences(send_at="08:00", timezone="Bad/Zone"))
    assert s.send_at == "07:00"  # nothing written when one field is bad
    subscribers.edit_subscriber(session, s.id, Preferences(send_at="08:15"), status=SubscriberStatus.disabled)
    assert (s.send_at, [r.slug for r in s.regions], s.status) == ("08:15", ["americas"], SubscriberStatus.disabled)


def test_get_by_id_or_address_and_remove(session):
    s = subscribers.add_subscriber(session, "r@example.org")
    assert subscribers.get(session, str(s.id)) is s
    assert subscribers.get(session, "R@example.org") is s
    subscribers.remove_subscriber(session, s.id)
    with pytest.raises(NotFoundError):
        subscribers.get(session, s.id)


def test_list_by_region_counts_all_region_subscribers(session):
    subscribers.add_subscriber(session, "a@example.org", prefs=Preferences(regions=["americas"]))
    subscribers.add_subscriber(session, "e@example.org", prefs=Preferences(regions=["europe-eurasia"]))
    subscribers.add_subscriber(session, "all@example.org")
    subscribers.add_subscriber(session, "C0123ABCD", kind=SubscriberKind.slack)
    found = [s.address for s in subscribers.list_subscribers(session, region="americas", kind=SubscriberKind.email)]
    assert found == ["a@example.org", "all@example.org"]


CSV_TEXT = """email,name,regions,analysts,cadence,at,tz,format,notes
good@example.org,Good One,americas;europe-eurasia,Dana Whitfield,daily,06:30,America/New_York,html,x
bad-address,Bad,,,,,,,
zone@example.org,Zone,,,,07:00,Mars/Base,,
region@example.org,Region,atlantis,,,,,,
plain@example.org,,,,weekly,,,text,
good@example.org,Again,,,,,,,
"""


def test_csv_import_reports_bad_rows_and_keeps_good_ones(with_analysts, engine):
    session = with_analysts
    session.commit()  # the importer works in transactions of its own
    report = csv_import.import_csv(engine, CSV_TEXT)
    assert [address for _, address in report.added] == ["good@example.org", "plain@example.org"]
    assert report.added[0][0] == 2
    assert report.already_there == [(7, "good@example.org")]
    assert [(line, reason.split(":")[0]) for line, reason in report.rejected] == [
        (3, "email"), (4, "tz"), (5, "region")]
    assert report.ignored_columns == ["notes"]
    assert count(session) == 2


def test_csv_without_email_column(engine):
    with pytest.raises(InputError, match="'email' column"):
        csv_import.import_csv(engine, "name,regions\nX,americas\n")


def test_csv_export_imports_back_unchanged(with_analysts, engine):
    session = with_analysts
    session.commit()
    csv_import.import_csv(engine, CSV_TEXT)
    exported = subscribers.export_csv(subscribers.list_subscribers(session))
    # Into a fresh database with the same analysts: same rows, same export.
    for s in subscribers.list_subscribers(session):
        subscribers.remove_subscriber(session, s.id)
    session.commit()
    report = csv_import.import_csv(engine, exported)
    assert report.rejected == [] and len(report.added) == 2
    assert subscribers.export_csv(subscribers.list_subscribers(session)) == exported
    assert exported.splitlines()[1] == (
        "good@example.org,Good One,americas;europe-eurasia,Dana Whitfield,daily,06:30,America/New_York,mon,html,"
        "active,email")


def test_the_plain_query_reader_loader_gives_what_the_orm_gives(session):
    """Sending reads readers with plain queries; they must be the very values
    the ORM-based ``views.recipient`` makes."""
    from sqlalchemy.orm import selectinload

    from dispatch import views

    sitreps.import_parsed(session, parse((FIXTURES / "standard.txt").read_text("utf-8")), actor="t")
    made = [
        subscribers.add_subscriber(session, "a@example.org", prefs=Preferences(
            name="Ana", regions=["europe-eurasia", "americas"], analysts=["Samir Haddad", "Dana Whitfield"],
            cadence="weekly", weekday="fri", timezone="Asia/Tokyo", send_at="06:45", format="text")),
        subscribers.add_subscriber(session, "b@example.org", status=SubscriberStatus.pending),
        subscribers.add_subscriber(session, "C0123ABCD", kind=SubscriberKind.slack),
    ]
    loaded = views.readers(session, [s.id for s in made] + [9999])
    names = views.region_names(session)
    session.expire_all()
    for subscriber in session.exec(select(Subscriber).options(
            selectinload(Subscriber.regions), selectinload(Subscriber.analysts))).all():
        assert loaded[subscriber.id] == (subscriber.status, views.recipient(subscriber, names))
    assert 9999 not in loaded
    assert loaded[made[0].id][1].analyst_names == ("Dana Whitfield", "Samir Haddad")


def test_an_admin_cannot_reactivate_a_reader_who_opted_out_without_force(session):
    from dispatch import signup
    from dispatch.errors import WorkflowError

    reader = subscribers.add_subscriber(session, "optout@example.org")
    signup.unsubscribe(session, reader, how="one-click")
    with pytest.raises(WorkflowError, match="unsubscribed themselves"):
        subscribers.edit_subscriber(session, "optout@example.org", Preferences(), status=SubscriberStatus.active)
    assert reader.status == SubscriberStatus.unsubscribed
    subscribers.edit_subscriber(session, "optout@example.org", Preferences(), status=SubscriberStatus.disabled)  # allowed
    edited = subscribers.edit_subscriber(session, "optout@example.org", Preferences(), status=SubscriberStatus.active, force=True)
    assert edited.status == SubscriberStatus.active


def test_a_blank_region_filter_is_no_filter(session):
    subscribers.add_subscriber(session, "anyone@example.org")
    assert [s.address for s in subscribers.list_subscribers(session, region=" ")] == ["anyone@example.org"]
