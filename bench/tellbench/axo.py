"""``axolotl preprocess|train`` as a user runs them (a subprocess on a generated YAML), and what they trained on."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tellbench import ROOT

ENV = {"AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}


class AxolotlFailed(RuntimeError):
    pass


def axolotl_bin() -> str:
    here = Path(sys.executable).parent / "axolotl"
    found = str(here) if here.is_file() else shutil.which("axolotl")
    if not found:
        raise AxolotlFailed("no `axolotl` executable next to this Python or on PATH")
    return found


def run_axolotl(command: str, config: Path, log: Path, launcher: str = "python", timeout: float | None = None) -> float:
    """Run ``axolotl COMMAND CONFIG``; returns its wall time. The log keeps stdout and stderr."""
    env = {**os.environ, **ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    args = [axolotl_bin(), command, str(config)]
    if command == "train" and launcher:
        args += ["--launcher", launcher]
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(args, cwd=config.parent, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise AxolotlFailed(f"axolotl {command} {config} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return wall


_PROGRESS = re.compile(r"(\d+)/(\d+) \[")
_RUNTIME = re.compile(r"'train_runtime': '?([0-9.]+)")
_TRAIN_LOSS = re.compile(r"'train_loss': '?([0-9.]+)")


def train_log_facts(log: Path) -> dict:
    """Optimizer steps run, trainer runtime and mean train loss, from ``axolotl train``'s log."""
    text = log.read_text(encoding="utf-8", errors="replace")
    done = [int(a) for a, b in _PROGRESS.findall(text) if a == b]
    runtime = _RUNTIME.findall(text)
    loss = _TRAIN_LOSS.findall(text)
    return {"steps_logged": done[-1] if done else None, "train_runtime_s": float(runtime[-1]) if runtime else None,
            "train_loss": float(loss[-1]) if loss else None}


def prepared_dataset(prepared: Path):
    """The one dataset plain Axolotl saved under ``dataset_prepared_path`` (``<hash>/``)."""
    from datasets import load_from_disk

    found = sorted(p.parent for p in Path(prepared).glob("*/state.json") if not p.parent.name.startswith("tell-"))
    found += sorted(p.parent for p in Path(prepared).glob("*/*/state.json")
                    if not p.parent.parent.name.startswith("tell-"))
    if len(found) != 1:
        raise AxolotlFailed(f"expected one prepared dataset under {prepared}, found {[str(p) for p in found]}")
    return load_from_disk(str(found[0]))


def row_counts(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, supervised tokens) per row of a tokenized dataset: the plugin's own counter."""
    from axolotl_tell.rows import row_token_counts

    return row_token_counts(dataset)


def steps_per_epoch(rows: int, rows_per_step: int) -> int:
    return max(1, math.ceil(rows / rows_per_step))


def tell_report(out: Path) -> dict | None:
    path = Path(out) / "tell_report.json"
    return json.loads(path.read_text()) if path.is_file() else None


GENERAL_EVAL_KEY = "eval_tell/general_loss"  # the per-source eval loss on general rows (axolotl_tell.source_metrics)


def eval_general_curve(out: Path) -> list[dict]:
    """``[{"step", "general_loss"}]`` from the last checkpoint's trainer log: the held-out general loss at each
    evaluation of a run whose eval set holds general rows (``--general-eval-curve``); [] when it logged none."""
    states = sorted(Path(out).glob("checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.rsplit("-", 1)[-1]) if p.parent.name.rsplit("-", 1)[-1].isdigit()
                    else -1)
    if not states:
        return []
    history = json.loads(states[-1].read_text(encoding="utf-8")).get("log_history") or []
    return [{"step": int(e["step"]), "general_loss": float(e[GENERAL_EVAL_KEY])}
            for e in history if GENERAL_EVAL_KEY in e and "step" in e]
