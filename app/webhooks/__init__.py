"""Webhook delivery: endpoints, signing, the outbox delivery loop and the SSRF guard."""
