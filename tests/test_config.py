import pytest
from pydantic import ValidationError

from dispatch.config import Settings, SmtpSecurity


def test_defaults():
    settings = Settings()
    assert settings.database_url == "sqlite:///subscribers.db"
    assert settings.smtp_security == SmtpSecurity.none
    assert str(settings.slack_base_url) == "https://slack.com/api/"


def test_environment_overrides_toml(monkeypatch, tmp_path):
    toml = tmp_path / "dispatch.toml"
    toml.write_text('smtp_host = "mail.example.org"\nsmtp_port = 587\nsmtp_security = "starttls"\n'
                    'smtp_password = "hunter2"\n')
    monkeypatch.setenv("DISPATCH_CONFIG", str(toml))
    monkeypatch.setenv("DISPATCH_SMTP_PORT", "2525")
    settings = Settings()
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "mail.example.org", 2525, SmtpSecurity.starttls)
    assert settings.smtp_password.get_secret_value() == "hunter2"


def test_masked_hides_every_secret():
    settings = Settings(database_url="postgresql+psycopg://u:dbpass@db/x", smtp_password="p1",
                        slack_bot_token="xoxb-secret", secret_key="k")
    shown = settings.masked()
    text = repr(shown)
    assert "dbpass" not in text and "p1" not in text and "xoxb-secret" not in text
    assert shown["smtp_password"] == shown["slack_bot_token"] == shown["secret_key"] == "********"
    assert shown["database_url"] == "postgresql+psycopg://u:***@db/x"


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("DISPATCH_SMTP_SECURITY", "tls13")
    with pytest.raises(ValidationError, match="smtp_security"):
        Settings()


# --- settings that reach a header or the wire ---------------------------------

HEADER_SETTINGS = {
    "DISPATCH_MAIL_FROM": "Briefings <news@example.org>",
    "DISPATCH_REPLY_TO": "Desk <desk@example.org>",
    "DISPATCH_LIST_ID": "<briefings.example.org>",
    "DISPATCH_UNSUBSCRIBE_MAILTO": "leave@example.org",
    "DISPATCH_PUBLIC_URL": "https://news.example.org/",
}


@pytest.mark.parametrize("variable", sorted(HEADER_SETTINGS))
@pytest.mark.parametrize("breaker", ["\r\nBcc: victim@example.org", "\nBcc: victim@example.org", "\r", "\x00"])
def test_a_line_break_in_a_setting_that_reaches_a_header_is_refused(monkeypatch, variable, breaker):
    good, field = HEADER_SETTINGS[variable], variable.removeprefix("DISPATCH_").lower()
    monkeypatch.setenv(variable, good)
    Settings()  # the value itself is fine
    with pytest.raises(ValidationError, match=field):
        if "\x00" in breaker:  # no environment variable can hold a NUL; a TOML file can
            Settings(**{field: good + breaker})
        else:
            monkeypatch.setenv(variable, good + breaker)
            Settings()


@pytest.mark.parametrize("field, value", [
    ("mail_from", "not an address"), ("mail_from", "a@example.org, b@example.org"), ("mail_from", "Name <a@>"),
    ("mail_from", "Name <news@example.org> trailing"), ("reply_to", "desk"), ("reply_to", "@example.org"),
    ("unsubscribe_mailto", "Leave <leave@example.org>"), ("unsubscribe_mailto", "leave@exa mple.org"),
    ("list_id", "<briefings.exämple.org>"),
])
def test_addresses_must_parse_as_one_address(field, value):
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_good_addresses_are_kept():
    settings = Settings(mail_from=" Zoë Núñez <news@example.org> ", reply_to="desk@example.org",
                        unsubscribe_mailto="leave@example.org", list_id="Briefings <briefings.example.org>")
    assert settings.mail_from == "Zoë Núñez <news@example.org>"
    assert Settings().mail_from == "Dispatch <dispatch@localhost>"  # the default still parses


def test_settings_that_reach_a_header_are_checked_by_any_generated_input():
    """A property over arbitrary text: a value is either refused with an
    error naming the field, or holds no character that could end a header."""
    from hypothesis import given, settings as hsettings, strategies as st

    @hsettings(max_examples=150, deadline=None)
    @given(field=st.sampled_from(["mail_from", "reply_to", "list_id", "unsubscribe_mailto"]),
           value=st.text(max_size=60))
    def check(field, value):
        try:
            accepted = getattr(Settings(**{field: value}), field)
        except ValidationError as exc:
            assert [e["loc"] for e in exc.errors()] == [(field,)]
            return
        assert accepted is not None and all(ch.isprintable() for ch in accepted)

    check()


# --- AUTH only over TLS, unless the relay is this machine ----------------------

def test_a_password_is_not_sent_in_the_clear_to_a_remote_relay(monkeypatch):
    monkeypatch.setenv("DISPATCH_SMTP_HOST", "relay.example.org")
    monkeypatch.setenv("DISPATCH_SMTP_USERNAME", "dispatch")
    monkeypatch.setenv("DISPATCH_SMTP_PASSWORD", "s3cret")
    with pytest.raises(ValidationError, match="unencrypted.*DISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH") as caught:
        Settings()
    assert "s3cret" not in str(caught.value)
    for allowed in ({"DISPATCH_SMTP_SECURITY": "starttls"}, {"DISPATCH_SMTP_SECURITY": "ssl"},
                    {"DISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH": "true"}, {"DISPATCH_SMTP_HOST": "127.0.0.1"},
                    {"DISPATCH_SMTP_HOST": "localhost"}, {"DISPATCH_SMTP_HOST": "::1"}):
        with monkeypatch.context() as m:
            for name, value in allowed.items():
                m.setenv(name, value)
            Settings()


# --- webhook hosts ---------------------------------------------------------------

def test_webhook_hosts_are_comma_separated_hosts(monkeypatch):
    assert Settings().slack_webhook_hosts == ()
    monkeypatch.setenv("DISPATCH_SLACK_WEBHOOK_HOSTS", " 127.0.0.1, Hooks.Example.org ,")
    settings = Settings()
    assert settings.slack_webhook_hosts == ("127.0.0.1", "hooks.example.org")
    assert settings.masked()["slack_webhook_hosts"] == "127.0.0.1, hooks.example.org"
    for bad in ("https://hooks.example.org", "hooks.example.org/services", "hooks.example.org:443", "a b"):
        monkeypatch.setenv("DISPATCH_SLACK_WEBHOOK_HOSTS", bad)
        with pytest.raises(ValidationError, match="slack_webhook_hosts"):
            Settings()
