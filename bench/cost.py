"""The plugin's own cost, measured side by side in one run.

usage: python bench/cost.py [--out bench/results/cost_cpu.json] [--rows 1000000] [--pool-rows 4000] [--reps 3]
                            [--model DIR] [--shared-data DIR]

1. Planning: ``axolotl_tell.plan.build_plan`` on a general pool of ``--rows`` rows (random supervised counts,
   1..399 tokens) with 30 task rows x 20 repeats, the budget set so that the WHOLE pool is used (the plan's worst
   case: a permutation and a cumulative sum over every row). Time: best of 5 calls. Memory: tracemalloc's peak
   during one call (numpy reports its buffers to tracemalloc), inputs excluded, the returned order included.
   Targets: <= 1 s and <= 16 bytes per row.
2. ``axolotl preprocess`` wall time, plugin vs plain Axolotl, on the same rows: ``--pool-rows`` general chat rows
   (alpaca + natural-instructions, as in the benchmark) plus 10 question_formation rows. Plain: both files as
   ``datasets:``. Plugin: the general file as ``datasets:``, the task file as ``tell_task_datasets``, 1 repeat and a
   ratio far above what the pool holds with ``tell_general_shortfall: warn``, so the mix is exactly all rows.
   Runs alternate (plain, plugin, plain, ...) ``--reps`` times each, each into a fresh prepared folder (no cache).
   Target: plugin / plain <= 1.05 (medians). The whole command is timed: process start, imports, tokenization,
   saving; the part after the imports (first log line to exit) is reported too. A third config, plain with
   ``shuffle_merged_datasets: false``, is timed in the same rotation: plain Axolotl saves its shuffled dataset
   through an index mapping (slow), the plugin flattens its planned order before saving, so the unshuffled plain
   run is the one that isolates the plugin's own work (anchoring, counting, planning, one select).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(BENCH), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

from tellbench import axo, configs, data  # noqa: E402
from tellbench.spec import load_grids, load_task  # noqa: E402

PLAN_TIME_TARGET_S = 1.0
PLAN_BYTES_TARGET = 16
PREPROCESS_RATIO_TARGET = 1.05


def plan_cost(rows: int) -> dict:
    from axolotl_tell.plan import build_plan

    rng = np.random.default_rng(0)
    general = rng.integers(1, 400, size=rows, dtype=np.int64)
    task = rng.integers(5, 12, size=30, dtype=np.int64)
    kwargs = dict(task_repeats=20, general_tokens=int(general.sum()), general_ratio=None, seed=1)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        plan = build_plan(task, general, **kwargs)
        times.append(time.perf_counter() - start)
    del plan
    tracemalloc.start()
    plan = build_plan(task, general, **kwargs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_million = min(times) * 1e6 / rows
    return {
        "general_rows": rows, "task_rows": 30, "task_repeats": 20, "plan_rows": int(plan.order.size),
        "time_s_best_of_5": round(min(times), 4), "times_s": [round(t, 4) for t in times],
        "time_s_per_1e6_rows": round(per_million, 4),
        "peak_bytes": int(peak), "peak_bytes_per_row": round(peak / rows, 2),
        "output_bytes_per_row": round(plan.order.nbytes / rows, 2),
        "target_time_s_per_1e6_rows": PLAN_TIME_TARGET_S, "target_bytes_per_row": PLAN_BYTES_TARGET,
        "time_ok": per_million <= PLAN_TIME_TARGET_S, "bytes_ok": peak / rows <= PLAN_BYTES_TARGET,
    }


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", re.M)


def _after_imports_s(log: Path, wall: float, started: float) -> float | None:
    """Seconds from the first timestamped log line (imports done) to the process's exit."""
    stamps = _STAMP.findall(log.read_text(encoding="utf-8", errors="replace"))
    if not stamps:
        return None
    first = dt.datetime.strptime(stamps[0], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return round(started + wall - first, 2)


_BAR = re.compile(r"(Tokenizing Prompts|Saving the dataset|Dropping Invalid Sequences|TELL: anchoring task rows|"
                  r"Flattening the indices)[^|\r\n]*\|[^|\r\n]*\|\s*(\d+)/(\d+) \[(\d+):(\d+)<")


def _phases_s(log: Path) -> dict:
    """Seconds per data phase, from tqdm bars in the log (1 s resolution): per phase, the longest finished bar of
    each dataset size, summed over sizes (tokenizing the pool and the task file are two bars)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    longest: dict = {}
    for name, done, total, mm, ss in _BAR.findall(text):
        if done == total:
            key = (name, total)
            longest[key] = max(longest.get(key, 0), int(mm) * 60 + int(ss))
    phases: dict = {}
    for (name, _), secs in longest.items():
        phases[name] = phases.get(name, 0) + secs
    return phases


def preprocess_cost(args) -> dict:
    grids = load_grids()
    work = Path(args.work).resolve()
    general_cfg = dict(grids["general"])
    gen = data.write_general(general_cfg, work / "data", args.shared_data)
    pool = data.read_jsonl(Path(gen["pool"]))[: args.pool_rows]
    pool_file = data.write_jsonl(work / "data" / f"pool{len(pool)}.jsonl", pool)
    spec = load_task("question_formation")
    td = data.TaskData(spec, args.shared_data)
    task_file = data.write_jsonl(work / "data" / "task10.jsonl",
                                 [data.task_message_row(spec, r) for r in td.train_rows(10, 0)])
    settings = configs.training_settings(grids, "cpu")
    settings["dataset_num_proc"] = 1
    runs = {"plain": [], "plugin": [], "plain_unshuffled": []}
    for rep in range(args.reps):
        for kind in runs:
            d = work / f"{kind}-{rep}"
            if d.exists():
                import shutil

                shutil.rmtree(d)
            if kind.startswith("plain"):
                cfg = configs.plain_config(args.model, settings, seed=0, data_file=pool_file, out=d / "out",
                                           prepared=d / "prepared")
                cfg["datasets"].append({"path": str(task_file), "ds_type": "json", "type": "chat_template"})
                if kind == "plain_unshuffled":  # no shuffle: isolates the plugin's own work from the save
                    cfg["shuffle_merged_datasets"] = False
            else:
                cfg = configs.tell_config(args.model, settings, seed=0, general_pool=pool_file, task_file=task_file,
                                          anchor=spec["anchor"], task_repeats=1, general_ratio=1e6,
                                          out=d / "out", prepared=d / "prepared")
            config = configs.write_config(d / "config.yml", cfg)
            started = time.time()
            wall = axo.run_axolotl("preprocess", config, d / "preprocess.log")
            runs[kind].append({"wall_s": round(wall, 2),
                               "after_imports_s": _after_imports_s(d / "preprocess.log", wall, started),
                               "phases_s": _phases_s(d / "preprocess.log")})
            print(f"[cost] preprocess {kind} #{rep}: {wall:.1f}s", flush=True)
    report = axo.tell_report(work / f"plugin-{args.reps - 1}" / "out")
    rows_plugin = report["rows_total"] if report else None
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    med_after = {k: statistics.median(r["after_imports_s"] for r in v if r["after_imports_s"] is not None)
                 for k, v in runs.items()}
    ratio = med["plugin"] / med["plain"]
    unshuffled = med["plugin"] / med["plain_unshuffled"]
    return {
        "general_rows": len(pool), "task_rows": 10, "rows_plugin_mix": rows_plugin, "reps": args.reps,
        "runs": runs, "median_wall_s": med, "ratio_plugin_over_plain": round(ratio, 3),
        "ratio_plugin_over_plain_unshuffled": round(unshuffled, 3),
        "median_after_imports_s": med_after,
        "ratio_after_imports": round(med_after["plugin"] / med_after["plain"], 3) if med_after["plain"] else None,
        "target_ratio": PREPROCESS_RATIO_TARGET, "ratio_ok": ratio <= PREPROCESS_RATIO_TARGET,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(BENCH / "results" / "cost_cpu.json"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pool-rows", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", default=str(ROOT / ".cache" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--shared-data")
    ap.add_argument("--work", default=str(BENCH / "work" / "cost"))
    ap.add_argument("--skip-preprocess", action="store_true")
    args = ap.parse_args(argv)
    for key, value in axo.ENV.items():
        os.environ.setdefault(key, value)

    plan = plan_cost(args.rows)
    print(f"[cost] plan: {plan['time_s_per_1e6_rows']:.3f} s per 10^6 rows (target <= {PLAN_TIME_TARGET_S}), "
          f"peak {plan['peak_bytes_per_row']:.1f} bytes/row (target <= {PLAN_BYTES_TARGET}; the returned order "
          f"alone is {plan['output_bytes_per_row']:.0f})", flush=True)
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "plan": plan}
    if not args.skip_preprocess:
        result["preprocess"] = pre = preprocess_cost(args)
        print(f"[cost] axolotl preprocess, {pre['general_rows']} general + 10 task rows, median of {pre['reps']}: "
              f"plain {pre['median_wall_s']['plain']:.1f}s, plugin {pre['median_wall_s']['plugin']:.1f}s, "
              f"ratio {pre['ratio_plugin_over_plain']:.3f} (target <= {PREPROCESS_RATIO_TARGET}); after imports "
              f"{pre['median_after_imports_s']['plain']:.1f}s vs {pre['median_after_imports_s']['plugin']:.1f}s "
              f"({pre['ratio_after_imports']}); vs plain without shuffling "
              f"{pre['median_wall_s']['plain_unshuffled']:.1f}s ({pre['ratio_plugin_over_plain_unshuffled']:.3f})",
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"[cost] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
