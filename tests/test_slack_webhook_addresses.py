"""A Slack webhook URL is refused when it is stored, not only when it is
posted to, if its host is a private, loopback, link-local (cloud metadata)
or otherwise non-public address, unless DISPATCH_OUTBOUND_PRIVATE_NETWORKS
lists its network: the check event webhooks get, with their message, at
every entry point (the CLI, the admin form, the API, a CSV import on the
CLI and the pages; SQLite and PostgreSQL). Hosts are checked first, so
only Slack's and listed hosts are ever looked up."""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlmodel import select

from dispatch import admins, csv_import, db, outbound, slack_webhooks, subscribers
from dispatch.errors import FieldError
from dispatch.events import endpoints
from dispatch.models import Subscriber, SubscriberKind

from .test_outbound import REFUSED

METADATA = "https://169.254.169.254/latest/meta-data/"


def _event_webhook_problem(url: str, private_networks=()) -> str:
    with pytest.raises(FieldError) as refused:
        endpoints.add(None, url, events=["subscriber.created"], private_networks=private_networks)
    return refused.value.reason.split(": ", 1)[1]


@pytest.mark.parametrize("url", [u.replace("http://", "https://") for u in REFUSED])
def test_each_address_an_event_webhook_may_not_have_is_refused_with_its_message(url):
    hosts = (url.split("/")[2].strip("[]").split("]")[0],) if "[" in url else (url.split("/")[2].split(":")[0],)
    with pytest.raises(FieldError) as refused:
        subscribers.check_slack_address(url, webhook_hosts=hosts)
    assert refused.value.field == "channel"
    assert refused.value.reason.endswith(_event_webhook_problem(url)), refused.value.reason
    assert "DISPATCH_OUTBOUND_PRIVATE_NETWORKS" in refused.value.reason


def test_a_listed_network_lets_its_addresses_be_stored():
    listed = ("169.254.169.254",)
    assert subscribers.check_slack_address(METADATA, webhook_hosts=listed,
                                           private_networks=("169.254.0.0/16",)) == METADATA
    with pytest.raises(FieldError, match="link-local"):
        subscribers.check_slack_address(METADATA, webhook_hosts=listed, private_networks=("10.0.0.0/8",))


@hsettings(max_examples=200, deadline=None)
@given(ip=st.ip_addresses(), allowed=st.sampled_from([(), ("10.0.0.0/8",), ("127.0.0.1/32", "::1/128"),
                                                       ("fe80::/10", "169.254.0.0/16")]))
def test_stored_and_sent_agree_on_every_literal_address(ip, allowed):
    """What is refused when stored is exactly what the Slack adapter would
    refuse to post to (outbound.address_problem), with the same words."""
    host = f"[{ip.compressed}]" if ip.version == 6 else str(ip)
    url = f"https://{host}/services/T0/B0/x"
    expected = outbound.address_problem(ip, outbound.networks(allowed))
    try:
        stored = subscribers.check_slack_address(url, webhook_hosts=(ip.compressed,), private_networks=allowed)
    except FieldError as exc:
        assert expected is not None and exc.reason.endswith(expected), (exc.reason, expected)
    else:
        assert expected is None and stored == url


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=80), st.builds(lambda h, p: f"https://{h}/{p}",
                                                      st.text(max_size=30), st.text(max_size=30))))
def test_any_text_is_a_field_error_or_an_address_and_only_allowed_hosts_are_looked_up(monkeypatch, text):
    looked_up = []

    def resolve(host, port, *, timeout):
        looked_up.append(host)
        return [(socket.AF_INET, ipaddress.ip_address("192.0.2.7"))]  # TEST-NET-1: refused

    monkeypatch.setattr(outbound, "resolve", resolve)
    try:
        subscribers.check_slack_address(text, webhook_hosts=("hooks.example.org",))
    except FieldError as exc:
        assert exc.field == "channel"
    assert set(looked_up) <= {"hooks.example.org", *slack_webhooks.SLACK_HOSTS}


def test_a_csv_looks_each_host_up_once_and_refuses_the_private_ones(engine, monkeypatch):
    looked_up = []
    real = outbound.resolve

    def resolve(host, port, *, timeout):
        looked_up.append(host)
        if host == "hooks.example.org":
            return [(socket.AF_INET, ipaddress.ip_address("8.8.8.8"))]
        if host == "inside.example.org":  # a listed name that resolves to a private address
            return [(socket.AF_INET, ipaddress.ip_address("10.9.8.7"))]
        return real(host, port, timeout=timeout)

    monkeypatch.setattr(outbound, "resolve", resolve)
    rows = ["email,kind"] + [f"https://hooks.example.org/services/T0/B{i}/x,slack" for i in range(40)]
    rows += ["https://inside.example.org/hook,slack", f"{METADATA},slack", "http://127.0.0.1:9/hook,slack"]
    report = csv_import.import_csv(engine, "\n".join(rows) + "\n",
                                   webhook_hosts=("hooks.example.org", "inside.example.org", "169.254.169.254",
                                                  "127.0.0.1"))
    assert len(report.added) == 40
    assert [(line, reason.split(": ")[-1].split(";")[0]) for line, reason in report.rejected] == [
        (42, "inside.example.org resolves to 10.9.8.7 is a private or reserved address"),
        (43, "169.254.169.254 is a link-local (cloud metadata) address"), (44, "127.0.0.1 is a loopback address")]
    assert looked_up.count("hooks.example.org") == 1 and looked_up.count("inside.example.org") == 1
    with db.session_scope(engine) as session:
        assert len(session.exec(select(Subscriber).where(Subscriber.kind == SubscriberKind.slack)).all()) == 40
    allowed = csv_import.import_csv(engine, "email,kind\nhttp://127.0.0.1:9/hook,slack\n",
                                    webhook_hosts=("127.0.0.1",), private_networks=("127.0.0.1/32",))
    assert len(allowed.added) == 1 and not allowed.rejected


def test_the_cli_refuses_it_for_add_and_import(run, tmp_path, monkeypatch):
    monkeypatch.setenv("DISPATCH_SLACK_WEBHOOK_HOSTS", "169.254.169.254")
    refused = run("slack", "add", METADATA)
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.stderr.split())
    assert "169.254.169.254 is a link-local (cloud metadata) address" in said
    assert "DISPATCH_OUTBOUND_PRIVATE_NETWORKS" in said
    listing = tmp_path / "channels.csv"
    listing.write_text(f"email,kind\n{METADATA},slack\nC0123ABCD,slack\n", "utf-8")
    imported = run("subscriber", "import", listing)
    assert imported.exit_code == 2 and "1 added" in imported.output and "link-local" in imported.output
    assert [s["address"] for s in json.loads(run("slack", "list", "--json").stdout)] == ["C0123ABCD"]
    monkeypatch.setenv("DISPATCH_OUTBOUND_PRIVATE_NETWORKS", "169.254.169.254/32")
    assert run("slack", "add", METADATA).exit_code == 0


def test_the_api_the_form_and_the_csv_page_refuse_it(web):
    settings = web.client.app.state.settings
    web.client.app.state.settings = settings.model_copy(update={"slack_webhook_hosts": ("169.254.169.254",)})
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "cms")
    bearer = {"Authorization": f"Bearer {token}"}
    hook = {"kind": "slack", "address": METADATA}
    refused = web.client.post("/api/subscribers", json=hook, headers=bearer)
    assert refused.status_code == 400 and "link-local (cloud metadata)" in refused.json()["detail"], refused.text
    web.sign_in()
    page = web.form("/admin/subscribers/new", {"kind": "slack", "address": METADATA},
                    page="/admin/subscribers/new?kind=slack")
    assert page.status_code == 400 and "DISPATCH_OUTBOUND_PRIVATE_NETWORKS" in page.text
    report = web.form("/admin/subscribers/import", {"text": f"email,kind\n{METADATA},slack\n"},
                      page="/admin/subscribers/import")
    assert report.status_code == 200 and "link-local" in report.text
    with db.session_scope(web.engine) as session:
        assert session.exec(select(Subscriber)).all() == []
    web.client.app.state.settings = web.client.app.state.settings.model_copy(
        update={"outbound_private_networks": ("169.254.169.254/32",)})
    assert web.client.post("/api/subscribers", json=hook, headers=bearer).status_code == 201
