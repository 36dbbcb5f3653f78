"""What `tell_keep_best` costs a user: the demo's training run with and without it, side by side.

usage: python bench/keep_best_cost.py [--config example_configs/demo.yml] [--val-rows 20]
       [--out bench/results/keep_best_cost_cpu.json]

Both runs train the demo's plan (same config, same seed); the keep-best run adds 20 held-out task rows (rows 60+
of the demo's test file, never scored by the demo), `tell_eval_generate: exact_match` and `tell_keep_best: true`:
8 evaluations (7 evenly spaced + the last step), a checkpoint at each. Prints a table and writes JSON with the CPU
it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {"AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = re.search(r"model name\s*:\s*(.*)", info)
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split()) if "flags" in info else set()
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return f"{name.group(1) if name else 'unknown CPU'} ({os.cpu_count()} cores; bf16: {', '.join(native) or 'not native'})"


def train(config: Path, log: Path) -> float:
    bin_dir = Path(sys.executable).parent  # `axolotl train` launches `accelerate` from PATH
    env = {**os.environ, **ENV, "OMP_NUM_THREADS": str(os.cpu_count()),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    axolotl = str(bin_dir / "axolotl")
    subprocess.run([axolotl, "preprocess", str(config)], cwd=ROOT, env=env, check=True, capture_output=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run([axolotl, "train", str(config)], cwd=ROOT, env=env, check=True, stdout=f,
                       stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="example_configs/demo.yml")
    ap.add_argument("--val-rows", type=int, default=20)
    ap.add_argument("--out", default="bench/results/keep_best_cost_cpu.json")
    args = ap.parse_args(argv)
    work = ROOT / "outputs" / "keep_best_cost"
    work.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / args.config).read_text())
    test = (ROOT / "example_configs/data/question_formation_test100.jsonl").read_text().splitlines()
    val = work / "val.jsonl"
    val.write_text("\n".join(test[60:60 + args.val_rows]) + "\n")
    runs = {}
    for name, extra in (("plain", {}), ("keep_best", {
            "tell_task_test_datasets": [{"path": str(val), "ds_type": "json", "type": "chat_template"}],
            "tell_eval_generate": "exact_match", "tell_eval_max_new_tokens": 24, "tell_keep_best": True})):
        cfg = {**base, **extra, "output_dir": str(work / name), "dataset_prepared_path": str(work / "prepared")}
        if extra:  # the demo says `save_strategy: "no"`; keep-best saves at each evaluation (a config error else)
            cfg.pop("save_strategy", None)
        path = work / f"{name}.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        wall = train(path, work / f"{name}.log")
        report = json.loads((work / name / "tell_report.json").read_text())
        evals = (work / name / "tell_eval_steps.jsonl")
        runs[name] = {"train_wall_s": round(wall, 1), "steps": report["trained"]["steps"],
                      "evaluations": len(evals.read_text().splitlines()) if evals.is_file() else 0,
                      "kept": (report["trained"].get("kept") or {}).get("step")}
        print(f"[keep_best_cost] {name}: {runs[name]}", flush=True)
    added = runs["keep_best"]["train_wall_s"] - runs["plain"]["train_wall_s"]
    result = {"config": args.config, "val_rows": args.val_rows, "cpu": cpu_name(), "runs": runs,
              "added_s": round(added, 1), "added_pct": round(100 * added / runs["plain"]["train_wall_s"], 1),
              "command": "python bench/keep_best_cost.py " + " ".join(argv or sys.argv[1:])}
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print("\n| run | train wall (s) | steps | evaluations | kept step |\n|---|---:|---:|---:|---:|")
    for name, r in runs.items():
        print(f"| {name} | {r['train_wall_s']} | {r['steps']} | {r['evaluations']} | {r['kept'] or '–'} |")
    print(f"\nadded by tell_keep_best: {added:+.0f} s ({result['added_pct']:+.0f} %) on {result['cpu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
