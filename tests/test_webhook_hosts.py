"""Webhook URLs are accepted only on Slack's hosts, or on the hosts listed in
DISPATCH_SLACK_WEBHOOK_HOSTS, at every entry point that stores one."""

from dispatch import admins, db


def test_the_cli_refuses_a_webhook_off_slack_unless_its_host_is_listed(run, monkeypatch):
    assert run("slack", "add", "https://hooks.slack.com/services/T0/B0/abc").exit_code == 0
    refused = run("slack", "add", "http://127.0.0.1:8026/webhook/desk")
    assert refused.exit_code == 2
    assert "127.0.0.1 is not a Slack webhook host" in " ".join(refused.stderr.split())
    assert "DISPATCH_SLACK_WEBHOOK_HOSTS" in refused.stderr
    monkeypatch.setenv("DISPATCH_SLACK_WEBHOOK_HOSTS", "127.0.0.1")
    # A listed loopback host is still a loopback address: posting to it is opted into on its own.
    loopback = run("slack", "add", "http://127.0.0.1:8026/webhook/desk")
    assert loopback.exit_code == 2 and "127.0.0.1 is a loopback address" in " ".join(loopback.stderr.split())
    assert "DISPATCH_OUTBOUND_PRIVATE_NETWORKS" in loopback.stderr
    monkeypatch.setenv("DISPATCH_OUTBOUND_PRIVATE_NETWORKS", "127.0.0.1/32")
    assert run("slack", "add", "http://127.0.0.1:8026/webhook/desk").exit_code == 0


def test_the_api_and_the_admin_pages_refuse_it_too(web):
    with db.session_scope(web.engine) as session:
        _, token = admins.create_token(session, "cms")
    hook = {"kind": "slack", "address": "https://metadata.internal/latest/"}
    refused = web.client.post("/api/subscribers", json=hook, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 400 and "not a Slack webhook host" in refused.json()["detail"]
    web.sign_in()
    page = web.form("/admin/subscribers/new", {"kind": "slack", "address": hook["address"]},
                    page="/admin/subscribers/new?kind=slack")
    assert page.status_code == 400 and "not a Slack webhook host" in page.text
    settings = web.client.app.state.settings
    web.client.app.state.settings = settings.model_copy(update={"slack_webhook_hosts": ("metadata.internal",)})
    accepted = web.client.post("/api/subscribers", json=hook, headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 201, accepted.text
