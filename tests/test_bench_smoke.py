"""The benchmark's smoke grid: `bench/run.py` end to end on the tiny model (two cells: tell and sft), then resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ("task", "method", "task_rows", "seed", "score", "metric", "general_loss", "model", "task_repeats",
            "general_tokens", "task_tokens", "train_tokens", "steps", "wall_s", "device")


def bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "tasks").is_dir(), reason="needs ../shared/data")
def test_smoke_grid_writes_results_and_resumes(tiny_model, tmp_path):
    out = tmp_path / "results" / "smoke.json"
    args = ("--grid", "smoke", "--model", str(tiny_model), "--out", str(out), "--work", str(tmp_path / "work"),
            "--device", "cpu")
    start = time.perf_counter()
    bench(*args)
    first = time.perf_counter() - start
    runs = json.loads(out.read_text())["runs"]
    assert sorted(r["method"] for r in runs) == ["sft", "tell"]
    for run in runs:
        missing = [k for k in REQUIRED if k not in run]
        assert not missing, (run["method"], missing)
        assert run["task"] == "question_formation" and run["task_rows"] == 10 and run["metric"] == "exact_match"
        assert 0.0 <= run["score"] <= 1.0 and run["general_loss"] > 0 and run["steps"] > 0
        assert run["train_tokens"] == run["general_tokens"] + run["task_tokens"] > 0
        assert 0.0 <= run["gen_check"]["ok"] <= 1.0
    tell = next(r for r in runs if r["method"] == "tell")
    sft = next(r for r in runs if r["method"] == "sft")
    assert tell["prompt"] == "anchored" and sft["prompt"] == "plain"
    assert tell["general_tokens"] > 0 and tell["task_repeats"] == 2 and sft["general_tokens"] == 0
    assert sft["task_repeats"] == 2 and sft["steps"] == 4  # 2 whole passes over 10 rows at batch 8
    assert out.with_suffix(".md").is_file() and list(out.parent.glob("smoke_*.png"))

    again = bench(*args)  # resumable: every cell is already in the results file
    assert "0 to run" in again.stdout
    assert json.loads(out.read_text())["runs"] == runs
    print(f"smoke grid: {first:.0f}s for two cells")
