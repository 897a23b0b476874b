"""The regression guard: a ratio below half its goal fails the smoke benchmark, one at or above it never does."""

from __future__ import annotations

from benchmarks.goals import GOALS, GUARD_FRACTION, below_guard, goal_lines
from benchmarks.run import BENCHES


def test_every_goal_is_a_key_a_benchmark_reports() -> None:
    promised = {key for _, keys in BENCHES for key in keys}
    assert set(GOALS) <= promised and len(GOALS) >= 5


def test_a_ratio_below_half_its_goal_is_named_and_one_at_half_passes() -> None:
    values = {key: goal * GUARD_FRACTION for key, goal in GOALS.items()}
    assert below_guard(values) == []
    values["receiver.ratio_vs_bare_pull"] = 0.40
    assert below_guard(values) == ["receiver.ratio_vs_bare_pull = 0.400, below 0.5 x its goal 0.95"]


def test_the_goals_table_says_which_are_met() -> None:
    lines = goal_lines({"writer.ratio_vs_raw_write": 0.96, "red.fps_vs_raw_writer": 0.9, "unrelated": 1.0})
    assert len(lines) == 2
    assert lines[0].startswith("writer.ratio_vs_raw_write") and lines[0].endswith("met") and "NOT" not in lines[0]
    assert lines[1].startswith("red.fps_vs_raw_writer") and lines[1].endswith("NOT met")
