"""Properties of how archived files are named (app/archive/naming.py): whatever the
provider sends, a name is safe in a key and in a path."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from app.archive.naming import MAX_NAME_CHARS, content_type, safe_name, unique_name
from tests.properties import PROPERTY

SAFE = re.compile(r"[A-Za-z0-9._-]+")


@settings(PROPERTY)
@given(st.text(max_size=600))
def test_a_name_is_safe_whatever_it_was(raw: str) -> None:
    name = safe_name(raw, "file")
    assert SAFE.fullmatch(name)
    assert len(name) <= MAX_NAME_CHARS
    assert not name.startswith(".")
    assert "/" not in name
    assert name not in {".", ".."}


@settings(PROPERTY)
@given(st.lists(st.text(max_size=40), max_size=30))
def test_names_in_a_task_stay_apart(raws: list[str]) -> None:
    taken: set[str] = set()
    for raw in raws:
        name = unique_name(safe_name(raw, "file"), taken)
        assert name not in taken
        taken.add(name)


@settings(PROPERTY)
@given(st.text(max_size=60), st.none() | st.text(max_size=200))
def test_a_content_type_never_makes_a_page(name: str, declared: str | None) -> None:
    kept = content_type(safe_name(name, "file"), declared)
    assert not kept.startswith(("text/html", "image/", "application/xhtml"))
    assert "\n" not in kept
    assert ";" not in kept
