"""The TELL mixing plan: which rows the run trains on, and in what order.

PURE: this module imports numpy only (no Axolotl, torch or datasets), so every
rank computes the identical plan from the same inputs with no communication,
and tests can check it exhaustively.

Inputs are per-row *supervised* token counts (labels != -100) of the anchored
task rows and of the general pool, both after tokenization with the real
tokenizer. The output is one int64 array of row ids into the concatenation
``[general pool rows..., task rows...]``: the training order of one epoch.

The plan is O(rows) in time. Its peak memory is an int32 permutation plus one
int64 running sum over the general pool while rows are chosen (12 bytes per
row), then the int64 order it returns plus a 1-byte mask (at most ~13-16 bytes
per planned row): measured by ``bench/scale.py``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

SPREADS = ("even", "random")
SHORTFALL_POLICIES = ("error", "warn", "upsample")

# `tell_task_repeats: auto`: aim for about this many task occurrences in a run,
# clamped to [AUTO_MIN_REPEATS, AUTO_MAX_REPEATS] repeats per row. Evidence
# (SmolLM2-135M-Instruct, LoRA r16, lr 5e-4, batch 8): question_formation, 10 rows x 3
# repeats 0.54 exact match, x 21 repeats 0.93-0.97 (an H100 probe before the plugin).
# Issue 13 (bench/results/frontier_cpu.json, ratio 3, weight 3, seed 0): 30
# opinion_sentiment rows x 7 repeats (the earlier target of 200) scored 0.56 accuracy,
# x 20 repeats 0.65 (sft_best: 0.69), general loss better, not worse (-0.03 -> -0.10
# nats); 30 question_formation rows x 7 already scored 1.00; 10 rows x 40 instead of
# x 20: 0.94 vs 0.92 for twice the steps, so the cap stays 20; issue 24's lever at 30
# rows (x 40 vs x 20, validation, 5 counted pairs on object_counting and
# opinion_sentiment) gained +0.052 on average but lost one pair (0.62 vs 0.64), which
# fails the rule written before its runs. Hence 600: 30 rows get the cap's 20. At
# 100 rows (x 6; issue 24, bench/results/leverage_cpu.json, weight 10, ratio 3, seed 0
# unless said) TELL vs sft_best: question_formation 1.00 vs 1.00,
# object_counting 0.387 vs 0.337 (seeds 0-2: 0.39/0.29, 0.39/0.33, 0.38/0.39),
# opinion_sentiment 0.74 vs 0.76; at their one-answer floors sports_understanding 0.56
# vs 0.51 (floor 0.51), fact_verification 0.45 vs 0.48 (floor 0.47) and disfl_qa 0.28
# vs 0.26 (floor 0.28). Every 100-row validation curve above its floor still peaked in
# the last 13% of the run (4 runs), so x 12 was the next lever (BENCHMARKS rule 4, step
# reps100, seed 0, validation 12 vs auto): object_counting 0.40 vs 0.46, opinion_sentiment
# 0.82 vs 0.74, question_formation 1.00 vs 1.00, sports_understanding at its floor (0.62 vs
# 0.54, not counted): a task below -0.03 and no reachable sign test, so auto stays (the
# auto runs on another CPU). Not measured above 100 rows: there the rule is an extrapolation.
AUTO_TARGET_OCCURRENCES = 600
AUTO_MIN_REPEATS = 1
AUTO_MAX_REPEATS = 20

# The most rows (task occurrences + general occurrences) one plan may hold. The plan costs about 21 bytes per
# planned row (int64 order, 1-byte slot mask, task and general ids) and applying it copies every planned row
# into the prepared mix, so 5 * 10^7 rows is about 1 GB of plan and a mix of billions of tokens: far more than
# any fine-tune TELL is for (the largest public instruction sets hold 10^6-10^7 rows). Beyond it the numbers
# are a typo (`tell_general_ratio: 1e12` grew to 6 GiB within a minute of planning), so the plan refuses them
# from the counts alone, before it allocates anything.
MAX_PLANNED_ROWS = 50_000_000
# Config-level sanity bounds (checked while the YAML loads, before any data is read): far above what a TELL
# run uses (auto repeats are at most 20; the paper's ratios are at most in the thousands).
MAX_TASK_REPEATS = 10_000
# General supervised tokens per task supervised token when the config names no budget. 3, not the earlier 50
# (issue 13, SmolLM2-135M, 10 and 30 task rows): at ratio 3 the held-out general loss stayed below the base
# model's in every run (bench/results/frontier_cpu.json). On the H200 (bench/results/frontier_gpu.json, default
# weight 10) ratio 10 and 50 tied ratio 3 on the validation rows (+0.000 over 6 pairs, +0.005 over 4) in 2.2x and
# 8.6x the steps; they only lowered the general loss further (-0.03 -> -0.18 nats at 10 opinion_sentiment rows).
DEFAULT_GENERAL_RATIO = 3.0
MAX_GENERAL_RATIO = 1_000_000


class PlanError(ValueError):
    """The requested mix cannot be built from the data given."""


class PlanTooLargeError(PlanError):
    """The requested mix would hold more than :data:`MAX_PLANNED_ROWS` rows."""


def auto_task_repeats(task_rows: int) -> int:
    """Repeats per task row for ``tell_task_repeats: auto``.

    ``ceil(600 / task_rows)`` clamped to [1, 20]: up to 30 rows -> 20,
    100 -> 6, 300 -> 2, 600 or more -> 1.
    """
    if task_rows <= 0:
        raise PlanError("auto task repeats need at least one task row")
    wanted = math.ceil(AUTO_TARGET_OCCURRENCES / task_rows)
    return int(min(AUTO_MAX_REPEATS, max(AUTO_MIN_REPEATS, wanted)))


@dataclass
class MixPlan:
    """A planned epoch plus the numbers the report states.

    ``order`` holds row ids: ``i < general_rows_available`` is general row ``i``,
    ``general_rows_available + j`` is task row ``j``.
    """

    order: np.ndarray
    task_rows: int
    task_repeats: int
    task_supervised_tokens: int  # over all occurrences
    task_tokens: int  # over all occurrences (0 when lengths were not given)
    general_rows_available: int
    general_rows_used: int  # distinct general rows in the plan
    general_occurrences: int  # > rows_used only when general data was up-sampled
    general_supervised_tokens: int  # over all occurrences
    general_tokens: int
    ratio_requested: float | None
    general_tokens_requested: int
    ratio_achieved: float
    spread: str
    seed: int
    shortfall: str | None = None  # None | "warn" | "upsample": what was done when the pool was short
    warnings: list[str] = field(default_factory=list)

    @property
    def task_occurrences(self) -> int:
        return self.task_rows * self.task_repeats

    @property
    def sha256(self) -> str:
        return plan_sha256(self.order)

    def task_positions(self) -> np.ndarray:
        """Positions (0-based, in training order) of the task occurrences."""
        return np.flatnonzero(self.order >= self.general_rows_available)


def plan_sha256(order: np.ndarray) -> str:
    """A hash of the order that is the same on every platform (little-endian int64)."""
    return hashlib.sha256(np.ascontiguousarray(order, dtype="<i8").tobytes()).hexdigest()


def _as_counts(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64)
    if arr.ndim != 1:
        raise PlanError(f"{name} must be a flat list of per-row token counts")
    if arr.size and arr.min() < 0:
        raise PlanError(f"{name} has a negative token count")
    return arr


def _rng(seed: int, stream: int) -> np.random.Generator:
    # Independent, reproducible streams for each random choice the plan makes;
    # SeedSequence takes the whole seed (no truncation), so distinct seeds differ.
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), stream])))


_STREAM_GENERAL, _STREAM_TASK, _STREAM_SHUFFLE = 1, 2, 3


def _select_general(
    supervised: np.ndarray, budget: int, shortfall: str, seed: int
) -> tuple[np.ndarray, str | None]:
    """General rows until ``budget`` supervised tokens, in a seeded random order for the mix.

    The rows come in scan order (the general pool's fixed seeded order, :mod:`axolotl_tell.general_pool`): the
    shortest prefix whose supervised tokens reach the budget is taken (the last row may overshoot by less than
    one row), so a pool tokenized only up to that prefix plans exactly as the whole pool. The run's ``seed``
    then orders the chosen rows. When the whole pool is short: error, use all of it (warn), or continue with
    fresh permutations (upsample).
    """
    n = supervised.size
    total = int(supervised.sum())
    if budget <= 0:
        return np.empty(0, dtype=_index_dtype(n)), None
    if total == 0:
        raise PlanError("the general data has no supervised tokens (every label is -100)")
    rng = _rng(seed, _STREAM_GENERAL)
    if total >= budget:
        chosen = np.arange(_prefix_reaching(supervised, budget), dtype=_index_dtype(n))
        rng.shuffle(chosen)
        return chosen, None
    if shortfall == "error":
        raise PlanError(
            f"the general data has {total} supervised tokens but the plan needs {budget}"
        )
    if shortfall == "warn":
        return _permutation(rng, n), "warn"
    # upsample: whole passes, each its own permutation, then a partial pass
    full_passes, rest = divmod(budget, total)
    parts = [_permutation(rng, n) for _ in range(full_passes)]
    if rest:
        perm = _permutation(rng, n)
        cum = np.cumsum(supervised[perm])
        parts.append(perm[: int(np.searchsorted(cum, rest, side="left")) + 1])
    return np.concatenate(parts), "upsample"


def general_budget(task_supervised_total: int, general_ratio: float | None, general_tokens: int | None) -> int:
    """General supervised tokens the plan asks for: ``ratio x task supervised tokens`` (repeats included)."""
    if general_ratio is not None:
        return int(math.ceil(general_ratio * task_supervised_total))
    return int(general_tokens)


def resolve_repeats(task_rows: int, task_repeats: int | str) -> int:
    repeats = auto_task_repeats(task_rows) if task_repeats == "auto" else int(task_repeats)
    if repeats < 1:
        raise PlanError(f"task_repeats must be >= 1, got {task_repeats}")
    return repeats


def general_rows_needed(supervised_total: int, pool_rows: int, budget: int, shortfall: str) -> int:
    """About how many general occurrences the plan takes for ``budget``, from the counts alone (no allocation).

    Whole passes over the pool, plus the partial pass at the pool's mean supervised tokens per row. A short pool
    gives all of its rows with ``warn`` (and ``error`` raises its own error later).
    """
    if budget <= 0 or supervised_total <= 0:
        return 0
    if supervised_total < budget and shortfall != "upsample":
        return pool_rows
    full_passes, rest = divmod(budget, supervised_total)
    return full_passes * pool_rows + -(-rest * pool_rows // supervised_total)


def check_plan_size(task_rows: int, repeats: int, general_rows: int, budget: int, pool_rows: int,
                    pool_supervised: int, max_rows: int = MAX_PLANNED_ROWS) -> None:
    """Refuse a plan of more than ``max_rows`` rows, with the numbers that make it so."""
    task_occurrences = task_rows * repeats
    total = task_occurrences + general_rows
    if total > max_rows:
        raise PlanTooLargeError(
            f"the plan would hold about {total:,} rows, more than the maximum of {max_rows:,}: "
            f"{task_rows:,} task rows x {repeats:,} repeats = {task_occurrences:,} task occurrences, plus about "
            f"{general_rows:,} general rows to reach {budget:,} general supervised tokens (the pool has "
            f"{pool_rows:,} rows with {pool_supervised:,} supervised tokens)"
        )


def _index_dtype(n: int):
    # int32 row ids while they fit: half the memory of int64 (the plan stays within 16 bytes/row)
    return np.int32 if n < 2**31 else np.int64


def _permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """``rng.permutation(n)`` (the same order), built in a compact integer type."""
    perm = np.arange(n, dtype=_index_dtype(n))
    rng.shuffle(perm)
    return perm


def _prefix_reaching(supervised: np.ndarray, budget: int) -> int:
    """Length of the shortest prefix of the rows (in scan order) whose supervised tokens reach ``budget``."""
    cum = np.cumsum(supervised)  # one int64 temporary
    return int(np.searchsorted(cum, budget, side="left")) + 1


def _task_sequence(task_rows: int, repeats: int, seed: int) -> np.ndarray:
    """Task row ids in occurrence order: ``repeats`` rounds, each a fresh permutation.

    Every row occurs exactly ``repeats`` times and a row's occurrences fall in
    different rounds. A round that would start with the row that ended the
    previous one swaps that row away, so no row occurs twice in a row.
    """
    rng = _rng(seed, _STREAM_TASK)
    rounds = []
    for _ in range(repeats):
        perm = rng.permutation(task_rows)
        if rounds and task_rows > 1 and perm[0] == rounds[-1][-1]:
            perm[[0, 1]] = perm[[1, 0]]
        rounds.append(perm)
    return np.concatenate(rounds).astype(np.int64) if rounds else np.empty(0, np.int64)


def even_task_slots(total: int, task_count: int) -> np.ndarray:
    """Positions for ``task_count`` items spread evenly through ``total`` slots.

    Slot ``k`` is ``floor((k + 1/2) * total / task_count)``: consecutive gaps
    differ from the ideal gap ``total / task_count`` by less than one slot, and
    the first and last items sit half a gap from the ends.
    """
    if task_count == 0:
        return np.empty(0, dtype=np.int64)
    k = np.arange(task_count, dtype=np.int64)
    return ((2 * k + 1) * total) // (2 * task_count)


def build_plan(
    task_supervised,
    general_supervised,
    *,
    task_repeats: int | str = "auto",
    general_ratio: float | None = DEFAULT_GENERAL_RATIO,
    general_tokens: int | None = None,
    spread: str = "even",
    seed: int = 42,
    shortfall: str = "error",
    task_lengths=None,
    general_lengths=None,
) -> MixPlan:
    """Plan one TELL epoch.

    Args:
        task_supervised: supervised tokens of each anchored task row.
        general_supervised: supervised tokens of each general-pool row, in scan order (the rows chosen are
            the shortest prefix reaching the budget; ``seed`` orders them in the mix).
        task_repeats: times every task row occurs, or ``"auto"`` (see
            :func:`auto_task_repeats`).
        general_ratio: general supervised tokens per task supervised token,
            task repeats included. Exclusive with ``general_tokens``.
        general_tokens: an absolute general supervised-token budget.
        spread: ``"even"`` (task occurrences at evenly spaced slots, general
            rows in a seeded random order between them) or ``"random"`` (a
            seeded uniform permutation of all occurrences).
        seed: the only source of randomness.
        shortfall: what to do when the pool has fewer supervised tokens than the
            budget: ``"error"``, ``"warn"`` (use the whole pool, report the
            achieved ratio) or ``"upsample"`` (repeat general rows).
        task_lengths, general_lengths: optional per-row total token counts,
            only for the report.

    Returns:
        A :class:`MixPlan`; its ``order`` is a pure function of the arguments.
    """
    task_sup = _as_counts(task_supervised, "task_supervised")
    gen_sup = _as_counts(general_supervised, "general_supervised")
    if spread not in SPREADS:
        raise PlanError(f"unknown spread {spread!r}; use one of {SPREADS}")
    if shortfall not in SHORTFALL_POLICIES:
        raise PlanError(f"unknown shortfall policy {shortfall!r}; use one of {SHORTFALL_POLICIES}")
    if task_sup.size == 0:
        raise PlanError("no task rows")
    if (general_ratio is None) == (general_tokens is None):
        raise PlanError("give exactly one of general_ratio and general_tokens")
    if general_ratio is not None and not (general_ratio > 0 and math.isfinite(general_ratio)):
        raise PlanError(f"general_ratio must be a finite number > 0, got {general_ratio}")
    if int(seed) < 0:
        raise PlanError(f"seed must be >= 0, got {seed}")
    if general_tokens is not None and general_tokens < 0:
        raise PlanError(f"general_tokens must be >= 0, got {general_tokens}")

    n_task = int(task_sup.size)
    repeats = resolve_repeats(n_task, task_repeats)
    task_sup_total = int(task_sup.sum()) * repeats
    budget = general_budget(task_sup_total, general_ratio, general_tokens)
    pool_supervised = int(gen_sup.sum())
    check_plan_size(n_task, repeats, general_rows_needed(pool_supervised, int(gen_sup.size), budget, shortfall),
                    budget, int(gen_sup.size), pool_supervised)

    general_ids, shortfall_used = _select_general(gen_sup, budget, shortfall, seed)
    gen_sup_used = int(gen_sup[general_ids].sum()) if general_ids.size else 0
    warnings = []
    if shortfall_used == "warn":
        warnings.append(
            f"general data is short: {gen_sup_used} of {budget} requested supervised tokens "
            f"(achieved ratio {gen_sup_used / max(task_sup_total, 1):.2f})"
        )

    n_gen_pool = int(gen_sup.size)
    task_ids = _task_sequence(n_task, repeats, seed) + n_gen_pool
    total = int(general_ids.size + task_ids.size)
    if spread == "even":
        order = np.empty(total, dtype=np.int64)
        is_task = np.zeros(total, dtype=bool)
        is_task[even_task_slots(total, task_ids.size)] = True
        order[is_task] = task_ids
        order[~is_task] = general_ids
    else:
        order = np.concatenate([general_ids.astype(np.int64), task_ids])
        _rng(seed, _STREAM_SHUFFLE).shuffle(order)  # in place: no second index array

    def _tokens(lengths, ids, rows: int):
        if lengths is None:
            return 0
        arr = _as_counts(lengths, "lengths")
        if arr.size != rows:
            raise PlanError(f"lengths must have one entry per row ({rows}), got {arr.size}")
        return int(arr[ids].sum()) if ids.size else 0

    task_row_ids = np.repeat(np.arange(n_task, dtype=np.int64), repeats)
    return MixPlan(
        order=order,
        task_rows=n_task,
        task_repeats=repeats,
        task_supervised_tokens=task_sup_total,
        task_tokens=_tokens(task_lengths, task_row_ids, n_task),
        general_rows_available=n_gen_pool,
        # distinct rows: a prefix of the scan order, or every row once up-sampled
        general_rows_used=n_gen_pool if shortfall_used == "upsample" else int(general_ids.size),
        general_occurrences=int(general_ids.size),
        general_supervised_tokens=gen_sup_used,
        general_tokens=_tokens(general_lengths, general_ids, n_gen_pool),
        ratio_requested=float(general_ratio) if general_ratio is not None else None,
        general_tokens_requested=budget,
        ratio_achieved=gen_sup_used / task_sup_total if task_sup_total else 0.0,
        spread=spread,
        seed=int(seed),
        shortfall=shortfall_used,
        warnings=warnings,
    )
