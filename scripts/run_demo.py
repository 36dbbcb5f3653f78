"""The main job: a real TELL LoRA fine-tune of SmolLM2-135M-Instruct, with the task score before and after.

usage: python scripts/run_demo.py [example_configs/demo.yml] [--n-test 60]

Steps: `axolotl preprocess` (plans the mix) -> `axolotl train` (writes the adapter and tell.json) -> score the
base model on held-out task rows with the anchored prompt of tell.json -> score base + adapter the same way.
Also measures token loss on held-out general rows before/after (does the model keep its general skill?).
Writes <output_dir>/demo_scores.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from quiet import quiet_known_noise  # noqa: E402

quiet_known_noise()  # before torch, torchao, peft and bitsandbytes are imported
ENV = {"OMP_NUM_THREADS": str(os.cpu_count() or 1),  # accelerate launch would set 1
       "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}


def axolotl(command: str, config: str, log: Path) -> float:
    env = {**os.environ, **ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), command, config], cwd=ROOT, env=env,
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"axolotl {command} failed (exit {proc.returncode}); see {log}")
    return time.time() - start


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(model, tokenizer, spec, test_rows, general_rows) -> dict:
    from axolotl_tell.evaluate import general_loss, task_score

    task = task_score(model, tokenizer, spec, test_rows, metric="exact_match")
    return {"task": task, "general_loss": general_loss(model, tokenizer, general_rows)}


def main():
    os.environ.update(ENV)
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default="example_configs/demo.yml")
    ap.add_argument("--test", default="example_configs/data/question_formation_test100.jsonl")
    ap.add_argument("--general-heldout", default="example_configs/data/general_alpaca_heldout50.jsonl")
    ap.add_argument("--n-test", type=int, default=60)
    a = ap.parse_args()
    import datasets

    datasets.disable_progress_bars()
    from axolotl_tell.cpu_precision import detect_cpu_bf16
    from axolotl_tell.generate import load_model
    from axolotl_tell.prompting import load_spec

    cfg = yaml.safe_load((ROOT / a.config).read_text())
    out = ROOT / cfg["output_dir"]
    out.mkdir(parents=True, exist_ok=True)
    test_rows = read_jsonl(ROOT / a.test)[: a.n_test]
    general_rows = read_jsonl(ROOT / a.general_heldout)
    t0 = time.time()
    cpu = detect_cpu_bf16()  # what `bf16: auto` follows on a CPU-only machine (the plugin's detection)
    print(f"[demo] CPU: {cpu.cpu}, {'native' if cpu.native else 'no native'} bf16 ({cpu.why})", flush=True)

    print(f"[demo] 1/4 axolotl preprocess {a.config}", flush=True)
    t_pre = axolotl("preprocess", a.config, out / "preprocess.log")
    report = json.loads((out / "tell_report.json").read_text())

    print(f"[demo] 2/4 axolotl train {a.config} (log: {out / 'train.log'})", flush=True)
    t_train = axolotl("train", a.config, out / "train.log")
    spec = load_spec(out)  # tell.json: written by training, next to the adapter
    precision = json.loads((out / "tell_report.json").read_text())["trained"].get("precision", "unknown")
    print(f"[demo]     trained in {precision}", flush=True)

    print("[demo] 3/4 scoring the base model (anchored prompts)", flush=True)
    model, tok = load_model(str(ROOT / cfg["base_model"]))
    before = evaluate(model, tok, spec, test_rows, general_rows)
    print(f"[demo]     base model: task exact match {before['task']['score']:.2f}, "
          f"held-out general loss {before['general_loss']:.3f}", flush=True)
    del model

    print("[demo] 4/4 scoring base + TELL adapter", flush=True)
    model, tok = load_model(str(ROOT / cfg["base_model"]), adapter=str(out))
    after = evaluate(model, tok, spec, test_rows, general_rows)

    result = {
        "config": a.config, "model": cfg["base_model"], "test_rows": len(test_rows),
        "mix": {"task_rows": report["task"]["rows"], "repeats": report["task"]["repeats"],
                "general_rows": report["general"]["rows_used"], "ratio": report["ratio"]},
        "before": before, "after": after,
        "wall_s": {"preprocess": round(t_pre, 1), "train": round(t_train, 1), "total": round(time.time() - t0, 1)},
        "device": "cpu", "cpu_count": os.cpu_count(), "precision": precision,
        "cpu": {"name": cpu.cpu, "native_bf16": cpu.native, "why": cpu.why},
    }
    (out / "demo_scores.json").write_text(json.dumps(result, indent=2))
    print("\n  TELL demo: question_formation, SmolLM2-135M-Instruct, LoRA on CPU")
    print(f"  mix: {report['task']['rows']} task rows x{report['task']['repeats']} in "
          f"{report['general']['rows_used']} general rows (ratio {report['ratio']['achieved']:.1f})")
    print(f"  {'':<24}{'before':>10}{'after':>10}")
    print(f"  {'task exact match':<24}{before['task']['score']:>10.2f}{after['task']['score']:>10.2f}")
    print(f"  {'held-out general loss':<24}{before['general_loss']:>10.3f}{after['general_loss']:>10.3f}")
    print(f"  precision: {precision} ({'native' if cpu.native else 'no native'} bf16 on {cpu.cpu})")
    print(f"  wall time: preprocess {t_pre:.0f}s, train {t_train:.0f}s, total {time.time() - t0:.0f}s")
    print(f"  examples: {after['task']['examples'][:3]}")
    print(f"  results: {out / 'demo_scores.json'}")


if __name__ == "__main__":
    main()
