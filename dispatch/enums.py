"""The enumerations the tables store, importable without the database
layer: a command's options name them (``--status``) before any database
library is imported. dispatch.models re-exports them."""

from enum import Enum


class SitrepStatus(str, Enum):
    draft = "draft"
    approved = "approved"
    withdrawn = "withdrawn"


class SubscriberKind(str, Enum):
    email = "email"
    slack = "slack"


class Cadence(str, Enum):
    immediate = "immediate"
    daily = "daily"
    weekly = "weekly"


class MailFormat(str, Enum):
    html = "html"
    text = "text"


class SubscriberStatus(str, Enum):
    pending = "pending"
    active = "active"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    disabled = "disabled"


class DeliveryStatus(str, Enum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    skipped = "skipped"


class Role(str, Enum):
    """What an admin user or API token may do (dispatch.desk.roles)."""
    viewer = "viewer"
    editor = "editor"
    approver = "approver"
    admin = "admin"
