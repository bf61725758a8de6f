"""Every error dispatch raises on purpose.

    DispatchError                    anything dispatch reports to a person
    ├── InputError                   bad input: say what and where, write nothing
    │   ├── SitrepFormatError        a file that is not a readable SITREP
    │   └── FieldError               one field of a record is invalid
    ├── NotFoundError                no such SITREP / subscriber / analyst / region
    ├── ConflictError                the request clashes with what is stored
    │   ├── DuplicateError           it is already there
    │   └── WorkflowError            not allowed from the current status
    ├── SchemaError                  the database needs `dispatch init`
    ├── SettingsError                a setting or a file it names cannot be used
    └── DeliveryError                sending failed (raised by the adapters)
        ├── TransientError           worth retrying later (4xx, drops, 429, 5xx)
        │   └── CredentialError      the installation's own credentials were refused
        └── PermanentError           retrying cannot help (5xx on a recipient …)

Library errors are translated where they enter our code (``raise X(...) from
exc``), so callers decide from the type alone.
"""

from __future__ import annotations


class DispatchError(Exception):
    """Base class: its message is meant for the person at the terminal."""


class InputError(DispatchError):
    pass


class SitrepFormatError(InputError):
    def __init__(self, reason: str, *, source: str | None = None, line: int | None = None):
        self.reason = reason
        self.source = source
        self.line = line
        where = source or "<text>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {reason}")


class FieldError(InputError):
    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class NotFoundError(DispatchError):
    pass


class ConflictError(DispatchError):
    pass


class DuplicateError(ConflictError):
    def __init__(self, message: str, *, existing_id: int | None = None):
        self.existing_id = existing_id
        super().__init__(message)


class WorkflowError(ConflictError):
    pass


class SchemaError(DispatchError):
    pass


class SettingsError(DispatchError):
    pass


class DeliveryError(DispatchError):
    pass


class TransientError(DeliveryError):
    """Try again later. ``retry_after`` (seconds) is the server's wish;
    ``progress`` records what part of a multi-message delivery got through."""

    def __init__(self, message: str, *, retry_after: float | None = None, progress: str | None = None):
        self.retry_after = retry_after
        self.progress = progress
        super().__init__(message)


class CredentialError(TransientError):
    """The installation's credentials were refused (a revoked Slack bot
    token …). Nothing is wrong with the delivery or its channel: sending
    through those credentials pauses, the deliveries wait, and no subscriber
    is blamed."""


class PermanentError(DeliveryError):
    """Retrying cannot help. ``blames_recipient``: the address itself is bad
    (a hard bounce, an archived channel), so the subscriber is marked."""

    def __init__(self, message: str, *, blames_recipient: bool = False, progress: str | None = None):
        self.blames_recipient = blames_recipient
        self.progress = progress
        super().__init__(message)
