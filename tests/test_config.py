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
