from __future__ import annotations

from pathlib import Path

from app.core.config import Settings
from app.ui.service import SESSION_KEY_FILE, key_hash_of, session_secret


def test_the_session_secret_is_the_setting_or_a_key_kept_in_the_data_dir(tmp_path: Path) -> None:
    configured = Settings(data_dir=tmp_path, ui={"session_secret": "c" * 32})
    assert session_secret(configured) == b"c" * 32
    assert not (tmp_path / SESSION_KEY_FILE).exists()
    generated = Settings(data_dir=tmp_path)
    first = session_secret(generated)
    assert len(first) == 32
    assert (tmp_path / SESSION_KEY_FILE).stat().st_mode & 0o777 == 0o600
    # Every process started on the data dir signs with the same key.
    assert session_secret(Settings(data_dir=tmp_path)) == first


def test_key_hash_of_takes_what_a_bearer_header_would() -> None:
    assert key_hash_of("  key ") == key_hash_of("key")
    assert key_hash_of("") is None
    assert key_hash_of("   ") is None
    assert key_hash_of("x" * 257) is None
