"""`axolotl train` paths that lost planned rows, the model or the bake (issue 10), run for real (tiny model, CPU).

Every planned row is trained (the collator's record-order hook, `AXOLOTL_TELL_RECORD_ORDER`), packed in both
multipack geometries and unpacked, with gradient accumulation; the end-of-run work runs after the final save and
never loses it; `max_steps` below the plan is said loudly and recorded.
"""

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


def _axolotl(*args: str, cwd: Path, record: Path | None = None, check: bool = True) -> str:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    if record is not None:
        env["AXOLOTL_TELL_RECORD_ORDER"] = str(record)
    proc = subprocess.run([str(bin_dir / "axolotl"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    log = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, log[-4000:]
    return log


def _planned(report: dict) -> list[tuple[int, str]]:
    from datasets import load_from_disk

    from axolotl_tell.prepare import SOURCE_COLUMN
    from axolotl_tell.source_metrics import row_key

    return [(r[SOURCE_COLUMN], row_key(r["input_ids"])) for r in load_from_disk(report["prepared_path"] + "/train")]


def _trained(record: Path) -> list[tuple[int, str]]:
    batches = [json.loads(line) for line in record.read_text().splitlines()]
    return [tuple(row) for b in batches if b["split"] == "train" for row in b["rows"]]


GEOMETRIES = {
    # packed, one pack of micro x sequence_len per micro-batch (the flash-attention geometry): 
    # Axolotl's estimate rounded the steps down and dropped the last packs
    "packed_one_pack_per_micro_batch": {"sample_packing": True, "multipack_real_batches": False},
    # packed, micro_batch_size packs per micro-batch: the sampler also dropped a last partial batch
    "packed_real_batches": {"sample_packing": True, "multipack_real_batches": True},
    "unpacked": {"sample_packing": False},
}


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_every_planned_row_is_trained_with_gradient_accumulation(tiny_model, tmp_path, geometry):
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, micro_batch_size=2, gradient_accumulation_steps=4,
                                   dataloader_num_workers=0, general_rows=90,
                                   **GEOMETRIES[geometry])
    record = tmp_path / "order.jsonl"
    log = _axolotl("train", str(cfg_path), cwd=tmp_path, record=record)
    report = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())
    planned, trained = _planned(report), _trained(record)
    assert trained == planned, (f"{len(trained)} rows trained of {len(planned)} planned", log[-3000:])
    assert report["trained"]["complete"] and report["trained"]["steps"] == report["trained"]["steps_planned"]
    assert report["trained"]["task_share_of_plan"] == pytest.approx(1.0, abs=0.02)
    assert (Path(cfg["output_dir"]) / "adapter_model.safetensors").is_file()


def test_max_steps_below_the_plan_is_said_and_recorded(tiny_model, tmp_path):
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, max_steps=3)
    log = _axolotl("train", str(cfg_path), cwd=tmp_path)
    assert "`max_steps: 3` stops the run at step 3 of the" in log
    trained = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())["trained"]
    assert trained["steps"] == 3 and trained["steps_planned"] > 3 and trained["complete"] is False
    assert 0 < trained["task_share_of_plan"] < 0.6 and 0 < trained["general_share_of_plan"] < 0.6


def test_an_end_of_run_failure_keeps_the_trained_adapter(tiny_model, tmp_path):
    """A metric that raises (the same as an OOM while generating): logged, the run exits 0, the adapter is saved,
    and the evaluations during training go on."""
    (tmp_path / "broken_metric.py").write_text(
        "def score(predictions, references):\n    raise RuntimeError('metric bug')\n")
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, tell_task_eval_rows=2, tell_eval_max_new_tokens=2,
                                   tell_eval_generate="broken_metric.score", eval_steps=3)
    log = _axolotl("train", str(cfg_path), cwd=tmp_path)
    out = Path(cfg["output_dir"])
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert "task generation eval failed, skipped (training goes on)" in log
    assert "the task generation eval failed after training: RuntimeError: metric bug" in log
    assert f"The trained model is saved in {out}" in log
    assert json.loads((out / "tell.json").read_text())["anchor"]["text"] == cfg["tell_anchor"]
    assert (out / "tell_timeline.png").is_file()  # the steps after the failing one still ran


def test_the_baked_anchor_survives_the_final_save_and_merge_lora(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from axolotl_tell.bake import MARK
    from axolotl_tell.compat import axolotl_version

    cfg_path, cfg = make_workspace(tmp_path, tiny_model, task="chat_template", tell_bake_anchor=True)
    _axolotl("train", str(cfg_path), cwd=tmp_path)
    out = Path(cfg["output_dir"])
    user = [{"role": "user", "content": "the cat sat"}]
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.chat_template.startswith(MARK)
    assert cfg["tell_anchor"] in saved.apply_chat_template(user, tokenize=False, add_generation_prompt=True)

    _axolotl("merge-lora", str(cfg_path), cwd=tmp_path)
    merged = out / "merged"
    if not axolotl_version().startswith("0.19"):  # 0.21 calls post_lora_merge; 0.19 has no hook: bake by hand
        assert AutoTokenizer.from_pretrained(merged).chat_template.startswith(MARK)
    from axolotl_tell import cli

    assert cli.main(["bake", str(cfg_path), "--into", str(merged)]) == 0
    baked = AutoTokenizer.from_pretrained(merged)
    assert baked.chat_template.startswith(MARK) and baked.chat_template.count(MARK) == 1
    assert cfg["tell_anchor"] in baked.apply_chat_template(user, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("native", ["1", "0"], ids=["native_bf16", "no_native_bf16"])
def test_bf16_auto_on_a_cpu_only_machine_fits_the_cpu_with_a_task_loss_weight(tiny_model, tmp_path, native,
                                                                              monkeypatch):
    """`bf16: auto` without a GPU, the CPU's bf16 faked both ways: native -> bf16 autocast (transformers refuses bf16
    without a GPU; the plugin passes `use_cpu`), else fp32 (Axolotl alone would switch fp16 on). The precision and
    the task loss weight reach the run's record."""
    from axolotl_tell.cpu_precision import ENV, has_accelerator

    if has_accelerator():
        pytest.skip("an accelerator is present: bf16 goes to it, the CPU path is not used")
    monkeypatch.setenv(ENV, native)
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, bf16="auto", fp16=None, tell_task_loss_weight=3)
    log = _axolotl("train", str(cfg_path), cwd=tmp_path)
    assert f"bf16: auto on a CPU-only machine -> {'bf16' if native == '1' else 'fp32'}" in log
    assert ("CPU bf16 autocast (use_cpu=True)" in log) == (native == "1")
    out = Path(cfg["output_dir"])
    trained = json.loads((out / "tell_report.json").read_text())["trained"]
    assert trained["complete"] and trained["task_loss_weight"] == 3.0
    assert trained["precision"] == ("bf16" if native == "1" else "fp32")
    assert (out / "adapter_model.safetensors").is_file()


def test_a_task_loss_share_reaches_axolotl_train_and_the_record(tiny_model, tmp_path):
    """`tell_task_loss_share` passes Axolotl's config schema, reaches the loss (logged) and the run's record; the
    weight then resolves to 1 (the share replaces it)."""
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, tell_task_loss_share=0.75)
    log = _axolotl("train", str(cfg_path), cwd=tmp_path)
    assert "task loss share: 0.75" in log
    trained = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())["trained"]
    assert trained["complete"] and trained["task_loss_share"] == 0.75 and trained["task_loss_weight"] == 1.0


def test_a_task_loss_weight_warm_up_reaches_axolotl_train_and_the_record(tiny_model, tmp_path):
    """`tell_task_loss_weight_warmup_ratio` passes Axolotl's config schema, reaches the loss (the weight logged
    step by step rises from 1 to the target) and the run's record."""
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, tell_task_loss_weight=4,
                                   tell_task_loss_weight_warmup_ratio=0.5)  # logging_steps 1 (tiny.py)
    log = _axolotl("train", str(cfg_path), cwd=tmp_path)
    assert "task loss weight warm-up: from 1 to 4 over the first 0.5 of the training steps" in log
    weights = [float(w) for w in re.findall(r"'tell/task_loss_weight': '?([0-9.]+)", log)]
    assert len(weights) >= 3 and weights[0] == 1.0 and weights[-1] == 4.0, weights
    assert weights == sorted(weights), weights
    trained = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())["trained"]
    assert trained["complete"] and trained["task_loss_weight"] == 4.0
    assert trained["task_loss_weight_warmup_ratio"] == 0.5
