"""The frontier report's reading of runs: which TELL run is "at the defaults" (bench/tellbench/frontier.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from tellbench.frontier import is_default_tell, tell_label  # noqa: E402


def tell_run(rows: int, repeats: int, requested="auto", ratio=3.0, weight=3.0, precision="bf16") -> dict:
    keys = {"tell_general_ratio": ratio, "tell_task_repeats": requested, "tell_task_loss_weight": weight}
    return {"method": "tell", "task_rows": rows, "general_ratio": ratio, "task_repeats_requested": requested,
            "task_repeats": float(repeats), "task_loss_weight": weight, "tell_keys": keys, "precision": precision}


@pytest.mark.parametrize(
    "run, default, label",
    [
        (tell_run(10, 20), True, "TELL g3 w3"),
        # 30 rows: the earlier `auto` (200 occurrences) ran 7 repeats; today's auto gives 20
        (tell_run(30, 7), False, "TELL g3 r7 w3"),
        (tell_run(30, 20, requested=20), True, "TELL g3 w3"),
        (tell_run(10, 40, requested=40), False, "TELL g3 r40 w3"),
        (tell_run(10, 20, weight=1.0), False, "TELL g3"),
        (tell_run(10, 20, ratio=10.0), False, "TELL g10 w3"),
        (tell_run(10, 20, precision="fp32"), False, "TELL g3 w3 fp32"),
    ],
)
def test_default_tell_is_judged_by_the_repeats_it_ran_with(run, default, label):
    assert is_default_tell(run) is default
    assert tell_label(run) == label


def test_sft_is_never_default_tell():
    assert not is_default_tell({**tell_run(10, 20), "method": "sft_best"})
