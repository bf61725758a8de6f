"""Subscribers managing themselves: double opt-in, confirmation,
unsubscribing and subscribing again.

A public form must never let a stranger change someone else's subscription,
so ``request_subscription`` only ever creates a *pending* subscriber or
re-opens one that had left; it never touches the preferences of an existing
one. What happens next is decided here and carried out by the caller (the
web layer sends the email).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlmodel import Session

from dispatch import subscribers
from dispatch.models import Subscriber, SubscriberKind, SubscriberStatus, utcnow


class NextStep(str, Enum):
    confirm = "confirm"  # send the confirmation email
    remind = "remind"  # already active: send a link to their preferences instead
    nothing = "nothing"  # disabled by an admin: send nothing, say nothing different


@dataclass(frozen=True)
class SignupResult:
    subscriber: Subscriber
    next_step: NextStep


def request_subscription(session: Session, address: str, prefs: subscribers.Preferences) -> SignupResult:
    """The public subscribe form, which anyone may use for any address: it
    creates a pending subscriber, or decides which email an existing one
    gets, and never changes an existing subscriber's status, reason or
    preferences (the opt-outs are the reader's). The page shown afterwards
    is the same whatever the outcome, so it does not reveal who is subscribed."""
    address = subscribers.check_email(address)
    existing = subscribers.find_by_address(session, address, kind=SubscriberKind.email)
    if existing is None:
        created = subscribers.add_subscriber(session, address, prefs=prefs, status=SubscriberStatus.pending)
        created.status_reason = "waiting for the subscriber to confirm"
        return SignupResult(created, NextStep.confirm)
    if is_suppressed(existing):
        return SignupResult(existing, NextStep.nothing)
    return SignupResult(existing, NEXT_STEP[existing.status])


COMPLAINT_REASON = "complaint"  # dispatch.inbound.outcomes.COMPLAINT_REASON


def is_suppressed(subscriber: Subscriber) -> bool:
    """Mail to it would hurt the sender: it bounced, or its reader reported
    a digest as spam. A stranger's sign-up sends such an address nothing;
    only the reader's own signed link (``resubscribe``) or an admin's
    ``--force`` lifts it."""
    return subscriber.status == SubscriberStatus.bounced or (
        subscriber.status == SubscriberStatus.unsubscribed and subscriber.status_reason == COMPLAINT_REASON)


def complained(session: Session, subscriber: Subscriber) -> bool:
    """A spam complaint (ARF, a provider's report): an opt-out like the
    reader's own (``opted_out_at``), kept with reason "complaint" so that it
    is suppressed. True if this call changed anything."""
    if subscriber.status not in (SubscriberStatus.active, SubscriberStatus.pending):
        if subscriber.opted_out_at is None:
            subscriber.opted_out_at = utcnow()  # lifting a bounce later must not mail them either
            session.flush()
            return True
        return False
    subscriber.opted_out_at = utcnow()
    subscriber.status = SubscriberStatus.unsubscribed
    subscriber.status_reason = COMPLAINT_REASON
    session.flush()
    return True


# What a sign-up for an existing address leads to. Bounced addresses are
# suppressed (mail to them is what gets a sender blocked) and an admin's
# "disabled" is final: neither is mailed because a stranger asked.
NEXT_STEP = {
    SubscriberStatus.pending: NextStep.confirm,  # asked again: the confirmation again
    SubscriberStatus.unsubscribed: NextStep.confirm,  # stays unsubscribed unless the reader confirms
    SubscriberStatus.active: NextStep.remind,
    SubscriberStatus.bounced: NextStep.nothing,
    SubscriberStatus.disabled: NextStep.nothing,
}
# Whom a confirmation link may (re)activate: the reader's own confirmed opt-in.
CONFIRMABLE = (SubscriberStatus.pending, SubscriberStatus.unsubscribed)


def confirm(session: Session, subscriber: Subscriber) -> bool:
    """Pending (or unsubscribed, who asked to come back) → active: the
    reader opened the confirmation link sent to this very address. True if
    this call activated the subscriber."""
    if subscriber.status not in CONFIRMABLE:
        return False
    _activate(subscriber, reason="confirmed by the subscriber")
    subscriber.confirmed_at = utcnow()
    session.flush()
    return True


def unsubscribe(session: Session, subscriber: Subscriber, *, how: str) -> bool:
    """The reader's own opt-out, recorded for good (``opted_out_at``). An
    address an admin disabled or that bounced stays so (its status says why
    nothing is sent); the opt-out is kept beside it, so lifting that status
    later cannot start mail the reader declined. True if this call changed
    anything (a second click changes nothing)."""
    if subscriber.opted_out_at is not None and subscriber.status not in (SubscriberStatus.active,
                                                                          SubscriberStatus.pending):
        return False
    subscriber.opted_out_at = utcnow()
    if subscriber.status in (SubscriberStatus.active, SubscriberStatus.pending):
        subscriber.status = SubscriberStatus.unsubscribed
        subscriber.status_reason = f"unsubscribed by the subscriber ({how})"
    session.flush()
    return True


def resubscribe(session: Session, subscriber: Subscriber) -> bool:
    """Unsubscribed → active again, from a signed link to this very address
    (which proves it is theirs, so no second opt-in). Never lifts a bounce
    or an admin's "disabled"."""
    if subscriber.status != SubscriberStatus.unsubscribed:
        return False
    _activate(subscriber, reason="subscribed again by the subscriber")
    session.flush()
    return True


def _activate(subscriber: Subscriber, *, reason: str) -> None:
    """The reader's own confirmed opt-in: the only way an opt-out ends."""
    subscriber.status = SubscriberStatus.active
    subscriber.status_reason = reason
    subscriber.opted_out_at = None
    subscriber.bounce_count = 0
    subscriber.soft_bounce_score, subscriber.soft_bounce_at = 0.0, None
    if subscriber.planned_through is not None:
        # Start afresh: the first digest after a pause must not carry every
        # SITREP approved while they were away.
        subscriber.planned_through = utcnow()
    subscriber.next_due_at = None  # the planner works it out again
