"""The task loss weight step by step: constant, or warmed up from 1 over the first part of the run.

`tell_task_loss_weight_warmup_ratio: r` makes the weight rise linearly from 1 (the plain loss) at the first
optimizer step to `tell_task_loss_weight` after a fraction r of the training steps, then stay there. Why a warm-up:
in a short plan the first steps carry the task at its full weight at the schedule's highest learning rate, and a
run's held-out general loss was seen to rise there (BENCHMARKS, "the object_counting retention miss"); at weight
1 the rise was under half as large. Measured once (BENCHMARKS, sixteenth session): warmed up over half the run, the
rise came later and the run ended almost where the constant weight did, so it is off by default. Pure: no torch,
no Axolotl.
"""

from __future__ import annotations

import math


def warmup_steps(max_steps: int, ratio: float) -> int:
    """Optimizer steps over which the weight rises: the rounding transformers uses for `warmup_ratio`."""
    return math.ceil(max_steps * ratio)


def task_weight_at(step: int, weight: float, warmup: int) -> float:
    """The task loss weight at optimizer step ``step`` (0 = the first): 1 there, ``weight`` from step ``warmup`` on.

    Linear in between, so the weight reaches its target when the warm-up ends, as the learning rate does in a
    linear warm-up. ``warmup`` 0 (no warm-up) gives ``weight`` at every step.
    """
    if warmup <= 0 or step >= warmup:
        return float(weight)
    return 1.0 + (float(weight) - 1.0) * max(step, 0) / warmup
