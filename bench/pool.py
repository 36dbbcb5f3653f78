"""A million-row general set: `axolotl preprocess` with the plugin against plain Axolotl, measured side by side.

usage: python bench/pool.py [--rows 1000000] [--out bench/results/pool_cpu.json] [--model DIR] [--skip-plain]

1. A chat general pool of ``--rows`` rows is written once (the rows of ``shared/data/general`` varied: each gets
   a numbered request and a reworded answer, so no two rows are equal), plus 10 question_formation task rows.
2. ``plain``: plain Axolotl preprocess of the whole pool (``datasets:`` = the pool; what a user does without the
   plugin); ``tell``: the plugin at ratio 50 with default repeats (auto = 20), fresh prepared folder;
   ``tell_again``: another ratio (40) and another anchor on the same prepared folder (the token cache reused);
   ``tell_streaming``: ``tell_general_streaming: true`` on a fresh folder, with its peak RSS;
   every command is timed whole (start-up, imports, reading, tokenizing, saving) and ``python -c 'import axolotl_tell,
   axolotl.cli.preprocess'`` is timed too, as the start-up floor. Peak RSS: the largest process of the command's
   tree (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a fresh wrapper process per command).
Targets (issue 12): tell / plain <= 0.05; tell_again <= 10 s above start-up, nothing tokenized twice;
streaming peak RSS <= 2 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(BENCH), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from tellbench import axo, configs, data  # noqa: E402
from tellbench.spec import load_grids, load_task  # noqa: E402

TARGET_RATIO, TARGET_AGAIN_S, TARGET_RSS_GB = 0.05, 10.0, 2.0


def write_pool(path: Path, rows: int, shared_data: str | None) -> Path:
    """``rows`` distinct chat rows from the shared general data (written once; reused if complete)."""
    if path.is_file() and sum(1 for _ in path.open("rb")) == rows:
        return path
    base = []
    for name in ("alpaca_en_demo.jsonl", "natural_instructions.jsonl"):
        for row in data.read_jsonl(data.resolve(f"{data.SHARED_PREFIX}general/{name}", shared_data)):
            user = (row.get("instruction", "") + ("\n\n" + row["input"] if row.get("input") else "")).strip()
            if user and row.get("output"):
                base.append((user, row["output"]))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in range(rows):
            user, answer = base[i % len(base)]
            variant = i // len(base)
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Request {i}. {user}"},
                {"role": "assistant", "content": f"{answer} (answer {variant})"}]}) + "\n")
    tmp.replace(path)
    return path


_RSS_WRAPPER = ("import resource, subprocess, sys\n"
                "code = subprocess.run(sys.argv[2:]).returncode\n"
                "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
                "sys.exit(code)\n")


def timed(cmd: list[str], log: Path, env: dict) -> dict:
    """Wall time of ``cmd`` and the peak RSS of its largest process (a fresh wrapper per run, so runs don't mix)."""
    rss_file = log.with_suffix(".maxrss")
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, str(rss_file), *cmd], stdout=f,
                              stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return {"wall_s": round(wall, 2), "peak_rss_gb": round(int(rss_file.read_text()) / 2**20, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(BENCH / "results" / "pool_cpu.json"))
    ap.add_argument("--model", default=str(ROOT / ".cache" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--shared-data")
    ap.add_argument("--work", default=str(BENCH / "work" / "pool"))
    ap.add_argument("--skip-plain", action="store_true", help="skip plain Axolotl on the whole pool (the long run)")
    ap.add_argument("--num-proc", type=int, default=2)
    args = ap.parse_args(argv)
    env = {**os.environ, **axo.ENV}
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    pool = write_pool(work / f"pool{args.rows}.jsonl", args.rows, args.shared_data)
    spec = load_task("question_formation")
    td = data.TaskData(spec, args.shared_data)
    task_file = data.write_jsonl(work / "task10.jsonl", [data.task_message_row(spec, r) for r in td.train_rows(10, 0)])
    settings = configs.training_settings(load_grids(), "cpu")
    settings["dataset_num_proc"] = args.num_proc
    results: dict = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                     "rows": args.rows, "pool_file_mb": round(pool.stat().st_size / 2**20, 1),
                     "dataset_num_proc": args.num_proc, "runs": {}}

    results["runs"]["startup"] = timed([sys.executable, "-c", "import axolotl_tell, axolotl.cli.preprocess"],
                                       work / "startup.log", env)
    print(f"[pool] start-up floor: {results['runs']['startup']['wall_s']} s", flush=True)

    def tell(name: str, prepared: Path, **extra) -> dict:
        cfg = configs.tell_config(args.model, settings, seed=0, general_pool=pool, task_file=task_file,
                                  anchor=extra.pop("anchor", spec["anchor"]), task_repeats="auto",
                                  general_ratio=extra.pop("ratio", 50), out=work / name / "out", prepared=prepared)
        cfg.update(extra)
        config = configs.write_config(work / name / "config.yml", cfg)
        run = timed([axo.axolotl_bin(), "preprocess", str(config)], work / name / "preprocess.log", env)
        report = json.loads((work / name / "out" / "tell_report.json").read_text())
        run["general"] = {k: report["general"].get(k) for k in (
            "rows_available", "rows_scanned", "rows_tokenized_now", "rows_from_token_cache", "rows_used",
            "supervised_tokens", "supervised_tokens_requested")}
        run["task"] = {k: report["task"][k] for k in ("rows", "repeats", "supervised_tokens")}
        print(f"[pool] {name}: {run['wall_s']} s, peak RSS {run['peak_rss_gb']} GB, general {run['general']}",
              flush=True)
        return run

    for name in ("tell", "tell_again", "tell_streaming", "plain"):
        shutil.rmtree(work / name, ignore_errors=True)
    shutil.rmtree(work / "prepared", ignore_errors=True)
    shutil.rmtree(work / "prepared_stream", ignore_errors=True)
    results["runs"]["tell"] = tell("tell", work / "prepared")
    results["runs"]["tell_again"] = tell("tell_again", work / "prepared", ratio=40,
                                         anchor="Rewrite the statement as a yes/no question.")
    results["runs"]["tell_streaming"] = tell("tell_streaming", work / "prepared_stream", tell_general_streaming=True)
    if not args.skip_plain:
        cfg = configs.plain_config(args.model, settings, seed=0, data_file=pool, out=work / "plain" / "out",
                                   prepared=work / "plain" / "prepared")
        config = configs.write_config(work / "plain" / "config.yml", cfg)
        results["runs"]["plain"] = timed([axo.axolotl_bin(), "preprocess", str(config)],
                                         work / "plain" / "preprocess.log", env)
        print(f"[pool] plain Axolotl: {results['runs']['plain']['wall_s']} s", flush=True)

    runs = results["runs"]
    startup = runs["startup"]["wall_s"]
    summary = {"tell_again_above_startup_s": round(runs["tell_again"]["wall_s"] - startup, 2),
               "tell_again_tokenized_now": runs["tell_again"]["general"]["rows_tokenized_now"],
               "tell_again_rows_needed_beyond_first": max(0, runs["tell_again"]["general"]["rows_scanned"]
                                                          - runs["tell"]["general"]["rows_scanned"]),
               "streaming_peak_rss_gb": runs["tell_streaming"]["peak_rss_gb"]}
    if "plain" in runs:
        summary["tell_over_plain"] = round(runs["tell"]["wall_s"] / runs["plain"]["wall_s"], 4)
        summary["ratio_ok"] = summary["tell_over_plain"] <= TARGET_RATIO
    summary["again_ok"] = summary["tell_again_above_startup_s"] <= TARGET_AGAIN_S
    summary["rss_ok"] = summary["streaming_peak_rss_gb"] is not None and \
        summary["streaming_peak_rss_gb"] <= TARGET_RSS_GB
    results["summary"] = summary
    results["targets"] = {"tell_over_plain": TARGET_RATIO, "tell_again_above_startup_s": TARGET_AGAIN_S,
                          "streaming_peak_rss_gb": TARGET_RSS_GB}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print("\n| run | wall s | peak RSS GB | general rows scanned / tokenized now / from cache |")
    print("|---|---:|---:|---|")
    for name, run in runs.items():
        g = run.get("general") or {}
        print(f"| {name} | {run['wall_s']} | {run.get('peak_rss_gb')} | "
              f"{g.get('rows_scanned', '')} / {g.get('rows_tokenized_now', '')} / {g.get('rows_from_token_cache', '')} |")
    print(f"\nsummary: {json.dumps(summary)}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
