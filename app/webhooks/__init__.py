"""Webhooks: the event schema and the outbox, the delivery loop that sends it signed, the
retry decisions, and the /v1/webhooks API."""
