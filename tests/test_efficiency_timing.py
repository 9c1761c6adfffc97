"""``best_times``: the benchmark scripts' timer (interleaved runs, the minimum of each)."""

from __future__ import annotations

import pytest

from workbench.analysis.efficiency import best_times


def test_runs_are_interleaved_after_warmup_and_the_minimum_is_kept():
    calls: list[str] = []
    # a clock that reads 0, 5, 5, 6, 6, 9, 9, 10: a takes 5 then 3, b takes 1 then 1
    ticks = iter([0.0, 5.0, 5.0, 6.0, 6.0, 9.0, 9.0, 10.0])
    t = best_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                   repeats=2, warmup=1, clock=lambda: next(ticks))
    assert calls == ["a", "b", "a", "b", "a", "b"]  # warmup of each, then a, b, a, b
    assert t == {"a": pytest.approx(3.0), "b": pytest.approx(1.0)}


def test_no_repeat_gives_no_time():
    assert best_times({"a": lambda: None}, repeats=0, warmup=0) == {"a": float("inf")}
