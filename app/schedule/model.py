"""What an instance has learned about when its tasks finish (pure).

The completion model is the empirical distribution of completion ages (seconds from
registration to done), summarised by its percentiles 0..100, per provider instance and per
size class of `size_hint`. `app/schedule/plans.py` plans polls with it; `pricing.py` prices
those plans against the budget.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Past the 99th percentile the distribution is a handful of samples, and its last segment
# is all the mass there is: conditional quantiles there shrink towards the largest age
# ever seen, and polls bunched up just before it (measured: 16 polls of one task within
# 55 s). A task that has outlived 99 % of completions goes back to the backoff curve.
TRUSTED_UP_TO = 0.99
# Percentiles 0..100 summarise a learned distribution (101 points).
PERCENTILES = tuple(i / 100 for i in range(101))
# Completions an instance (or a size class) must have seen before its distribution is used.
MIN_SAMPLES = 20
# The most recent completions per instance and per size class that the distribution uses:
# recent enough to follow an upstream that speeds up or slows down.
SAMPLE_WINDOW = 1000
# Size classes are half-octaves of size_hint: 1000 and 1400 characters share one, 2000
# does not.
SIZE_CLASS_STEPS_PER_OCTAVE = 2
ALL_SIZES = -1


def size_class(size_hint: int | None) -> int | None:
    """The learning bucket of a task's size hint; None without one."""
    if size_hint is None or size_hint < 1:
        return None
    return math.floor(SIZE_CLASS_STEPS_PER_OCTAVE * math.log2(size_hint))


@dataclass(frozen=True)
class CompletionModel:
    """An empirical distribution of completion ages, as its percentiles 0..100.

    The CDF interpolates linearly between percentiles, so it is continuous and strictly
    increasing across the observed range; ages past the largest observation have no
    prediction (the task has outlived everything seen).
    """

    quantiles: tuple[float, ...]
    samples: int
    # The integral of the CDF from 0 up to each percentile: expected lateness in O(log n).
    _area: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.quantiles) != len(PERCENTILES):
            raise ValueError(f"need {len(PERCENTILES)} percentiles, got {len(self.quantiles)}")
        if any(b < a for a, b in zip(self.quantiles, self.quantiles[1:], strict=False)):
            raise ValueError("percentiles must not decrease")
        area = [0.0]
        for i in range(100):
            width = self.quantiles[i + 1] - self.quantiles[i]
            area.append(area[-1] + width * (i + 0.5) / 100)
        object.__setattr__(self, "_area", tuple(area))

    @classmethod
    def of(cls, quantiles: Sequence[float], samples: int) -> CompletionModel:
        return cls(tuple(max(0.0, float(q)) for q in quantiles), samples)

    @classmethod
    def learned(cls, quantiles: Sequence[float], samples: int) -> CompletionModel | None:
        """A stored profile as a model to plan and predict with; None while it has fewer
        than MIN_SAMPLES completions, or if its percentiles do not fit this version."""
        if samples < MIN_SAMPLES or len(quantiles) != len(PERCENTILES):
            return None
        return cls.of(quantiles, samples)

    @property
    def last(self) -> float:
        return self.quantiles[-1]

    def survival_integral(self, age_s: float) -> float:
        """∫ (1 - F(t)) dt from `age_s` on: the expected time a task still has to run,
        weighted by the chance it is still running (the mean duration from age 0)."""
        if age_s >= self.last:
            return 0.0
        return (self.last - age_s) - (self.integral(self.last) - self.integral(age_s))

    def _segment(self, age_s: float) -> int:
        """i with q[i] <= age < q[i + 1], a segment of positive width (q[0] <= age < q[-1])."""
        return bisect.bisect_right(self.quantiles, age_s) - 1

    def cdf(self, age_s: float) -> float:
        q = self.quantiles
        if age_s < q[0]:
            return 0.0
        if age_s >= q[-1]:
            return 1.0
        i = self._segment(age_s)
        return (i + (age_s - q[i]) / (q[i + 1] - q[i])) / 100

    def integral(self, age_s: float) -> float:
        """∫ F(t) dt from 0 to `age_s`: how long, in total, a completion had been waiting
        by then, on average over all tasks."""
        q = self.quantiles
        if age_s <= q[0]:
            return 0.0
        if age_s >= q[-1]:
            return self._area[-1] + (age_s - q[-1])
        i = self._segment(age_s)
        return self._area[i] + (age_s - q[i]) * (i / 100 + self.cdf(age_s)) / 2

    def quantile(self, p: float) -> float:
        x = min(max(p, 0.0), 1.0) * 100
        i = min(int(x), 99)
        return self.quantiles[i] + (x - i) * (self.quantiles[i + 1] - self.quantiles[i])

    def conditional_quantile(self, age_s: float, p: float) -> float | None:
        """The age by which a task still running at `age_s` has finished with chance `p`;
        None once the task has outlived TRUSTED_UP_TO of the completions seen."""
        done = self.cdf(age_s)
        if done >= TRUSTED_UP_TO:
            return None
        return max(age_s, self.quantile(done + p * (1.0 - done)))

    def lateness(self, age_s: float, at_s: float) -> float:
        """E[(at - T)+ | T > age]: how long a task still running at `age_s` will on average
        have been done, by `at_s`, if it finishes in between."""
        done = self.cdf(age_s)
        if at_s <= age_s:
            return 0.0
        if done >= 1.0:  # outlived every observation: as if it finished right away
            return at_s - age_s
        gained = self.integral(at_s) - self.integral(age_s) - done * (at_s - age_s)
        return gained / (1.0 - done)

    def lateness_age(self, age_s: float, lateness_s: float) -> float | None:
        """The age at which `lateness` from `age_s` reaches `lateness_s`; None once the
        task has outlived TRUSTED_UP_TO of the completions seen."""
        done = self.cdf(age_s)
        if done >= TRUSTED_UP_TO:
            return None
        if lateness_s <= 0:
            return age_s
        q = self.quantiles
        need = lateness_s * (1.0 - done)

        def gained(at_s: float) -> float:
            return self.integral(at_s) - self.integral(age_s) - done * (at_s - age_s)

        by_last = gained(q[-1])
        if by_last < need:  # past every observation F = 1
            return q[-1] + (need - by_last) / (1.0 - done)
        # The first percentile point by which enough is gained; gained() never decreases.
        lo, hi = self._segment(age_s) if age_s >= q[0] else 0, 100
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if q[mid] > age_s and gained(q[mid]) >= need:
                hi = mid
            else:
                lo = mid
        start = max(age_s, q[lo])
        rest = need - gained(start)
        width = q[hi] - q[lo]
        if rest <= 0:  # enough is gained at the segment's start already
            return start
        if width <= 0:  # a repeated percentile: the CDF jumps there
            return q[hi]
        # Over [q[lo], q[hi]] the CDF is a line: gained grows by b z + k z^2 / 2.
        b = self.cdf(start) - done
        k = 0.01 / width
        # The positive root of k z^2 / 2 + b z - rest, in the form that adds two
        # non-negative terms (the other form cancels: 0 / 0 for a tiny rest, or b <= 0).
        disc = math.sqrt(b * b + 2 * k * rest)
        z = 2 * rest / (b + disc) if b > 0 else (disc - b) / k
        return min(q[hi], start + z)
