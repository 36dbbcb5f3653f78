"""The contracts with Axolotl's `train()` that compat.py states: checked on the installed Axolotl, so a version
that changes them fails here (one process, and two gloo ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from axolotl_tell import compat
from tiny import make_workspace

pytestmark = pytest.mark.e2e
TESTS = Path(__file__).parent


def _probe_records(root: Path, rank: int = 0) -> list[dict]:
    return [json.loads(line) for line in (root / f"probe.rank{rank}.jsonl").read_text().splitlines()]


def _probed_workspace(tmp_path, tiny_model, monkeypatch, **extra):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return make_workspace(tmp_path, tiny_model, plugins=["axolotl_tell.TellPlugin", "tiny.ContractProbe"], **extra)


def test_post_train_is_called_twice_and_the_second_call_follows_the_save(tiny_model, tmp_path, monkeypatch):
    cfg_path, _ = _probed_workspace(tmp_path, tiny_model, monkeypatch)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(bin_dir / "axolotl"), "train", str(cfg_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    calls = _probe_records(tmp_path)
    assert len(calls) == compat.POST_TRAIN_CALL_AFTER_SAVE
    first, after_save = calls[0], calls[compat.POST_TRAIN_CALL_AFTER_SAVE - 1]
    assert not first["adapter_saved"] and after_save["adapter_saved"] and after_save["tokenizer_saved"]


def test_two_ranks_end_of_run_starts_after_the_process_group_is_gone(tiny_model, tmp_path, monkeypatch):
    from test_distributed_cpu import _train

    cfg_path, _ = _probed_workspace(tmp_path, tiny_model, monkeypatch, task="chat_template")
    _train(cfg_path, "ddp")
    for rank in (0, 1):
        calls = _probe_records(tmp_path, rank)
        assert len(calls) == compat.POST_TRAIN_CALL_AFTER_SAVE
        assert calls[0]["process_group"] is True  # right after trainer.train(): collectives still possible
        assert calls[-1]["process_group"] is compat.PROCESS_GROUP_AT_END_OF_RUN
