"""A random secret kept in a file, created on first use: for keys that every process sharing
a folder must agree on without being configured (the archive's link key, the dashboard's
session key)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """The random key in `path` (hex), created with mode 0600 on first use.

    Created under a temporary name and hard-linked into place, which fails if another
    process got there first: then both use the one that won. Raises OSError when the file
    cannot be read or created, ValueError when it holds no key of at least KEY_BYTES."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        staging = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            os.link(staging, path)
        except FileExistsError:
            pass
        finally:
            staging.unlink(missing_ok=True)
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < KEY_BYTES:
        raise ValueError(f"the key in {path.name} is too short")
    return key
