"""Outbound event webhooks: what happened (a SITREP approved, a delivery
failed, a reader unsubscribed) told to other systems, signed, through the ledger.

    catalogue.py  the event types and what each one carries
    signing.py    the Standard Webhooks signature (pure)
    endpoints.py  adding, listing and removing webhooks; which URLs are allowed
    emit.py       events.emit(): write an event and plan a delivery per webhook that wants it
    sender.py     claim due event deliveries, POST them (bounded), record the outcome
"""
