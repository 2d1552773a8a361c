"""What a rate budget can carry (app/budget/capacity.py): the polls left for status checks,
and how late a request may leave its slot."""

from __future__ import annotations

import pytest

from app.budget.capacity import (
    ARRIVAL_JITTER_S,
    CLOCK_DRIFT,
    SPACING_FACTOR,
    limit_window_s,
    own_spread_s,
    poll_capacity,
    run_late_until,
    send_slack_s,
    window_count,
)


@pytest.mark.parametrize(
    ("rate", "follow_ups", "expected"),
    [
        (10.0, 0.0, 10 / 1.05),  # the spacing margin only
        (10.0, 3.5, 10 / 1.05 - 3.5),  # completions' file retrieves come first
        (10.0, 50.0, 1.0),  # polls always keep a tenth of the rate
        (10.0, -1.0, 10 / 1.05),
        (0.0, 5.0, 0.0),  # unlimited instance: no capacity to plan against
    ],
)
def test_poll_capacity(rate: float, follow_ups: float, expected: float) -> None:
    got = poll_capacity(rate, spacing_factor=1.05, follow_ups_per_s=follow_ups)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "window_s", "slack_s"),
    [
        (100.0, 1.0, 0.008),  # one second, however short the slots
        (10.0, 1.0, 0.008),
        (1.0, 1.0, 0.008),
        (0.5, 2.0, 0.033),  # under 1/s the window is one slot long: the slack grows with it
        (0.2, 5.0, 0.108),
    ],
)
def test_send_slack_is_the_windows_margin_less_the_arrival_jitter(
    rate: float, window_s: float, slack_s: float
) -> None:
    assert limit_window_s(rate) == pytest.approx(window_s)
    assert send_slack_s(rate) == pytest.approx(slack_s)


@pytest.mark.parametrize("rate", [0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 50.0])
def test_sends_within_the_slack_never_put_more_than_the_limit_in_a_window(rate: float) -> None:
    """The worst case of the bound in capacity.py: limit + 1 consecutive slots, the first
    sent as late as the slack and the jitter allow, the last exactly on its slot. They never
    fit in one window (the window is half-open: `t - first < window`)."""
    limit = max(1, int(rate))
    spacing = SPACING_FACTOR / rate
    first_arrives = send_slack_s(rate) + ARRIVAL_JITTER_S
    last_arrives = limit * spacing
    assert last_arrives - first_arrives >= limit_window_s(rate) - 1e-9


@pytest.mark.parametrize(
    ("rate", "count", "spread_s"),
    [
        (100.0, 100, 1.025),
        (10.0, 10, 1.025),
        (1.0, 1, 1.025),
        (0.5, 1, 2.05),  # one request per two seconds
        (0.2, 1, 5.125),
    ],
)
def test_a_replicas_own_sends_are_never_closer_than_its_slots(
    rate: float, count: int, spread_s: float
) -> None:
    assert window_count(rate) == count
    assert own_spread_s(rate) == pytest.approx(spread_s * (1 + CLOCK_DRIFT))
    # That many slots' worth: a window, the arrival jitter and the slack.
    assert count * SPACING_FACTOR / rate == pytest.approx(
        limit_window_s(rate) + ARRIVAL_JITTER_S + send_slack_s(rate)
    )


@pytest.mark.parametrize(
    ("rate", "last_slot", "late_until"),
    [
        (10.0, 100.0, 100.0 - 9 * 0.1025),  # the 10th last slot a run can have
        (4.0, 100.0, 100.0 - 3 * 0.25625),
        (1.0, 100.0, 100.0),  # one per window: the run's last slot itself
        (0.2, 100.0, 100.0),
    ],
)
def test_a_run_may_send_until_its_window_count_th_last_slot(
    rate: float, last_slot: float, late_until: float
) -> None:
    assert run_late_until(last_slot, rate) == pytest.approx(late_until)


@pytest.mark.parametrize("rate", [0.2, 0.5, 1.0, 2.0, 4.0, 10.0, 50.0])
def test_a_run_sent_as_late_as_allowed_never_shares_a_window_with_the_next_run(
    rate: float,
) -> None:
    """The worst case across two replicas: a slot of one replica's run sent at the latest
    moment the run allows, plus the jitter, and the next replica's first slot right after
    the run's last, on time. They are a whole window apart."""
    spacing = SPACING_FACTOR / rate
    last = 50.0
    first_arrives = run_late_until(last, rate) + send_slack_s(rate) + ARRIVAL_JITTER_S
    next_replica_arrives = last + spacing
    assert next_replica_arrives - first_arrives >= limit_window_s(rate) - 1e-9
