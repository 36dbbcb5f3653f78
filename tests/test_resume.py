"""`resume_from_checkpoint` continues the planned order: nothing lost, nothing repeated (tiny model, CPU).

Run 1 trains the whole plan and saves checkpoints every `save_steps`; run 2 resumes from a mid-run checkpoint
of run 1. The rows each run trains on are recorded by the collator's test-only hook
(`AXOLOTL_TELL_RECORD_ORDER`, see `axolotl_tell/source_metrics.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny import make_workspace

pytestmark = pytest.mark.e2e

MICRO, ACCUM, SAVE_STEPS = 2, 2, 5


def _train(cfg_path: Path, record: Path, cwd: Path) -> str:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "AXOLOTL_TELL_RECORD_ORDER": str(record)}
    proc = subprocess.run([str(bin_dir / "axolotl"), "train", str(cfg_path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def _recorded(path: Path) -> list[tuple[int, str]]:
    batches = [json.loads(line) for line in path.read_text().splitlines()]
    return [tuple(row) for b in batches if b["split"] == "train" for row in b["rows"]]


def test_resume_continues_the_planned_order(tiny_model, tmp_path):
    from datasets import load_from_disk

    from axolotl_tell.prepare import SOURCE_COLUMN
    from axolotl_tell.source_metrics import row_key

    cfg_path, cfg = make_workspace(tmp_path, tiny_model, micro_batch_size=MICRO, gradient_accumulation_steps=ACCUM,
                                   save_strategy="steps", save_steps=SAVE_STEPS, save_total_limit=50, logging_steps=1,
                                   dataloader_num_workers=0)
    first = _train(cfg_path, tmp_path / "run1.jsonl", tmp_path)
    report = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())
    planned = [(r[SOURCE_COLUMN], row_key(r["input_ids"])) for r in load_from_disk(report["prepared_path"] + "/train")]
    run1 = _recorded(tmp_path / "run1.jsonl")
    assert run1 == planned, "the uninterrupted run did not train on exactly the planned order"

    rows_per_step = MICRO * ACCUM
    steps = -(-len(planned) // rows_per_step)
    resume_step = 2 * SAVE_STEPS
    assert resume_step < steps, (resume_step, steps)
    checkpoint = Path(cfg["output_dir"]) / f"checkpoint-{resume_step}"
    assert checkpoint.is_dir(), sorted(p.name for p in Path(cfg["output_dir"]).iterdir())

    resumed_cfg = {**cfg, "resume_from_checkpoint": str(checkpoint), "output_dir": str(tmp_path / "out_resumed"),
                   "save_strategy": "no"}
    resumed_cfg.pop("save_steps")
    resumed_path = tmp_path / "resumed.yml"
    resumed_path.write_text(yaml.safe_dump(resumed_cfg, sort_keys=False))
    second = _train(resumed_path, tmp_path / "run2.jsonl", tmp_path)
    assert "loading prepared TELL mix" in second  # the same prepared plan, not a rebuild
    run2 = _recorded(tmp_path / "run2.jsonl")

    done = resume_step * rows_per_step
    assert run2 == run1[done:], "the resumed run lost or repeated planned rows"
    # task occurrences: the two runs together train each exactly as often as the plan says
    task_ids = {s["id"] for s in report["sources"] if s["kind"] == "task"}
    planned_task = [k for s, k in planned if s in task_ids]
    assert sorted(k for s, k in run1[:done] + run2 if s in task_ids) == sorted(planned_task)
    assert len(planned_task) == report["task"]["occurrences"]
    assert "Starting trainer" in first
