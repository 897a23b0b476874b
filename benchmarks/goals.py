"""What each ratio to a baseline must reach (``make bench`` prints whether it does), and the regression guard.

Every goal here is a ratio measured against a baseline in the same run, so it means the same on any machine.
``make test`` runs the benchmarks at smoke size and fails when a ratio falls below half its goal
(``GUARD_FRACTION``): coarse enough that the noise of a shared 2-core machine cannot fail CI (the lowest
rounds seen are ~0.7 of the goal), while a 2× regression cannot land.
"""

from __future__ import annotations

from collections.abc import Mapping

GOALS: dict[str, float] = {
    "writer.ratio_vs_raw_write": 0.95,  # the writer device's chain vs a plain sequential write + fsync
    "writer.checked_ratio": 0.90,  # verifying every chunk costs the writer at most 10 %
    "receiver.ratio_vs_bare_pull": 0.95,  # our receive thread vs a bare pyzmq PULL loop
    "agipd.ratio_vs_bare_client": 0.95,  # receive + assemble + write vs a bare karabo_bridge.Client
    "red.fps_vs_raw_writer": 1.0,  # RED (hits only + rounding) is never slower than writing everything
    "e2e.live_view_ratio": 0.97,  # the live view at its default rate costs the chain at most 3 %
}
GUARD_FRACTION = 0.5


def below_guard(values: Mapping[str, float]) -> list[str]:
    """One line for each goal whose ratio fell below ``GUARD_FRACTION`` of it."""
    return [f"{key} = {values[key]:.3f}, below {GUARD_FRACTION:g} x its goal {goal:g}"
            for key, goal in GOALS.items() if key in values and values[key] < GUARD_FRACTION * goal]


def goal_lines(values: Mapping[str, float]) -> list[str]:
    """The goals table ``make bench`` ends with: each ratio, its goal, and whether it is met."""
    width = max(map(len, GOALS))
    return [f"{key:<{width}}  {values[key]:>6.3f}  goal >= {goal:<5g} {'met' if values[key] >= goal else 'NOT met'}"
            for key, goal in GOALS.items() if key in values]
