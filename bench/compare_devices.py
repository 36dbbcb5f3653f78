"""Do two machines' frontier results agree? TELL at the defaults and `sft_best`, cell by cell and seed by seed.

usage: python bench/compare_devices.py bench/results/frontier_cpu.json bench/results/frontier_gpu.json [--md OUT.md]

Prints one row per (task, rows, point, seed) that both files hold, with each side's test score and held-out
general loss change from its own base model, then the per-point means over those shared seeds. Both files'
runs are read with today's defaults (bench/tellbench/frontier.py), so a run counts as "TELL (defaults)" on both
sides by the same rule.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
for p in (str(BENCH), str(BENCH.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from tellbench.frontier import is_default_tell  # noqa: E402


def points(path: Path) -> dict:
    """{(task, rows, point, seed): (score, Δ general)} for TELL at the defaults and sft_best."""
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    base = {r["task"]: r["general_loss"] for r in runs if r["method"] == "zero_shot" and r.get("general_loss")}
    out = {}
    for r in runs:
        point = "TELL (defaults)" if is_default_tell(r) else ("sft_best" if r["method"] == "sft_best" else None)
        if point and r["task"] in base:
            out[(r["task"], r["task_rows"], point, r["seed"])] = (r["score"], r["general_loss"] - base[r["task"]])
    return out


def compare(a_path: Path, b_path: Path) -> str:
    a, b = points(a_path), points(b_path)
    shared = sorted(set(a) & set(b))
    lines = [f"| task | rows | point | seed | score: {a_path.stem} | score: {b_path.stem} | "
             f"Δ general: {a_path.stem} | Δ general: {b_path.stem} |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for k in shared:
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {a[k][0]:.2f} | {b[k][0]:.2f} | "
                     f"{a[k][1]:+.3f} | {b[k][1]:+.3f} |")
    lines += ["", f"| task | rows | point | seeds | mean score: {a_path.stem} | mean score: {b_path.stem} |",
              "|---|---:|---|---:|---:|---:|"]
    groups = sorted({k[:3] for k in shared})
    for g in groups:
        keys = [k for k in shared if k[:3] == g]
        lines.append(f"| {g[0]} | {g[1]} | {g[2]} | {len(keys)} | {statistics.mean(a[k][0] for k in keys):.3f} | "
                     f"{statistics.mean(b[k][0] for k in keys):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--md", help="also write the tables to this file")
    args = ap.parse_args(argv)
    text = compare(Path(args.a), Path(args.b))
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
