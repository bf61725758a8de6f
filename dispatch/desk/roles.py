"""Who may do what: four roles and the permissions each holds (pure).

viewer reads everything; editor also imports, edits and tags SITREPs and
manages subscribers; approver reads and approves, withdraws and releases
(and retries deliveries: deciding what goes out is the approver's);
admin may do everything, including users, tokens and settings. Approver
is deliberately not a superset of editor: the desk's two people.
"""

from __future__ import annotations

import unicodedata
from enum import Enum

from dispatch.errors import FieldError, InputError
from dispatch.models import Role  # a column type, so it lives with the tables


class Permission(str, Enum):
    read = "read"
    edit = "edit"              # import, edit, tag, correct SITREPs
    subscribers = "subscribers"  # add, edit, remove, import subscribers and channels
    approve = "approve"        # approve, withdraw, release, retry
    manage = "manage"          # admin users, API tokens, settings, event webhooks


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.viewer: frozenset({Permission.read}),
    Role.editor: frozenset({Permission.read, Permission.edit, Permission.subscribers}),
    Role.approver: frozenset({Permission.read, Permission.approve}),
    Role.admin: frozenset(Permission),
}

WHAT = {  # for refusals: "your role (viewer) may not approve SITREPs"
    Permission.read: "read this",
    Permission.edit: "import or edit SITREPs",
    Permission.subscribers: "manage subscribers",
    Permission.approve: "approve, withdraw or release SITREPs",
    Permission.manage: "manage users, tokens, settings or webhooks",
}


class NotPermitted(InputError):
    """A role, or the two-person rule, refuses this: exit 2 on the CLI, 403 on the web."""


def allows(role: Role | str, permission: Permission) -> bool:
    try:
        return permission in GRANTS[Role(role)]
    except ValueError:
        return False  # an unknown role may do nothing


def refusal(role: Role | str, permission: Permission) -> str | None:
    """Why ``role`` may not do it, or None when it may."""
    if allows(role, permission):
        return None
    shown = role.value if isinstance(role, Role) else role
    return f"your role ({shown}) may not {WHAT[permission]}; ask an admin"


def parse_role(value: str, *, field: str = "role") -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise FieldError(field, "one of " + ", ".join(r.value for r in Role)) from None


EDITS = ("imported", "edited", "tagged")  # SitrepChange actions that author content
API_ACTOR = "api:"  # how the API names a token's actor (dispatch.web.api._actor)


def person(actor: str) -> str:
    """Who an actor name stands for, to the two-person rule: one person
    whatever the face (a token named after its user, ``api:ana``, is ana),
    the case, the spacing or a compatibility look-alike (fullwidth letters)."""
    name = " ".join(unicodedata.normalize("NFKC", actor).split()).casefold()
    if name.startswith(API_ACTOR):
        name = name[len(API_ACTOR):].strip()
    return name


def two_person_refusal(changes: list[tuple[str, str]], *, approver: str) -> str | None:
    """Why ``approver`` may not approve, given the SITREP's history as
    (actor, action) pairs oldest first; None when they may. Its authors are
    the importer and everyone who edited or tagged it since it was last
    approved (earlier edits were reviewed by that approval): counting only
    the first and the last let an editor's text through behind a colleague's
    one-character edit."""
    if not changes:
        return None
    last_approval = max((i for i, (_, action) in enumerate(changes) if action == "approved"), default=-1)
    importer = next((actor for actor, action in changes if action == "imported"), None)
    editors = [actor for actor, action in changes[last_approval + 1:] if action in EDITS and action != "imported"]
    who = person(approver)
    if importer is not None and who == person(importer):
        role = "imported"
    elif who in {person(a) for a in editors}:
        role = "edited"
    else:
        return None
    return (f"two-person rule: {approver} {role} this SITREP, so someone else must approve it "
            "(DISPATCH_TWO_PERSON_RULE)")
