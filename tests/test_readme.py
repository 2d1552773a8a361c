"""The README tells the truth about what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from app.webhooks.schemas import EVENT_DESCRIPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_event_type_is_listed_with_its_description() -> None:
    text = README.read_text()
    rows = dict(re.findall(r"^\| `(task\.[a-z_]+)` \| (.+?) \|$", text, re.MULTILINE))
    assert rows == {event.value: when for event, when in EVENT_DESCRIPTIONS.items()}
