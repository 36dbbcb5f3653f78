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


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "tasks").is_dir(), reason="needs ../shared/data")
def test_anchor_variants_configs(tiny_model, tmp_path):
    """tell_auto_anchor = the TELL config with `tell_anchor: auto` in its own cell; tell_no_anchor reuses TELL's plan."""
    import yaml

    sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
    import run as bench_run
    from tellbench.spec import expand

    cells = {(c.task, c.seed, c.method): c for c in expand("anchors_cpu")}
    assert {m for (t, s, m) in cells if t == "question_formation" and s == 0} == {
        "zero_shot", "tell", "tell_auto_anchor", "tell_no_anchor"}
    b = bench_run.Bench(bench_run.parse_args(["--grid", "anchors_cpu", "--out", str(tmp_path / "r.json"),
                                              "--model", str(tiny_model), "--work", str(tmp_path / "w"),
                                              "--device", "cpu"]))
    hand = yaml.safe_load(b.tell_config_path(cells["question_formation", 0, "tell"]).read_text())
    auto_path = b.tell_config_path(cells["question_formation", 0, "tell_auto_anchor"])
    auto = yaml.safe_load(auto_path.read_text())
    assert auto_path.parent.name.startswith("question_formation-tell_auto_anchor-")
    assert auto["tell_anchor"] == "auto" and hand["tell_anchor"].startswith("Grammar tool")
    assert {k: v for k, v in auto.items() if k not in ("tell_anchor", "output_dir")} == \
        {k: v for k, v in hand.items() if k not in ("tell_anchor", "output_dir")}
    no_anchor_twin = b.tell_config_path(cells["question_formation", 0, "tell_no_anchor"])
    assert no_anchor_twin.parent.name.startswith("question_formation-tell-")


def test_a_task_given_as_a_path_to_its_yaml_gets_a_cell_folder_inside_the_work_folder(tmp_path):
    """`load_task` takes a path; the cell folder and data file are named by the task, not by that path."""
    sys.path.insert(0, str(ROOT / "bench"))
    from tellbench.spec import Cell

    for task in (str(ROOT / "bench" / "tasks" / "question_formation.yaml"), "bench/tasks/question_formation.yaml",
                 "question_formation"):
        cell = Cell(task, "tell", 10, 0, "auto", 50.0)
        assert cell.task_name == "question_formation" and "/" not in cell.slug
        work = tmp_path / "work"
        (work / "cells" / cell.slug).relative_to(work)  # what the runner does with every cell folder
