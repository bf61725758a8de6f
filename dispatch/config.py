"""Settings: DISPATCH_* environment variables over an optional dispatch.toml.

Precedence, highest first: environment variables, then the TOML file named by
DISPATCH_CONFIG (default ``dispatch.toml`` in the working folder, if present),
then the defaults below.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_ENV = "DISPATCH_CONFIG"
DEFAULT_CONFIG_FILE = "dispatch.toml"


def config_file_path() -> Path:
    return Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))


class SmtpSecurity(str, Enum):
    none = "none"
    starttls = "starttls"
    ssl = "ssl"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCH_", extra="ignore")

    database_url: str = Field(
        "sqlite:///subscribers.db",
        description="SQLAlchemy URL; postgresql+psycopg://user@host/db for PostgreSQL",
    )
    db_pool_size: int = Field(5, ge=1, le=100, description="connections per process (PostgreSQL)")
    db_statement_timeout: float = Field(30, ge=0, description="seconds; 0: none (PostgreSQL)")
    smtp_host: str = "localhost"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_security: SmtpSecurity = SmtpSecurity.none
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout: float = Field(30.0, gt=0)
    smtp_ca_file: Path | None = Field(None, description="CA bundle to trust for STARTTLS/SSL (self-signed relays)")
    smtp_pool_size: int = Field(2, ge=1, le=64, description="persistent SMTP connections kept open")
    smtp_rate_limit: float = Field(0, ge=0, description="at most this many messages a second (0: no limit)")
    mail_from: str = "Dispatch <dispatch@localhost>"
    reply_to: str | None = None
    list_id: str | None = Field(None, description="List-Id header; default from the From domain")
    unsubscribe_mailto: str | None = Field(None, description="mailto unsubscribe address; default the From address")
    slack_bot_token: SecretStr | None = None
    slack_base_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    slack_min_interval: float = Field(1.0, ge=0, description="seconds between two posts to one channel")
    sender_threads: int = Field(4, ge=1, le=64)
    batch_size: int = Field(50, ge=1, le=5000, description="deliveries one sender claims at a time")
    plan_interval: float = Field(60, gt=0, description="seconds between two planning runs")
    lease_seconds: float = Field(300, gt=0, description="a claimed delivery returns to the queue after this")
    max_attempts: int = Field(8, ge=1)
    bounce_limit: int = Field(3, ge=1, description="hard bounces before an address is marked bounced")
    public_url: AnyHttpUrl = AnyHttpUrl("http://localhost:8000/")
    secret_key: SecretStr | None = Field(
        None, description="signs subscriber links and admin sessions; if unset, a key is generated and kept "
                          "in secret_key_file (SQLite default: beside the database) or in the database (PostgreSQL)"
    )
    secret_key_file: Path | None = Field(None, description="a file (created 0600) holding the signing key")
    api_docs: bool = Field(True, description="serve the API's OpenAPI schema and /api/docs")
    trusted_proxies: str = Field(
        "", description="comma-separated addresses of reverse proxies whose X-Forwarded-For is believed; "
                        "default none: the client is the peer",
    )
    templates_dir: Path | None = Field(
        None, description="a folder whose templates override the shipped ones by name"
    )

    @field_validator("database_url")
    @classmethod
    def _url_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file_path())
        return (init_settings, env_settings, toml)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain values, with every secret masked."""
        shown: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                shown[name] = "********"
            elif isinstance(value, Enum):
                shown[name] = value.value
            elif value is None:
                shown[name] = None
            else:
                shown[name] = str(value)
        shown["database_url"] = mask_url_password(self.database_url)
        return shown


def mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported elsewhere; show it as given
        return url


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
