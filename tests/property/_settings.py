"""Shared Hypothesis settings for the property tests.

Derandomized so CI runs the same examples every time; no example database (nothing is
written into the tree); no deadline, because timings on a shared runner are noise. Tests
pass their own `max_examples` on top of these.
"""

from __future__ import annotations

from hypothesis import settings

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200)
