"""Which static keys may guard an API that other machines can reach (pure; table-tested)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from app.core.config import StaticAdminKey, StaticApiKey

# Every static key that pollhook's own files show as an example (README.md, docs/, the compose
# file, now or in an earlier version): anyone can read them, so none may guard an API that
# listens beyond loopback. tests/auth/test_exposure.py fails when an example is missing here.
WELL_KNOWN_KEYS = frozenset({"dev-key-change-me"})

# How to make a key of one's own, for the refusal message and the docs.
KEY_RECIPE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def is_loopback_host(host: str) -> bool:
    """True when `host` is an address (or `localhost`) only this machine can connect to."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def public_key_problem(
    host: str, keys: Iterable[StaticApiKey], admin_keys: Iterable[StaticAdminKey] = ()
) -> str | None:
    """Why an API listening on `host` must not start with these static keys, or None."""
    if is_loopback_host(host):
        return None
    known = sorted(k.tenant for k in keys if k.key.get_secret_value() in WELL_KNOWN_KEYS)
    if known:
        return (
            f"refusing to listen on {host}: POLLHOOK_API_KEYS gives tenant {', '.join(known)} "
            f"a key published in pollhook's examples; set a key of your own, e.g. "
            f"POLLHOOK_API_KEYS={known[0]}:$({KEY_RECIPE})"
        )
    operators = sorted(k.name for k in admin_keys if k.key.get_secret_value() in WELL_KNOWN_KEYS)
    if operators:
        return (
            f"refusing to listen on {host}: POLLHOOK_ADMIN_KEYS gives operator "
            f"{', '.join(operators)} a key published in pollhook's examples; set a key of your "
            f"own, e.g. POLLHOOK_ADMIN_KEYS={operators[0]}:$({KEY_RECIPE})"
        )
    return None
