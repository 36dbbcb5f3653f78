"""`axolotl preprocess` + `axolotl train` through the plugin, as a user runs them (tiny model, CPU)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import make_workspace

pytestmark = pytest.mark.e2e


def axolotl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("task,packed", [("alpaca", False), ("chat_template", True)])
def test_preprocess_then_train(tiny_model, tmp_path, task, packed):
    extra = {"tell_task_eval_rows": 2, "tell_eval_generate": "exact_match", "tell_eval_max_new_tokens": 4,
             "eval_steps": 4} if packed else {}
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, task=task, sample_packing=packed, **extra)
    out = Path(cfg["output_dir"])

    pre = axolotl("preprocess", str(cfg_path), cwd=tmp_path)
    report = json.loads((out / "tell_report.json").read_text())
    task_rows = 8 if packed else 10  # 2 held out for the task eval set
    assert report["task"]["rows"] == task_rows and report["task"]["occurrences"] == 3 * task_rows
    assert report["task"]["eval_rows"] == (2 if packed else 0)
    assert "TELL mix" in pre.stdout + pre.stderr
    (out / "tell_report.json").unlink()

    train = axolotl("train", str(cfg_path), cwd=tmp_path)
    log = train.stdout + train.stderr
    assert "loading prepared TELL mix" in log  # train reused what preprocess built
    again = json.loads((out / "tell_report.json").read_text())
    assert again["plan_sha256"] == report["plan_sha256"]
    spec = json.loads((out / "tell.json").read_text())
    assert spec["anchor"]["text"] == cfg["tell_anchor"]
    assert spec["task_datasets"][0]["type"] == task
    assert (out / "adapter_model.safetensors").is_file()
    losses = [float(x) for x in re.findall(r"'loss': '?([0-9.]+)", log)]
    assert losses, log[-2000:]
    # per-source loss reaches the logs at every logging step
    task_losses = re.findall(r"'tell/task_loss': '?([0-9.]+)", log)
    general_losses = re.findall(r"'tell/general_loss': '?([0-9.]+)", log)
    assert task_losses and general_losses and len(general_losses) >= len(losses) - 1, log[-2000:]
    assert (out / "tell_timeline.png").is_file() and (out / "tell_loss.png").is_file()
    if packed:  # the task-only eval set: eval loss by source, and generation metrics at the end
        assert re.search(r"'eval_tell/task_loss': '?[0-9.]+", log), log[-3000:]
        predictions = [json.loads(line) for line in (out / "tell_eval.jsonl").read_text().splitlines()]
        assert len(predictions) == 2 and {"prompt", "prediction", "reference"} <= set(predictions[0])
        assert cfg["tell_anchor"] in predictions[0]["prompt"]
        assert json.loads((out / "tell_eval.json").read_text())["metric"] == "exact_match"
        steps = [json.loads(line) for line in (out / "tell_eval_steps.jsonl").read_text().splitlines()]
        assert steps and all("exact_match" in s and "step" in s for s in steps)
    rows = report["rows_total"]
    if not packed:  # sequential sampler, nothing dropped: ceil(rows / micro_batch) steps
        assert f"/{-(-rows // cfg['micro_batch_size'])} " in log or len(losses) == -(-rows // 4)
