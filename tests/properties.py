"""Shared Hypothesis settings and strategies for the property tests.

Derandomized so CI runs the same examples every time; no example database (nothing is
written into the tree); no deadline, because timings on a shared runner are noise. Tests
pass their own `max_examples` on top of these.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from app.core.config import ProviderKind, ProviderSettings

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200)


@st.composite
def provider_settings(
    draw: st.DrawFn, /, *, shortest_interval_s: float = 0.01, **fields: st.SearchStrategy[Any]
) -> ProviderSettings:
    """A MiniMax instance with any ordered pair of poll intervals between
    `shortest_interval_s` and a day, its first poll at once unless `fields` say otherwise,
    and each of `fields` drawn from its strategy."""
    interval = st.floats(min_value=shortest_interval_s, max_value=86_400, allow_nan=False)
    low, high = sorted((draw(interval), draw(interval)))
    drawn = {name: draw(strategy) for name, strategy in fields.items()}
    return ProviderSettings(
        **{
            "kind": ProviderKind.MINIMAX_T2A,
            "base_url": "https://upstream.example",
            "rate_limit_per_s": 10,
            "first_poll_delay_s": 0,
            "min_poll_interval_s": low,
            "max_poll_interval_s": high,
            "request_timeout_s": 10,
            "deadline_s": 3600,
            **drawn,
        }
    )
