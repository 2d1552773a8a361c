"""Shared by the schedule's tests: provider settings for each schedule and completion models
with known shapes (table tests), and strategies for any learned model and any adaptive
settings (property tests); completion samples written to Postgres."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import KIND_DEFAULTS, PollSchedule, ProviderKind, ProviderSettings
from app.core.db import create_sessionmaker
from app.schedule.model import MIN_SAMPLES, PERCENTILES, CompletionModel
from app.schedule.repository import CompletionRepository, Sample
from tests.properties import provider_settings

BASE = {**KIND_DEFAULTS[ProviderKind.MINIMAX_T2A], "kind": ProviderKind.MINIMAX_T2A}
ADAPTIVE = ProviderSettings(
    **{**BASE, "first_poll_delay_s": 1.0, "min_poll_interval_s": 1.0, "max_poll_interval_s": 60.0}
)
# The hit chance alone, to check it apart from the expected-lateness rule.
CHANCE_ONLY = ADAPTIVE.model_copy(update={"poll_lateness_s": 0.0})
BACKOFF = ADAPTIVE.model_copy(update={"schedule": PollSchedule.BACKOFF})
FIXED = ADAPTIVE.model_copy(update={"schedule": PollSchedule.FIXED, "min_poll_interval_s": 5.0})


def uniform(low: float, high: float, samples: int = 100) -> CompletionModel:
    """Completions spread evenly over [low, high]: the CDF is a straight line."""
    return CompletionModel.of([low + (high - low) * p for p in PERCENTILES], samples)


# Most tasks finish between 15 and 25 s; a tenth take up to 200 s (percentiles 90..100).
SKEWED = CompletionModel.of(
    [15 + 10 * i / 90 for i in range(91)] + [25 + 175 * i / 10 for i in range(1, 11)], 500
)

seconds = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
chances = st.floats(min_value=0.01, max_value=0.99)
hit_chances = chances | st.none()


@st.composite
def models(draw: st.DrawFn) -> CompletionModel:
    """Any non-decreasing percentiles: spread out, bunched up, or with long flat runs."""
    start = draw(st.floats(min_value=0.0, max_value=1e4, allow_nan=False))
    steps = draw(
        st.lists(
            st.floats(min_value=0.0, max_value=1e3, allow_nan=False) | st.just(0.0),
            min_size=100,
            max_size=100,
        )
    )
    values = [start]
    for step in steps:
        values.append(values[-1] + step)
    return CompletionModel.of(values, draw(st.integers(min_value=MIN_SAMPLES)))


def adaptive_settings() -> st.SearchStrategy[ProviderSettings]:
    """Any schedule, hit chance and lateness, a first poll delay up to 10 min."""
    return provider_settings(
        shortest_interval_s=0.05,
        first_poll_delay_s=st.floats(min_value=0, max_value=600),
        schedule=st.sampled_from(PollSchedule),
        poll_hit_chance=chances,
        poll_lateness_s=st.floats(min_value=0, max_value=3600),
    )


async def add_samples(
    engine: AsyncEngine, durations: Sequence[float], *, size_class: int | None = None
) -> None:
    async with create_sessionmaker(engine).begin() as session:
        repo = CompletionRepository(session)
        for duration in durations:
            await repo.add_samples([Sample("minimax", size_class, duration)])
