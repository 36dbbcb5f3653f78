"""Copy the data the benchmark reads into bench/.data/ (gzipped, git-ignored), for a machine without ../shared.

usage: python bench/stage_data.py [--grid main] [--shared-data ../shared/data] [--dest bench/.data]

The GPU machine gets a copy of the checkout but not ../shared. Stage the data here, carry `bench/.data` in the
remote call that runs the benchmark, and pass `--shared-data bench/.data` to bench/run.py. Only the files the
grid's task specs and general sources name are copied (about 6 MB gzipped for the main grid).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from tellbench import ROOT  # noqa: E402
from tellbench.data import SHARED_PREFIX  # noqa: E402
from tellbench.spec import load_grids, load_task  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", nargs="*", default=["main", "sweeps"])
    ap.add_argument("--shared-data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--dest", default=str(BENCH / ".data"))
    args = ap.parse_args(argv)
    grids = load_grids()
    paths = set()
    for name in args.grid:
        for block in grids["grids"][name]:
            for task in block["tasks"]:
                spec = load_task(task)
                paths |= {spec["train"], spec["test"]}
            for source in (block.get("general") or grids["general"])["sources"]:
                paths.add(source["path"])
    total = 0
    for path in sorted(paths):
        if not path.startswith(SHARED_PREFIX):
            continue
        rel = path[len(SHARED_PREFIX):]
        src, dst = Path(args.shared_data) / rel, Path(args.dest) / (rel + ".gz")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as f, gzip.GzipFile(dst, "wb", mtime=0) as g:
            shutil.copyfileobj(f, g)
        total += dst.stat().st_size
        print(f"{dst}  {dst.stat().st_size / 1e6:.1f} MB")
    print(f"staged {len(paths)} files, {total / 1e6:.1f} MB in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
