"""Unit tests for the pure TELL mixing plan (axolotl_tell/plan.py).

These tests import numpy and the plan module only: no axolotl, torch or datasets.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from axolotl_tell.plan import (
    AUTO_MAX_REPEATS,
    AUTO_MIN_REPEATS,
    MAX_PLANNED_ROWS,
    PlanError,
    PlanTooLargeError,
    auto_task_repeats,
    build_plan,
    even_task_slots,
    plan_sha256,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers


def _split(plan):
    """(general ids in order, task row ids in order) of a plan's order."""
    n = plan.general_rows_available
    order = plan.order
    gen = order[order < n]
    task = order[order >= n] - n
    return gen, task


def _pool(n: int, seed: int = 0, low: int = 0, high: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=n).astype(np.int64)


def _subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# ----------------------------------------------------------------------------- purity


def test_import_pulls_in_no_axolotl_torch_or_datasets():
    out = _run_python(
        "import sys, json\n"
        "import axolotl_tell.plan\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('axolotl', 'torch', 'datasets'))\n"
        "print(json.dumps({'bad': bad, 'numpy': 'numpy' in sys.modules,"
        " 'plan': 'axolotl_tell.plan' in sys.modules}))\n"
    )
    result = json.loads(out.splitlines()[-1])
    assert result == {"bad": [], "numpy": True, "plan": True}


# ----------------------------------------------------------------------------- counts


def test_counts_by_hand():
    task_sup = [3, 5, 2]  # 10 per pass
    task_len = [10, 20, 30]  # 60 per pass
    gen_sup = np.full(40, 2, dtype=np.int64)
    gen_len = gen_sup + 7
    plan = build_plan(
        task_sup, gen_sup, task_repeats=4, general_ratio=1.5, seed=1,
        task_lengths=task_len, general_lengths=gen_len,
    )
    # budget = ceil(1.5 * 10 * 4) = 60 supervised tokens -> 30 rows of 2 tokens
    assert plan.task_rows == 3
    assert plan.task_repeats == 4
    assert plan.task_occurrences == 12
    assert plan.task_supervised_tokens == 40
    assert plan.task_tokens == 240
    assert plan.general_tokens_requested == 60
    assert plan.general_rows_available == 40
    assert plan.general_rows_used == 30
    assert plan.general_occurrences == 30
    assert plan.general_supervised_tokens == 60
    assert plan.general_tokens == 30 * 9
    assert plan.ratio_requested == 1.5
    assert plan.ratio_achieved == 1.5
    assert plan.shortfall is None
    assert plan.warnings == []
    assert plan.spread == "even"
    assert plan.seed == 1
    assert plan.order.size == 42
    assert plan.order.dtype == np.int64


def test_overshoot_is_one_row_at_most():
    # 3 tokens a row, budget 16 -> 6 rows (18 tokens); budget 15 -> 5 rows (15 tokens)
    gen = np.full(20, 3)
    p16 = build_plan([16], gen, task_repeats=1, general_ratio=None, general_tokens=16)
    p15 = build_plan([16], gen, task_repeats=1, general_ratio=None, general_tokens=15)
    assert (p16.general_rows_used, p16.general_supervised_tokens) == (6, 18)
    assert (p15.general_rows_used, p15.general_supervised_tokens) == (5, 15)
    assert p16.ratio_achieved == 18 / 16
    assert p15.ratio_achieved == 15 / 16


@pytest.mark.parametrize("spread", ["even", "random"])
@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_counts_random_inputs(spread, seed):
    rng = np.random.default_rng(seed)
    task_sup = rng.integers(1, 30, size=7)
    task_len = task_sup + rng.integers(0, 20, size=7)
    gen_sup = rng.integers(0, 40, size=500)
    gen_len = gen_sup + rng.integers(0, 20, size=500)
    plan = build_plan(
        task_sup, gen_sup, task_repeats=3, general_ratio=4.0, spread=spread, seed=seed,
        task_lengths=task_len, general_lengths=gen_len,
    )
    gen, task = _split(plan)

    # every task row exactly `task_repeats` times
    assert np.array_equal(np.bincount(task, minlength=7), np.full(7, 3))
    # length = general occurrences + task occurrences
    assert plan.order.size == plan.general_occurrences + plan.task_occurrences
    assert plan.general_occurrences == gen.size
    assert plan.task_occurrences == task.size == 21
    # general rows are distinct when not up-sampling
    assert np.unique(gen).size == gen.size == plan.general_rows_used
    assert gen.min() >= 0 and gen.max() < 500
    # sums by hand
    assert plan.task_supervised_tokens == int(task_sup.sum()) * 3
    assert plan.task_tokens == int(task_len.sum()) * 3
    assert plan.general_supervised_tokens == int(gen_sup[gen].sum())
    assert plan.general_tokens == int(gen_len[gen].sum())
    assert plan.general_tokens_requested == math.ceil(4.0 * int(task_sup.sum()) * 3)
    assert plan.ratio_achieved == plan.general_supervised_tokens / plan.task_supervised_tokens


def test_lengths_omitted_report_zero_tokens():
    plan = build_plan([4, 4], [5] * 10, task_repeats=2, general_ratio=1.0)
    assert plan.task_tokens == 0
    assert plan.general_tokens == 0
    assert plan.general_supervised_tokens == 20  # budget 16 -> 4 rows of 5


def test_mixplan_helpers():
    plan = build_plan([1, 2, 3], _pool(100), task_repeats=2, general_ratio=3.0, seed=5)
    assert plan.sha256 == plan_sha256(plan.order)
    pos = plan.task_positions()
    assert pos.dtype == np.int64
    assert np.array_equal(pos, np.flatnonzero(plan.order >= 100))
    assert pos.size == plan.task_occurrences == 6


# ----------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("seed", range(12))
def test_ratio_budget_is_minimal_prefix(seed):
    rng = np.random.default_rng(1000 + seed)
    task_sup = rng.integers(1, 20, size=5)
    gen_sup = rng.integers(0, 30, size=400)  # includes zero rows
    ratio = float(rng.choice([0.5, 1.0, 2.5, 7.3]))
    repeats = int(rng.integers(1, 4))
    plan = build_plan(task_sup, gen_sup, task_repeats=repeats, general_ratio=ratio, seed=seed)
    budget = math.ceil(ratio * int(task_sup.sum()) * repeats)
    assert plan.general_tokens_requested == budget
    gen, _ = _split(plan)
    chosen = np.sort(gen)  # the shortest prefix of the rows in scan order, then ordered by the seed
    assert chosen.tolist() == list(range(chosen.size))
    cum = np.cumsum(gen_sup[chosen])
    assert cum[-1] >= budget
    assert plan.general_supervised_tokens == cum[-1]
    # dropping the last row of the prefix falls short of the budget
    assert (cum[-2] if chosen.size > 1 else 0) < budget


def test_ratio_budget_rounds_up():
    # ceil(2.5 * 7) = 18
    plan = build_plan([7], np.ones(100, dtype=np.int64), task_repeats=1, general_ratio=2.5)
    assert plan.general_tokens_requested == 18
    assert plan.general_supervised_tokens == 18
    assert plan.general_occurrences == 18
    assert plan.ratio_achieved == 18 / 7


def test_absolute_general_tokens_budget():
    gen_sup = _pool(300, seed=3, low=0, high=25)
    plan = build_plan([10, 20], gen_sup, task_repeats=2, general_ratio=None, general_tokens=777, seed=9)
    assert plan.general_tokens_requested == 777
    assert plan.ratio_requested is None
    gen, _ = _split(plan)
    chosen = np.sort(gen)
    assert chosen.tolist() == list(range(chosen.size))
    cum = np.cumsum(gen_sup[chosen])
    assert cum[-1] >= 777 > cum[-2]
    assert plan.general_supervised_tokens == int(cum[-1])
    assert plan.ratio_achieved == int(cum[-1]) / 60


def test_zero_general_tokens_gives_task_only_plan():
    plan = build_plan([2, 3], [4, 5, 6], task_repeats=3, general_ratio=None, general_tokens=0)
    assert plan.general_occurrences == 0
    assert plan.general_rows_used == 0
    assert plan.general_supervised_tokens == 0
    assert plan.ratio_achieved == 0.0
    assert plan.order.size == 6
    assert np.all(plan.order >= 3)


def test_task_rows_without_supervised_tokens_need_no_general():
    plan = build_plan([0, 0], [1, 2, 3], task_repeats=2, general_ratio=5.0)
    assert plan.task_supervised_tokens == 0
    assert plan.general_tokens_requested == 0
    assert plan.general_occurrences == 0
    assert plan.ratio_achieved == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(general_ratio=2.0, general_tokens=10), "exactly one"),
        (dict(general_ratio=None, general_tokens=None), "exactly one"),
        (dict(general_ratio=0.0), "general_ratio"),
        (dict(general_ratio=-1.0), "general_ratio"),
        (dict(general_ratio=float("nan")), "general_ratio"),
        (dict(general_ratio=None, general_tokens=-1), "general_tokens"),
        (dict(task_repeats=0), "task_repeats"),
        (dict(task_repeats=-2), "task_repeats"),
        (dict(spread="uniform"), "spread"),
        (dict(shortfall="ignore"), "shortfall"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(PlanError, match=match):
        build_plan([1, 2], [5] * 10, **kwargs)


def test_empty_task_list():
    with pytest.raises(PlanError, match="no task rows"):
        build_plan([], [5] * 10, general_ratio=1.0)


def test_bad_count_arrays():
    with pytest.raises(PlanError, match="negative"):
        build_plan([1, -1], [5] * 10)
    with pytest.raises(PlanError, match="negative"):
        build_plan([1, 1], [5, -5])
    with pytest.raises(PlanError, match="flat"):
        build_plan([[1, 2]], [5] * 10)


def _peak_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "kwargs, numbers",
    [
        # `tell_general_ratio: 1e12` with upsample: 10^14 general rows; refused from the counts
        (dict(task_repeats=3, general_ratio=1e12, shortfall="upsample"),
         [r"36 task rows x 3 repeats = 108 task occurrences", r"pool has 100 rows with 500 supervised"]),
        # `tell_task_repeats: 1000000`: a 36-million-row task sequence (plus general rows)
        (dict(task_repeats=1_000_000, general_ratio=2.0, shortfall="upsample"),
         [r"36 task rows x 1,000,000 repeats = 36,000,000 task occurrences"]),
        (dict(task_repeats=1, general_ratio=None, general_tokens=10**15, shortfall="upsample"),
         [r"to reach 1,000,000,000,000,000 general supervised tokens"]),
    ],
)
def test_a_huge_plan_is_refused_before_anything_is_allocated(kwargs, numbers):
    task, pool = [10] * 36, [5] * 100
    start = time.perf_counter()
    with pytest.raises(PlanTooLargeError) as info:
        build_plan(task, pool, seed=1, **kwargs)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert f"more than the maximum of {MAX_PLANNED_ROWS:,}" in message, message
    for pattern in numbers:
        assert re.search(pattern, message), message
    peak = _peak_bytes(lambda: pytest.raises(PlanTooLargeError, build_plan, task, pool, seed=1, **kwargs))
    assert peak < 1_000_000, peak  # the counts only: no permutation, no order


def test_plan_size_bound_counts_what_the_plan_would_hold():
    from axolotl_tell.plan import check_plan_size, general_rows_needed

    assert general_rows_needed(500, 100, 0, "upsample") == 0
    assert general_rows_needed(500, 100, 250, "error") == 50  # half the pool's tokens: about half its rows
    assert general_rows_needed(500, 100, 5000, "warn") == 100  # a short pool gives all it has
    assert general_rows_needed(500, 100, 1250, "upsample") == 250  # two passes and a half
    check_plan_size(10, 5, 50, 1000, 100, 2000, max_rows=100)  # exactly at the bound: fine
    with pytest.raises(PlanTooLargeError, match="about 101 rows, more than the maximum of 100"):
        check_plan_size(10, 5, 51, 1000, 100, 2000, max_rows=100)
    # a big but legal upsampled plan still builds
    plan = build_plan([10] * 4, [5] * 100, task_repeats=2, general_ratio=100.0, shortfall="upsample", seed=0)
    assert plan.order.size == 8 + 1600


def test_plan_error_is_value_error():
    assert issubclass(PlanError, ValueError)


# ----------------------------------------------------------------------------- shortfall


def test_shortfall_error_names_both_numbers():
    # pool has 1+2+3 = 6 tokens; budget = ceil(2 * 5) = 10
    with pytest.raises(PlanError) as info:
        build_plan([5], [1, 2, 3], task_repeats=1, general_ratio=2.0, shortfall="error")
    msg = str(info.value)
    assert re.search(r"\b6\b", msg) and re.search(r"\b10\b", msg), msg


@pytest.mark.parametrize("spread", ["even", "random"])
def test_shortfall_warn_uses_whole_pool(spread):
    gen_sup = [1, 2, 3]
    plan = build_plan([5], gen_sup, task_repeats=1, general_ratio=2.0, shortfall="warn", spread=spread)
    gen, task = _split(plan)
    assert sorted(gen.tolist()) == [0, 1, 2]
    assert task.tolist() == [0]
    assert plan.shortfall == "warn"
    assert plan.general_rows_used == 3
    assert plan.general_occurrences == 3
    assert plan.general_supervised_tokens == 6
    assert plan.general_tokens_requested == 10
    assert plan.ratio_achieved == 6 / 5
    assert len(plan.warnings) == 1
    assert "achieved ratio 1.20" in plan.warnings[0]
    assert "6 of 10" in plan.warnings[0]


def test_no_shortfall_when_pool_exactly_meets_budget():
    plan = build_plan([5], [1, 2, 3, 4], task_repeats=1, general_ratio=2.0, shortfall="error")
    assert plan.shortfall is None
    assert plan.general_supervised_tokens == 10
    assert plan.general_rows_used == 4


@pytest.mark.parametrize("seed", range(8))
def test_shortfall_upsample(seed):
    gen_sup = np.array([1, 2, 3, 0, 4])  # 10 tokens per pass
    gen_len = gen_sup + 100
    # budget = ceil(3 * 7) = 21 -> two full passes and a partial pass for 1 token
    plan = build_plan(
        [7], gen_sup, task_repeats=1, general_ratio=3.0, shortfall="upsample", seed=seed,
        general_lengths=gen_len,
    )
    gen, _ = _split(plan)
    assert plan.shortfall == "upsample"
    assert plan.general_rows_used == 5
    assert plan.general_occurrences == gen.size > 5
    assert plan.general_supervised_tokens >= 21
    assert plan.general_supervised_tokens == int(gen_sup[gen].sum())
    assert plan.general_tokens == int(gen_len[gen].sum())
    for k in range(2):
        assert sorted(gen[5 * k: 5 * k + 5].tolist()) == [0, 1, 2, 3, 4]
    partial = gen[10:]
    assert partial.size >= 1
    assert np.unique(partial).size == partial.size
    cum = np.cumsum(gen_sup[partial])
    assert cum[-1] >= 1 and (cum[-2] if partial.size > 1 else 0) < 1
    assert plan.warnings == []


def test_shortfall_upsample_exact_multiple():
    gen_sup = np.array([1, 2, 3, 4])  # 10 per pass; budget 30 -> exactly 3 passes
    plan = build_plan([10], gen_sup, task_repeats=1, general_ratio=3.0, shortfall="upsample", seed=4)
    gen, _ = _split(plan)
    assert gen.size == plan.general_occurrences == 12
    assert plan.general_supervised_tokens == 30
    assert plan.ratio_achieved == 3.0
    for k in range(3):
        assert sorted(gen[4 * k: 4 * k + 4].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("shortfall", ["error", "warn", "upsample"])
def test_zero_supervised_general_pool_raises(shortfall):
    with pytest.raises(PlanError, match="no supervised tokens"):
        build_plan([3, 4], [0, 0, 0, 0], task_repeats=2, general_ratio=1.0, shortfall=shortfall)
    with pytest.raises(PlanError, match="no supervised tokens"):
        build_plan([3, 4], [], task_repeats=2, general_ratio=None, general_tokens=1, shortfall=shortfall)


def test_zero_supervised_general_pool_ok_with_zero_budget():
    plan = build_plan([3, 4], [0, 0, 0], task_repeats=2, general_ratio=None, general_tokens=0)
    assert plan.general_occurrences == 0
    assert plan.general_rows_available == 3
    assert sorted(plan.order.tolist()) == [3, 3, 4, 4]


# ----------------------------------------------------------------------------- auto repeats


@pytest.mark.parametrize(
    "rows, repeats",
    [(1, 20), (10, 20), (30, 20), (31, 20), (40, 15), (99, 7), (100, 6), (300, 2), (599, 2), (600, 1), (10000, 1)],
)
def test_auto_task_repeats(rows, repeats):
    assert auto_task_repeats(rows) == repeats
    assert isinstance(auto_task_repeats(rows), int)
    assert AUTO_MIN_REPEATS <= repeats <= AUTO_MAX_REPEATS


def test_auto_task_repeats_rejects_no_rows():
    with pytest.raises(PlanError):
        auto_task_repeats(0)


@pytest.mark.parametrize("rows, repeats", [(10, 20), (30, 20), (100, 6), (600, 1)])
def test_build_plan_auto_repeats(rows, repeats):
    plan = build_plan(np.ones(rows, dtype=np.int64), np.ones(50, dtype=np.int64),
                      task_repeats="auto", general_ratio=None, general_tokens=5)
    assert plan.task_repeats == repeats
    _, task = _split(plan)
    assert np.array_equal(np.bincount(task, minlength=rows), np.full(rows, repeats))
    # "auto" is the default
    default = build_plan(np.ones(rows, dtype=np.int64), np.ones(50, dtype=np.int64),
                         general_ratio=None, general_tokens=5)
    assert default.task_repeats == repeats


# ----------------------------------------------------------------------------- spread: even


def test_even_task_slots_exact():
    assert even_task_slots(10, 3).tolist() == [1, 5, 8]
    assert even_task_slots(5, 2).tolist() == [1, 3]
    assert even_task_slots(7, 7).tolist() == list(range(7))
    assert even_task_slots(100, 1).tolist() == [50]
    assert even_task_slots(9, 4).tolist() == [1, 3, 5, 7]
    assert even_task_slots(10, 0).tolist() == []
    assert even_task_slots(10, 3).dtype == np.int64


def _check_gaps(slots: np.ndarray, total: int, count: int):
    assert slots.size == count
    assert slots.min() >= 0 and slots.max() < total
    if count < 2:
        return
    ideal = total / count
    gaps = np.diff(slots)
    assert gaps.min() >= math.floor(ideal), (total, count, gaps)
    assert gaps.max() <= math.ceil(ideal), (total, count, gaps)
    assert gaps.min() >= 1
    # within 2x of the ideal gap
    assert gaps.max() <= 2 * ideal and gaps.min() >= ideal / 2


def test_even_task_slots_gaps_exhaustive():
    for total in range(1, 61):
        for count in range(1, total + 1):
            slots = even_task_slots(total, count)
            _check_gaps(slots, total, count)
            # half a gap from the start
            assert slots[0] == total // (2 * count)


@pytest.mark.parametrize(
    "general, task_rows, repeats",
    [
        (0, 1, 1), (0, 3, 4), (0, 10, 1),        # T == N
        (1, 3, 2), (2, 5, 2), (5, 4, 3),         # T > N/2
        (6, 3, 2), (7, 2, 4),                    # T ~ N/2
        (100, 1, 1), (100, 3, 3), (997, 7, 5),   # T << N
        (50, 1, 20), (13, 2, 20),
    ],
)
@pytest.mark.parametrize("seed", [0, 3])
def test_even_plan_gaps(general, task_rows, repeats, seed):
    # one supervised token per general row: `general_tokens` = number of general occurrences
    plan = build_plan(np.ones(task_rows, dtype=np.int64), np.ones(max(general, 1) + 5, dtype=np.int64),
                      task_repeats=repeats, general_ratio=None, general_tokens=general, seed=seed)
    total = general + task_rows * repeats
    assert plan.order.size == total
    pos = plan.task_positions()
    assert np.array_equal(pos, even_task_slots(total, task_rows * repeats))
    _check_gaps(pos, total, task_rows * repeats)


@pytest.mark.parametrize("task_rows", [2, 3, 5])
@pytest.mark.parametrize("repeats", [2, 7])
def test_even_no_task_row_twice_in_a_row(task_rows, repeats):
    for seed in range(150):
        plan = build_plan(np.ones(task_rows, dtype=np.int64), np.ones(20, dtype=np.int64),
                          task_repeats=repeats, general_ratio=None, general_tokens=3, seed=seed)
        _, task = _split(plan)
        assert np.all(task[1:] != task[:-1]), (seed, task)
        # each round of `task_rows` occurrences is a permutation of the task rows
        rounds = np.sort(task.reshape(repeats, task_rows), axis=1)
        assert np.array_equal(rounds, np.tile(np.arange(task_rows), (repeats, 1)))


def test_even_no_task_row_twice_in_a_row_task_only():
    # T == N: task occurrences are adjacent in the order itself
    for seed in range(150):
        plan = build_plan([1, 1], [1], task_repeats=10, general_ratio=None, general_tokens=0, seed=seed)
        assert np.all(plan.order[1:] != plan.order[:-1])
        assert sorted(plan.order.tolist()) == [1] * 10 + [2] * 10


def test_single_task_row_repeats():
    plan = build_plan([4], np.ones(30, dtype=np.int64), task_repeats=5, general_ratio=None, general_tokens=10)
    _, task = _split(plan)
    assert task.tolist() == [0] * 5


# ----------------------------------------------------------------------------- spread: random


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 20, size=6), rng.integers(0, 30, size=300)


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_random_spread_same_multiset_as_even(seed):
    task_sup, gen_sup = _inputs()
    even = build_plan(task_sup, gen_sup, task_repeats=3, general_ratio=3.0, spread="even", seed=seed)
    rand = build_plan(task_sup, gen_sup, task_repeats=3, general_ratio=3.0, spread="random", seed=seed)
    assert rand.order.dtype == np.int64
    assert np.array_equal(np.sort(rand.order), np.sort(even.order))
    assert not np.array_equal(rand.order, even.order)
    for field in ("general_occurrences", "general_rows_used", "general_supervised_tokens",
                  "task_supervised_tokens", "ratio_achieved"):
        assert getattr(rand, field) == getattr(even, field)
    assert rand.spread == "random"


def test_random_spread_determinism_and_seed_dependence():
    task_sup, gen_sup = _inputs()
    a = build_plan(task_sup, gen_sup, task_repeats=3, general_ratio=3.0, spread="random", seed=5)
    b = build_plan(task_sup, gen_sup, task_repeats=3, general_ratio=3.0, spread="random", seed=5)
    c = build_plan(task_sup, gen_sup, task_repeats=3, general_ratio=3.0, spread="random", seed=6)
    assert np.array_equal(a.order, b.order)
    assert not np.array_equal(a.order, c.order)
    assert a.sha256 == b.sha256 != c.sha256


def test_random_spread_placement_depends_on_seed():
    # The whole pool is used, so the multiset is the same for every seed: the task
    # positions then come from the seeded shuffle alone.
    gen_sup = np.ones(60, dtype=np.int64)
    masks = set()
    for seed in range(6):
        plan = build_plan([1, 1, 1], gen_sup, task_repeats=2, general_ratio=None, general_tokens=60,
                          spread="random", seed=seed)
        assert sorted(plan.order.tolist()) == list(range(60)) + [60, 60, 61, 61, 62, 62]
        masks.add(tuple(plan.task_positions().tolist()))
    assert len(masks) == 6


# ----------------------------------------------------------------------------- determinism


_SHA_CODE = """
import numpy as np
from axolotl_tell.plan import build_plan
task = (np.arange(17) * 31) % 23 + 1
gen = (np.arange(5000) * 7919) % 97
for spread in ("even", "random"):
    print(build_plan(task, gen, task_repeats=3, general_ratio=2.5, spread=spread, seed=1234).sha256)
"""


def _sha_inputs():
    return (np.arange(17) * 31) % 23 + 1, (np.arange(5000) * 7919) % 97


def test_same_inputs_same_plan_in_process():
    task, gen = _sha_inputs()
    a = build_plan(task, gen, task_repeats=3, general_ratio=2.5, seed=1234)
    b = build_plan(list(task), list(gen), task_repeats=3, general_ratio=2.5, seed=1234)
    assert np.array_equal(a.order, b.order)
    assert a.sha256 == b.sha256


def test_same_sha_in_another_process():
    task, gen = _sha_inputs()
    local = [build_plan(task, gen, task_repeats=3, general_ratio=2.5, spread=s, seed=1234).sha256
             for s in ("even", "random")]
    remote = _run_python(_SHA_CODE).splitlines()
    assert remote == local
    assert len(set(local)) == 2


def test_different_seed_different_plan():
    task, gen = _sha_inputs()
    shas = {build_plan(task, gen, task_repeats=3, general_ratio=2.5, seed=s).sha256 for s in range(10)}
    assert len(shas) == 10


def test_plan_sha256_little_endian_int64():
    values = [1, -2, 3, 2**40, 0]
    expected = hashlib.sha256(struct.pack("<5q", *values)).hexdigest()
    for dtype in ("<i8", ">i8", "<i4", ">i4"):
        if dtype.endswith("4"):
            vals = [v for v in values if abs(v) < 2**31]
            exp = hashlib.sha256(struct.pack(f"<{len(vals)}q", *vals)).hexdigest()
        else:
            vals, exp = values, expected
        assert plan_sha256(np.array(vals, dtype=dtype)) == exp, dtype
    # non-contiguous input hashes its values
    arr = np.arange(10, dtype=np.int64)[::2]
    assert plan_sha256(arr) == hashlib.sha256(struct.pack("<5q", 0, 2, 4, 6, 8)).hexdigest()
    assert plan_sha256(np.empty(0, dtype=np.int64)) == hashlib.sha256(b"").hexdigest()


# ----------------------------------------------------------------------------- scale


def test_million_row_pool_is_fast():
    gen_sup = np.random.default_rng(0).integers(0, 500, size=1_000_000)
    task_sup = np.full(100, 50)
    start = time.perf_counter()
    plan = build_plan(task_sup, gen_sup, task_repeats=2, general_ratio=2000.0, seed=3)
    elapsed = time.perf_counter() - start
    # generous bound: about 0.1 s on a laptop-class CPU
    assert elapsed < 2.0, elapsed
    assert plan.order.dtype == np.int64
    assert plan.general_tokens_requested == 2000 * 100 * 50 * 2
    assert plan.general_supervised_tokens >= plan.general_tokens_requested
    assert plan.order.size == plan.general_occurrences + 200
    assert plan.general_rows_available == 1_000_000
