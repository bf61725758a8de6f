"""Settings: DISPATCH_* environment variables over an optional dispatch.toml.

Precedence, highest first: environment variables, then the TOML file named by
DISPATCH_CONFIG (default ``dispatch.toml`` in the working folder, if present),
then the defaults below.
"""

from __future__ import annotations

import ipaddress
import os
from email.utils import getaddresses
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_ENV = "DISPATCH_CONFIG"
# links.MAX_BOUNCE_LOCAL; config imports nothing of ours (DESIGN.md), tests/test_verp.py holds them equal.
MAX_BOUNCE_LOCAL = 28
DEFAULT_CONFIG_FILE = "dispatch.toml"


def config_file_path() -> Path:
    return Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class ArchiveMode(str, Enum):
    readers = "readers"  # a signed link from an email (or a reader cookie) opens it
    public = "public"  # open to everyone, with public Atom feeds
    off = "off"  # no web archive: emails link nowhere but preferences


class SmtpSecurity(str, Enum):
    none = "none"
    starttls = "starttls"
    ssl = "ssl"


# --- checks shared with the adapters (pure; they import nothing of ours) ------

def control_characters(value: str) -> bool:
    """CR, LF, NUL, tab … : anything that could end a header line or hide in one."""
    return any(not ch.isprintable() for ch in value)


def _label_ok(label: str) -> bool:
    return (0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
            and all(ch.isalnum() or ch == "-" for ch in label))


def mailbox_problem(value: str, *, display_name: bool = True) -> str | None:
    """Why ``value`` is not one address (``Name <local@domain>``, or a bare
    ``local@domain`` when ``display_name`` is False), or None."""
    if control_characters(value):
        return "must not contain line breaks or other control characters"
    value = value.strip()
    found = getaddresses([value])
    if len(found) != 1:
        return f"{value!r} is not one address like 'Briefings <news@example.org>'"
    name, address = found[0]
    if name and not display_name:
        return f"{value!r}: give the address alone (like news@example.org), without a name"
    local, at, domain = address.rpartition("@")
    # The parser quietly drops what it cannot place (spaces, a second
    # address): the address must be there as written.
    as_written = value.endswith(f"<{address}>") if name else value in (address, f"<{address}>")
    if (not as_written or not at or not local or len(local) > 64 or len(address) > 254
            or any(ch.isspace() or ch in '<>()[]\\,;:"@' for ch in local)
            or not all(_label_ok(label) for label in domain.split("."))):
        return f"{value!r} is not an address like 'Briefings <news@example.org>'"
    return None


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_auth_problem(*, host: str, security: SmtpSecurity, username: str | None, allowed: bool) -> str | None:
    """AUTH over plain TCP gives the password to anyone on the path: refused
    unless the relay is this machine or the operator says the network is trusted."""
    if not username or SmtpSecurity(security) != SmtpSecurity.none or allowed or is_loopback(host):
        return None
    return (f"smtp_username is set but smtp_security is none: the SMTP password would cross the network to "
            f"{host} unencrypted; set DISPATCH_SMTP_SECURITY=starttls or ssl (or, on a network you trust, "
            f"DISPATCH_SMTP_ALLOW_PLAINTEXT_AUTH=true)")


def public_url_warning(public_url: str) -> str | None:
    """RFC 8058 one-click unsubscribe: mail providers use the https link in
    List-Unsubscribe only; over plain http (other than this machine) they
    ignore it and show no unsubscribe button, and readers press "spam" instead."""
    from urllib.parse import urlsplit

    parts = urlsplit(public_url)
    if parts.scheme == "https" or is_loopback(parts.hostname or ""):
        return None
    return (f"DISPATCH_PUBLIC_URL {public_url} is not https: mail providers ignore one-click unsubscribe "
            "(RFC 8058) over http, so readers get no unsubscribe button; serve the pages over https")


def _host_entries(value: Any) -> tuple[str, ...]:
    """DISPATCH_SLACK_WEBHOOK_HOSTS is comma-separated; TOML may give a list."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    hosts = []
    for item in items:
        host = str(item).strip().lower().rstrip(".")
        if not host:
            continue
        if not (all(_label_ok(label) for label in host.split(".")) or is_loopback(host)):
            raise ValueError(f"{item!r} is not a host name (give hosts only, like hooks.example.org, "
                             "without scheme, port or path)")
        hosts.append(host.strip("[]"))
    return tuple(hosts)


# arn:aws:sns:us-east-1:123456789012:ses-bounces (aws-cn, aws-us-gov partitions too)
_TOPIC_ARN_PARTS = 6


def topic_arn_problem(arn: str) -> str | None:
    parts = arn.split(":")
    if (len(parts) != _TOPIC_ARN_PARTS or parts[0] != "arn" or not parts[1].startswith("aws") or parts[2] != "sns"
            or not parts[3] or not all(ch.isalnum() or ch == "-" for ch in parts[3])
            or not (parts[4].isdigit() and len(parts[4]) == 12)
            or not parts[5] or len(parts[5]) > 256
            or not all(ch.isascii() and (ch.isalnum() or ch in "-_.") for ch in parts[5])):
        return f"{arn!r} is not an SNS topic ARN like arn:aws:sns:us-east-1:123456789012:ses-bounces"
    return None


def _topic_entries(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    arns = []
    for item in items:
        arn = str(item).strip()
        if not arn:
            continue
        problem = topic_arn_problem(arn)
        if problem:
            raise ValueError(problem)
        arns.append(arn)
    return tuple(arns)


def sendgrid_key_problem(value: str) -> str | None:
    """SendGrid shows its verification key as the base64 of a DER public key (P-256)."""
    import base64
    import binascii

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    text = "".join(value.split())
    try:
        key = load_der_public_key(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, TypeError):
        return "is not a public key: give the verification key as SendGrid shows it (base64)"
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return "is not an ECDSA P-256 public key, which is what SendGrid signs with"
    return None


class Settings(BaseSettings):
    # hide_input_in_errors: a refused secret (a webhook password) is never echoed back.
    model_config = SettingsConfigDict(env_prefix="DISPATCH_", extra="ignore", hide_input_in_errors=True)

    database_url: str = Field(
        "sqlite:///subscribers.db",
        description="SQLAlchemy URL; postgresql+psycopg://user@host/db for PostgreSQL",
    )
    db_pool_size: int = Field(5, ge=1, le=100, description="connections per process (PostgreSQL)")
    db_statement_timeout: float = Field(30, ge=0, description="seconds; 0: none (PostgreSQL)")
    smtp_host: str = "localhost"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_security: SmtpSecurity = SmtpSecurity.none
    smtp_allow_plaintext_auth: bool = Field(
        False, description="allow AUTH without TLS to a relay that is not on loopback (a trusted network only)")
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
    bounce_address: str | None = Field(
        None, description="VERP return path: each email's envelope sender becomes local+<signed delivery "
                          "token>@domain, and `dispatch inbound` reads what comes back; default the From address")
    slack_bot_token: SecretStr | None = None
    slack_base_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    slack_min_interval: float = Field(1.0, ge=0, description="seconds between two posts to one channel")
    slack_webhook_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="hosts accepted for incoming-webhook URLs besides Slack's own, comma-separated "
                        "(http only for a loopback host, e.g. a local sink)")
    outbound_private_networks: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="networks (comma-separated, like 10.1.2.0/24 or 127.0.0.1/32) that event and Slack "
                        "webhooks may post to although they are private, loopback or link-local; default none: "
                        "such addresses (and cloud metadata, 169.254.169.254) are refused")
    sender_threads: int = Field(4, ge=1, le=64)
    batch_size: int = Field(50, ge=1, le=5000, description="deliveries one sender claims at a time")
    plan_interval: float = Field(60, gt=0, description="seconds between two planning runs")
    lease_seconds: float = Field(300, gt=0, description="a claimed delivery returns to the queue after this")
    max_attempts: int = Field(8, ge=1)
    two_person_rule: bool = Field(True, description="a SITREP is approved only by someone other than whoever "
                                                    "imported it or edited it since its last approval")
    bounce_limit: int = Field(3, ge=1, description="hard bounces before an address is marked bounced")
    soft_bounce_limit: float = Field(
        5, ge=1, le=100, description="soft bounces (4.x.x, mailbox full) reported after acceptance, as a score "
                                     "that halves weekly, past which an address is marked bounced")
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
    log_format: LogFormat = Field(LogFormat.text, description="text (one line a record) or json (one object a line)")
    metrics_token: SecretStr | None = Field(
        None, description="bearer token for the web server's /metrics; unset: only loopback clients may read it")
    ready_relay_seconds: float = Field(
        300, gt=0, description="/readyz on a sender: the SMTP relay must have answered within this many seconds "
                               "(else a probe must succeed)")
    view_link_days: int = Field(90, ge=1, le=3650,
                                description="days an email's “view in browser” link works after it was sent")
    archive: ArchiveMode = Field(ArchiveMode.readers, description="web archive: readers | public | off")
    max_full_items: int = Field(12, ge=1, le=200, description="SITREPs shown in full in one email; "
                                                                "the rest become linked headlines")
    brand: str = Field("Dispatch Briefing", min_length=1, max_length=80,
                       description="the publication's name in emails, Slack posts and pages")
    postal_address: str | None = Field(None, max_length=300,
                                       description="the organisation line every email carries in its footer")

    # Provider webhooks (/webhooks/…, dispatch.inbound.providers): a provider
    # that is not configured here answers 404.
    ses_webhook: bool = Field(False, description="accept Amazon SES bounce and complaint notifications "
                                                 "(through SNS, signature checked) at /webhooks/ses")
    ses_topic_arns: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="SNS topics whose messages /webhooks/ses accepts, comma-separated "
                        "(arn:aws:sns:REGION:ACCOUNT:NAME); required with DISPATCH_SES_WEBHOOK")
    sendgrid_verification_key: str | None = Field(
        None, description="the Signed Event Webhook's verification key (base64, as SendGrid shows it): "
                          "enables /webhooks/sendgrid")
    mailgun_signing_key: SecretStr | None = Field(
        None, description="Mailgun's HTTP webhook signing key: enables /webhooks/mailgun")
    postmark_webhook_auth: SecretStr | None = Field(
        None, description="user:password that Postmark's webhook URL carries (HTTP basic auth): "
                          "enables /webhooks/postmark")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        for entry in (e.strip() for e in value.split(",")):
            if not entry or entry == "*":
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (e.g. 127.0.0.1, 10.0.0.0/8)") from None
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _url_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    # These reach message headers (From, Reply-To, List-Id, List-Unsubscribe):
    # a CR or LF in one would start a header of its own, so they are refused
    # here, at start, rather than folded somewhere later.
    @field_validator("mail_from", "reply_to")
    @classmethod
    def _mailbox(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = mailbox_problem(value)
        if problem:
            raise ValueError(problem)
        return value.strip()

    @field_validator("unsubscribe_mailto", "bounce_address")
    @classmethod
    def _bare_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        problem = mailbox_problem(value, display_name=False)
        if problem:
            raise ValueError(problem)
        value = value.strip()
        if info.field_name == "bounce_address":
            local = value.rpartition("@")[0]
            if "+" in local or len(local) > MAX_BOUNCE_LOCAL:
                raise ValueError(f"the local part must be at most {MAX_BOUNCE_LOCAL} characters and hold no '+': "
                                 "dispatch appends +<token> to it, and a local part has at most 64")
        return value

    @field_validator("brand", "postal_address")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        # Both reach subjects and footers: a line break would start a header.
        if value is None:
            return None
        if control_characters(value) or not value.strip():
            raise ValueError("must be printable text on one line")
        return " ".join(value.split())

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if control_characters(value) or not value.isascii() or not value.strip() or len(value) > 255:
            raise ValueError("must be printable ASCII on one line (like <briefings.example.org>), "
                             "at most 255 characters")
        return value.strip()

    @field_validator("public_url", "slack_base_url", mode="before")
    @classmethod
    def _url_on_one_line(cls, value: Any) -> Any:
        # The URL parser would quietly drop a line break; say so instead.
        if isinstance(value, str) and control_characters(value):
            raise ValueError("must not contain line breaks or other control characters")
        return value

    @field_validator("slack_webhook_hosts", mode="before")
    @classmethod
    def _webhook_hosts(cls, value: Any) -> tuple[str, ...]:
        return _host_entries(value)

    @field_validator("outbound_private_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else list(value)
        found = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            try:
                found.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP network (like 10.1.2.0/24 or 127.0.0.1/32)") from None
        return tuple(found)

    @field_validator("ses_topic_arns", mode="before")
    @classmethod
    def _topic_arns(cls, value: Any) -> tuple[str, ...]:
        return _topic_entries(value)

    @field_validator("sendgrid_verification_key")
    @classmethod
    def _sendgrid_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = sendgrid_key_problem(value)
        if problem:
            raise ValueError(problem)
        return "".join(value.split())

    @field_validator("postmark_webhook_auth")
    @classmethod
    def _postmark_auth(cls, value: SecretStr | None) -> SecretStr | None:
        # The error never quotes the value: it is a password.
        if value is None:
            return None
        user, colon, password = value.get_secret_value().partition(":")
        if not (colon and user and password) or control_characters(value.get_secret_value()):
            raise ValueError("must be user:password (both parts given, on one line), as in the webhook URL "
                             "https://user:password@your-host/webhooks/postmark")
        return value

    @field_validator("smtp_username")
    @classmethod
    def _no_password_in_the_clear(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field check, not a model one: its error shows the username, never the password.
        known = info.data
        if {"smtp_host", "smtp_security", "smtp_allow_plaintext_auth"} <= known.keys():
            problem = plaintext_auth_problem(host=known["smtp_host"], security=known["smtp_security"],
                                             username=value, allowed=known["smtp_allow_plaintext_auth"])
            if problem:
                raise ValueError(problem)
        return value

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

    def warnings(self) -> list[str]:
        """What works but should not be left so; shown at start and by `dispatch config`."""
        return [w for w in (public_url_warning(str(self.public_url)), self._unreachable_webhook_hosts()) if w]

    def _unreachable_webhook_hosts(self) -> str | None:
        """A listed Slack webhook host that is a private address the outbound
        rule refuses: every post to it would fail (dispatch.outbound)."""
        networks = [ipaddress.ip_network(n) for n in self.outbound_private_networks]
        refused = []
        for host in self.slack_webhook_hosts:
            try:
                ip = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                continue
            if (not ip.is_global or ip.is_multicast) and not any(ip in n for n in networks if n.version == ip.version):
                refused.append(host)
        if not refused:
            return None
        return (f"DISPATCH_SLACK_WEBHOOK_HOSTS lists {', '.join(refused)}, a private or loopback address that "
                "webhooks are never posted to unless DISPATCH_OUTBOUND_PRIVATE_NETWORKS lists its network")

    @model_validator(mode="after")
    def _ses_needs_its_topics(self) -> "Settings":
        # Anyone with an AWS account can sign SNS messages from a topic of
        # their own: without the list, a stranger could mark readers bounced.
        if self.ses_webhook and not self.ses_topic_arns:
            raise ValueError("DISPATCH_SES_WEBHOOK needs DISPATCH_SES_TOPIC_ARNS: the SNS topics your SES "
                             "notifications go to (arn:aws:sns:REGION:ACCOUNT:NAME, comma-separated); "
                             "without them any AWS account's topic could post bounces")
        return self

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain values, with every secret masked."""
        shown: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                shown[name] = "********"
            elif isinstance(value, Enum):
                shown[name] = value.value
            elif isinstance(value, tuple):
                shown[name] = ", ".join(value)
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
