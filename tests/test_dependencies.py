"""Dependencies whose absence would not fail anything, only slow the service down."""

from __future__ import annotations

import importlib.util


def test_sniffio_is_importable_for_httpcore() -> None:
    # httpcore imports sniffio inside every lock/event it creates and does not cache a
    # failed import: without it every upstream request pays several sys.path searches.
    assert importlib.util.find_spec("sniffio") is not None
