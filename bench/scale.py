"""How the plugin's own data work scales with the general pool (CPU only, no model).

usage: python bench/scale.py [--out bench/results/scale_cpu.json] [--plan-rows 1000000 10000000]
                             [--count-rows 1000000] [--mean-tokens 64] [--check-rows 1000000] [--reps 3] [--quick]

1. Planning (``axolotl_tell.plan.build_plan``) on general pools of ``--plan-rows`` rows (supervised counts uniform
   in 1..399) with 30 task rows x 20 repeats (mean 20 supervised tokens), two budgets: ``typical`` (ratio 50:
   the plan uses a small prefix of the pool's permutation) and ``whole_pool`` (a token budget of exactly the pool's
   tokens: every row is planned, the worst case). Time: best of ``--reps`` calls. Memory: tracemalloc's peak
   during one more call (numpy reports its buffers to tracemalloc; the inputs are excluded, the returned order is
   included), divided by the pool's rows.
2. ``axolotl_tell.rows.row_token_counts`` on a ``--count-rows``-row dataset saved with ``save_to_disk`` and
   memory-mapped back with ``load_from_disk`` (as the prepared general data is), row lengths uniform around
   ``--mean-tokens`` (input_ids int32, labels int64 with the first ~40% of each row masked, as Axolotl writes
   them). Each implementation runs in a fresh process: time (best of ``--reps``); memory allocated by the call
   (tracemalloc's peak for numpy + the Arrow memory pool's peak; the memory-mapped data itself is not counted),
   and the growth of the process's peak RSS (which also counts the mapped pages the call reads). The previous,
   unbatched implementation (``v1``, inlined below) is measured the same way; both must return the same counts.
3. The local-file check (``axolotl_tell.datacheck.check_json_file``) that runs before the loaders: one pass over a
   ``--check-rows``-line alpaca JSON Lines file.

``--quick``: small sizes, for the test suite (tests/test_scale.py). The table goes to stdout, the numbers to --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

TASK_ROWS, TASK_REPEATS, RATIO = 30, 20, 50


def _best(fn, reps: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), [round(t, 4) for t in times]


def _traced_peak(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del result
    return peak


# ---------------------------------------------------------------------------------------------- 1. planning


def bench_plan(rows: int, reps: int) -> list[dict]:
    from axolotl_tell.plan import build_plan

    rng = np.random.default_rng(0)
    general = rng.integers(1, 400, rows).astype(np.int64)
    task = rng.integers(10, 31, TASK_ROWS).astype(np.int64)
    out = []
    for case, kwargs in (("typical", {"general_ratio": RATIO}),
                         ("whole_pool", {"general_ratio": None, "general_tokens": int(general.sum())})):
        def call():
            return build_plan(task, general, task_repeats=TASK_REPEATS, spread="even", seed=1, **kwargs)

        plan = call()
        best, times = _best(call, reps)
        peak = _traced_peak(call)
        out.append({
            "case": case, "general_rows": rows, "general_rows_used": plan.general_rows_used,
            "plan_rows": int(plan.order.size), "time_s_best": round(best, 4), "times_s": times,
            "peak_bytes": peak, "peak_bytes_per_general_row": round(peak / rows, 2),
            "order_bytes": int(plan.order.nbytes), "order_bytes_per_plan_row": plan.order.itemsize,
        })
        del plan
    return out


# ------------------------------------------------------------------------------------ 2. row_token_counts


def row_token_counts_v1(dataset):
    """The unbatched implementation this bench replaced (commit 8f9d5eb .. 55c6fea): whole columns at once."""
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    labels = table.column("labels").combine_chunks()
    lengths = pc.list_value_length(table.column("input_ids").combine_chunks()).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(labels).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(labels).to_numpy(zero_copy_only=False)
    supervised = np.bincount(parents, weights=(flat != -100), minlength=len(dataset))
    return lengths.astype(np.int64), supervised.astype(np.int64)


def make_count_dataset(path: Path, rows: int, mean_tokens: int) -> dict:
    """A tokenized-looking dataset (input_ids int32, labels int64, attention_mask int8), saved to disk."""
    import pyarrow as pa
    from datasets import Dataset

    rng = np.random.default_rng(1)
    parts, written = [], 0
    block = 200_000
    for start in range(0, rows, block):  # build in blocks to bound the bench's own memory
        n = min(block, rows - start)
        lengths = rng.integers(max(1, mean_tokens // 4), mean_tokens * 7 // 4 + 1, n)
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        ids = rng.integers(0, 50_000, int(offsets[-1])).astype(np.int32)
        labels = ids.astype(np.int64)
        prompt = (lengths * 2) // 5
        mask = np.arange(ids.size) - np.repeat(offsets[:-1], lengths) < np.repeat(prompt, lengths)
        labels[mask] = -100
        table = pa.table({
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "attention_mask": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ones(ids.size, np.int8))),
            "labels": pa.ListArray.from_arrays(pa.array(offsets), pa.array(labels)),
        })
        parts.append(Dataset(table))
        written += int(offsets[-1])
    from datasets import concatenate_datasets

    concatenate_datasets(parts).save_to_disk(str(path))
    return {"rows": rows, "tokens": written, "mean_tokens": round(written / rows, 2)}


def _count_worker(path: str, impl: str, reps: int, queue) -> None:
    from datasets import load_from_disk

    from axolotl_tell.rows import row_token_counts

    import pyarrow as pa

    fn = row_token_counts if impl == "batched" else row_token_counts_v1
    dataset = load_from_disk(path)
    pool = pa.default_memory_pool()
    arrow_before = pool.max_memory() or 0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lengths, supervised = fn(dataset)
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    arrow_peak = (pool.max_memory() or 0) - arrow_before
    peak = _traced_peak(lambda: fn(dataset))
    best, times = _best(lambda: fn(dataset), reps)
    queue.put({"impl": impl, "time_s_best": round(best, 4), "times_s": times, "tracemalloc_peak_bytes": peak,
               "arrow_pool_peak_bytes": int(arrow_peak), "allocated_peak_bytes": int(peak + arrow_peak),
               "rss_peak_growth_bytes": int(rss_growth),
               "checksum": [int(lengths.sum()), int(supervised.sum()), int((supervised * np.arange(lengths.size)).sum())]})


def bench_counts(rows: int, mean_tokens: int, reps: int) -> dict:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="tell-scale-") as tmp:
        shape = make_count_dataset(Path(tmp) / "ds", rows, mean_tokens)
        results = []
        for impl in ("batched", "v1"):
            queue = ctx.Queue()
            proc = ctx.Process(target=_count_worker, args=(str(Path(tmp) / "ds"), impl, reps, queue))
            proc.start()
            results.append(queue.get())
            proc.join()
    batched, v1 = results
    assert batched["checksum"] == v1["checksum"], (batched["checksum"], v1["checksum"])
    for r in results:
        r["allocated_bytes_per_row"] = round(r["allocated_peak_bytes"] / rows, 2)
        r["allocated_bytes_per_token"] = round(r["allocated_peak_bytes"] / shape["tokens"], 2)
        r["rss_growth_bytes_per_row"] = round(r["rss_peak_growth_bytes"] / rows, 2)
    from axolotl_tell.rows import COUNT_BATCH_ROWS

    return {**shape, "batch_rows": COUNT_BATCH_ROWS, "batched": batched, "v1": v1}


# ------------------------------------------------------------------------------------------ 3. file check


def bench_check(rows: int, reps: int) -> dict:
    from axolotl_tell import datacheck

    rng = np.random.default_rng(2)
    words = np.array("the cat dog bird sat ran flew over under on a an big small red blue green house tree river "
                     "question answer statement is are was were did does can will why how what who".split())
    with tempfile.TemporaryDirectory(prefix="tell-scale-") as tmp:
        path = Path(tmp) / "general.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for _ in range(rows):
                f.write(json.dumps({"instruction": " ".join(rng.choice(words, 12)), "input": "",
                                    "output": " ".join(rng.choice(words, 20))}) + "\n")
        size = path.stat().st_size

        def call():
            datacheck._checked.clear()  # measure the pass, not the per-process memo
            return datacheck.check_json_file(path, "bench")

        assert call() == rows
        best, times = _best(call, reps)
        peak = _traced_peak(call)
    return {"rows": rows, "file_bytes": size, "time_s_best": round(best, 4), "times_s": times,
            "us_per_row": round(best / rows * 1e6, 3), "mb_per_s": round(size / best / 1e6, 1),
            "tracemalloc_peak_bytes": peak}


# ---------------------------------------------------------------------------------------------------- main


def _table(result: dict) -> str:
    lines = ["planning (build_plan)", f"  {'general rows':>13} {'case':>10} {'used':>10} {'time s':>8} "
             f"{'peak MB':>9} {'B/row':>7}"]
    for p in result["plan"]:
        lines.append(f"  {p['general_rows']:>13,} {p['case']:>10} {p['general_rows_used']:>10,} {p['time_s_best']:>8.3f} "
                     f"{p['peak_bytes'] / 1e6:>9.1f} {p['peak_bytes_per_general_row']:>7.1f}")
    c = result["row_token_counts"]
    lines.append(f"row_token_counts ({c['rows']:,} rows, {c['tokens']:,} tokens, mean {c['mean_tokens']})")
    lines.append(f"  {'impl':>8} {'time s':>8} {'alloc MB':>9} {'B/row':>8} {'B/token':>8} {'RSS +MB':>9}")
    for impl in ("batched", "v1"):
        r = c[impl]
        lines.append(f"  {impl:>8} {r['time_s_best']:>8.3f} {r['allocated_peak_bytes'] / 1e6:>9.1f} "
                     f"{r['allocated_bytes_per_row']:>8.1f} {r['allocated_bytes_per_token']:>8.2f} "
                     f"{r['rss_peak_growth_bytes'] / 1e6:>9.1f}")
    lines.append("  alloc: numpy (tracemalloc) + Arrow pool peaks of the call. RSS +MB: growth of the process's peak RSS\n"
                 "  over its peak before the call (imports included; 0 = stayed below it; counts mapped pages read)")
    k = result["file_check"]
    lines.append(f"file check ({k['rows']:,} JSON lines, {k['file_bytes'] / 1e6:.0f} MB): {k['time_s_best']:.2f} s, "
                 f"{k['us_per_row']:.2f} us/row, {k['mb_per_s']:.0f} MB/s, peak {k['tracemalloc_peak_bytes'] / 1e3:.0f} kB")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(BENCH / "results" / "scale_cpu.json"))
    parser.add_argument("--plan-rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--count-rows", type=int, default=1_000_000)
    parser.add_argument("--mean-tokens", type=int, default=64)
    parser.add_argument("--check-rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.plan_rows, args.count_rows, args.check_rows, args.reps = [20_000], 5_000, 2_000, 1
    result = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python bench/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "plan": [p for rows in args.plan_rows for p in bench_plan(rows, args.reps)],
        "row_token_counts": bench_counts(args.count_rows, args.mean_tokens, args.reps),
        "file_check": bench_check(args.check_rows, args.reps),
    }
    print(_table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwritten: {out}")
    return result


if __name__ == "__main__":
    main()
