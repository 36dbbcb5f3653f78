"""The GPU checks of ``bench/gpu_check.sh`` (issue 10): real ``axolotl train`` runs through the plugin on one GPU.

Each check prints one line ``PASS|FAIL|SKIP <name>: <what was measured>``; the exit code is the number of FAILs.
Nothing here is a CPU test: CI never runs it. The CPU counterparts are tests/test_training_paths.py,
tests/test_source_metrics.py, tests/test_generate.py and tests/test_distributed_cpu.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "example_configs" / "data"
RESULTS: list[tuple[str, str, str]] = []


def report(status: str, name: str, detail: str) -> None:
    RESULTS.append((status, name, detail))
    print(f"{status} {name}: {detail}", flush=True)


def config(work: Path, model: str, name: str, **overrides) -> Path:
    cfg = {
        "base_model": model, "plugins": ["axolotl_tell.TellPlugin"],
        "datasets": [{"path": str(DATA / "general_alpaca400.jsonl"), "ds_type": "json", "type": "chat_template"}],
        "tell_task_datasets": [{"path": str(DATA / "question_formation_train10.jsonl"), "ds_type": "json",
                                "type": "chat_template"}],
        "tell_anchor": "Grammar tool: rewrite the statement as a yes/no question.",
        "tell_general_ratio": 3, "tell_task_repeats": 20, "tell_task_eval_rows": 3, "tell_eval_generate": "exact_match",
        "tell_eval_max_new_tokens": 24, "seed": 42, "sequence_len": 1024, "chat_template": "tokenizer_default",
        "adapter": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_target_linear": True,
        "micro_batch_size": 4, "gradient_accumulation_steps": 2, "num_epochs": 1, "learning_rate": 5e-4,
        "optimizer": "adamw_torch_fused", "lr_scheduler": "cosine", "warmup_steps": 2, "bf16": True, "tf32": True,
        "attn_implementation": "sdpa", "logging_steps": 1, "save_strategy": "no", "eval_steps": 10,
        "dataset_num_proc": 1, "dataset_prepared_path": str(work / "prepared"), "output_dir": str(work / name),
        "dataloader_num_workers": 0,
    }
    cfg.update(overrides)
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}, sort_keys=False))
    return path


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def launcher_args(distributed: bool) -> list[str]:
    """FSDP runs only under a distributed launcher (issue 27 point 6: `--launcher python` fails with "Using fsdp
    only works in distributed training"): torchrun with one rank per GPU, as users launch it."""
    if not distributed:
        return ["--launcher", "python"]
    return ["--launcher", "torchrun", "--", f"--nproc_per_node={max(1, gpu_count())}"]


def train(path: Path, record: Path | None = None, timeout: int = 240,
          distributed: bool = False) -> tuple[int, str, float]:
    env = dict(os.environ)
    if record is not None:
        env["AXOLOTL_TELL_RECORD_ORDER"] = str(record)
    start = time.time()
    proc = subprocess.run(["axolotl", "train", str(path), *launcher_args(distributed)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=path.parent)
    log = proc.stdout + proc.stderr
    (path.parent / f"{path.stem}.log").write_text(log)
    return proc.returncode, log, time.time() - start


def every_planned_row(out: Path, record: Path) -> tuple[bool, str]:
    from datasets import load_from_disk

    from axolotl_tell.prepare import SOURCE_COLUMN
    from axolotl_tell.source_metrics import row_key

    rep = json.loads((out / "tell_report.json").read_text())
    planned = [[r[SOURCE_COLUMN], row_key(r["input_ids"])] for r in load_from_disk(rep["prepared_path"] + "/train")]
    # one record file per rank (`<name>.rank<N>` beside it under several ranks); one rank writes `record` itself
    files = sorted(record.parent.glob(record.name + "*"))
    trained = [row for f in files for line in f.read_text().splitlines() for row in json.loads(line)["rows"]
               if json.loads(line)["split"] == "train"]
    if len(files) > 1:
        trained, planned = sorted(trained), sorted(planned)
    ok = trained == planned and rep["trained"]["complete"]
    return ok, (f"{len(trained)}/{len(planned)} planned rows trained in order, steps {rep['trained']['steps']}/"
                f"{rep['trained']['steps_planned']}, task share {rep['trained'].get('task_share_of_plan')}")


def check_training(work: Path, model: str, name: str, **overrides) -> None:
    record = work / f"{name}.order.jsonl"
    for old in work.glob(record.name + "*"):
        old.unlink()
    rc, log, wall = train(config(work, model, name, **overrides), record,
                          distributed="fsdp_version" in overrides or "fsdp_config" in overrides)
    if rc != 0:
        return report("FAIL", name, f"exit {rc}: {log.strip().splitlines()[-1][:300] if log.strip() else ''}")
    ok, detail = every_planned_row(work / name, record)
    logged = "'tell/task_loss'" in log and (work / name / "adapter_model.safetensors").is_file()
    report("PASS" if ok and logged else "FAIL", name, f"{detail}; tell/* logged and adapter saved: {logged}; "
           f"{wall:.0f} s wall")


def check_sharded_checkpoint(work: Path, model: str, fsdp: dict) -> None:
    """Issue 27 point 5: what an FSDP2 SHARDED_STATE_DICT run leaves in a mid-run checkpoint and at the end (is there
    an adapter `infer --adapter` can load?). Recorded as INFO: the files are the measurement."""
    name = "fsdp2_sharded"
    rc, log, wall = train(config(work, model, name, fsdp_version=2, save_strategy="steps", save_steps=5,
                                 fsdp_config={**fsdp, "state_dict_type": "SHARDED_STATE_DICT"}), distributed=True)
    out = work / name
    ckpts = sorted(out.glob("checkpoint-*"))
    listing = {p.name: sorted(q.name for q in p.iterdir())[:12] for p in ckpts[:1]}
    report("INFO" if rc == 0 else "FAIL", name, f"exit {rc}; {wall:.0f} s; top-level files "
           f"{sorted(q.name for q in out.iterdir() if q.is_file())[:14] if out.is_dir() else None}; first checkpoint {listing}")


def check_per_source_loss(work: Path, model_path: str) -> None:
    """One bf16 batch: the source-aware loss (loss and gradient) vs transformers' default, sums vs a hand loop."""
    import torch
    from axolotl.utils.collators import DataCollatorForSeq2Seq
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_tell.source_metrics import SOURCE_IDS, SourceIdsCollator, SourceLossMeter, install_source_loss

    prepared = next((work / "prepared").glob("tell-*/train"))
    rows = [dict(r) for r in load_from_disk(str(prepared)).select(range(8))]
    tok = AutoTokenizer.from_pretrained(model_path)
    batch = SourceIdsCollator(DataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt"))(rows)
    sources = batch.pop(SOURCE_IDS)
    batch = {k: v.cuda() for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
    kinds = {0: "general", 1: "task"}
    ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).cuda()
    mine = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).cuda()
    meter = SourceLossMeter(kinds)
    loss_fn = install_source_loss(mine, meter)
    want = ref(**batch)
    loss_fn.pending = (sources.cuda(), "train")
    got = mine(**batch)
    want.loss.backward()
    got.loss.backward()
    grad_err = max(float((a.grad.float() - b.grad.float()).abs().max() / (a.grad.float().abs().max() + 1e-12))
                   for a, b in zip(ref.parameters(), mine.parameters()) if a.grad is not None)
    by_hand = SourceLossMeter(kinds)
    by_hand.update(want.logits.detach(), batch["labels"], sources.cuda(), "train")
    a, b = meter.pop("train"), by_hand.pop("train")
    sums_ok = all(abs(a[k] - b[k]) <= 1e-3 * max(1.0, abs(b[k])) for k in b)
    loss_ok = abs(float(got.loss) - float(want.loss)) <= 1e-3 * abs(float(want.loss))
    report("PASS" if loss_ok and sums_ok and grad_err < 1e-2 else "FAIL", "per_source_loss_bf16",
           f"loss {float(got.loss):.5f} vs default {float(want.loss):.5f}; max relative gradient difference "
           f"{grad_err:.2e}; per-source {a} vs hand {b}")


def check_generation_stop(work: Path, name: str) -> None:
    """The end-of-run task eval ran and stopped at SmolLM2's own end of turn, not at max_new_tokens."""
    path = work / name / "tell_eval.jsonl"
    if not path.is_file():
        return report("FAIL", "generation_stops_at_end_of_turn", f"no {path}")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(work / name))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    lengths = [len(tok(r["prediction"], add_special_tokens=False)["input_ids"]) for r in rows]
    ok = all(n < 24 for n in lengths) and not any("<|im_start|>" in r["prediction"] for r in rows)
    report("PASS" if ok else "FAIL", "generation_stops_at_end_of_turn",
           f"prediction lengths {lengths} (budget 24 tokens); e.g. {rows[0]['prediction']!r} vs {rows[0]['reference']!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--only", default="", help="comma-separated check groups: train,deepspeed,fsdp (default all)")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = (lambda group: not only or group in only)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
    if want("train"):
        check_training(work, args.model, "sdpa_unpacked")
        check_generation_stop(work, "sdpa_unpacked")
        check_per_source_loss(work, args.model)
        check_training(work, args.model, "sdpa_packed_varlen", sample_packing=True, multipack_real_batches=False,
                       gradient_accumulation_steps=4, micro_batch_size=2)
        check_training(work, args.model, "sdpa_packed_real_batches", sample_packing=True, multipack_real_batches=True,
                       gradient_accumulation_steps=4, micro_batch_size=2)
    if not want("deepspeed"):
        pass
    elif importlib.util.find_spec("deepspeed") is None:
        report("SKIP", "deepspeed_zero2/zero3", "deepspeed is not installed on this machine (add it to the kit)")
    else:
        for stage in (2, 3):
            ds = work / f"zero{stage}.json"
            ds.write_text(json.dumps({"zero_optimization": {"stage": stage}, "bf16": {"enabled": "auto"},
                                      "gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto",
                                      "train_batch_size": "auto"}))
            check_training(work, args.model, f"deepspeed_zero{stage}", deepspeed=str(ds))
    if want("fsdp"):
        fsdp = {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                "reshard_after_forward": True}
        check_training(work, args.model, "fsdp2", fsdp_version=2, fsdp_config={**fsdp, "state_dict_type": "FULL_STATE_DICT"})
        check_sharded_checkpoint(work, args.model, fsdp)
    failed = sum(1 for status, _, _ in RESULTS if status == "FAIL")
    print(f"\n{len(RESULTS) - failed} passed, {failed} failed")
    (work / "gpu_check.json").write_text(json.dumps([dict(zip(("status", "check", "detail"), r)) for r in RESULTS],
                                                    indent=2))
    return failed


if __name__ == "__main__":
    sys.exit(main())
