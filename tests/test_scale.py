"""Scale: `row_token_counts` streams in batches and matches a row-by-row count; `bench/scale.py` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, concatenate_datasets, load_from_disk

from axolotl_tell.rows import row_token_counts

ROOT = Path(__file__).resolve().parent.parent


def _dataset(rows: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        ids = rng.integers(0, 500, int(rng.integers(0, 40))).tolist()  # empty rows included
        out.append({"input_ids": ids, "labels": [-100 if rng.random() < 0.4 else t for t in ids]})
    return Dataset.from_list(out)


def _by_row(dataset) -> tuple[list[int], list[int]]:
    return ([len(r["input_ids"]) for r in dataset], [sum(v != -100 for v in r["labels"]) for r in dataset])


@pytest.mark.parametrize("batch_rows", [1, 7, 256, 1 << 16])
def test_row_token_counts_match_a_row_by_row_count(tmp_path, batch_rows):
    base = _dataset(1500, 0)
    base.save_to_disk(str(tmp_path / "saved"))
    mapped = load_from_disk(str(tmp_path / "saved"))  # memory-mapped, as prepared data is
    variants = {
        "in memory": base,
        "memory-mapped": mapped,
        "indices mapping": mapped.select(np.random.default_rng(1).permutation(1500)[:900]),
        "several chunks": concatenate_datasets([base, mapped.select(range(10, 700)), _dataset(50, 2)]),
        "empty": base.select([]),
    }
    for name, dataset in variants.items():
        lengths, supervised = row_token_counts(dataset, batch_rows=batch_rows)
        expected = _by_row(dataset)
        assert lengths.dtype == supervised.dtype == np.int64, name
        assert (lengths.tolist(), supervised.tolist()) == expected, name


def test_scale_bench_runs_quick(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {p["case"] for p in result["plan"]} == {"typical", "whole_pool"}
    counts = result["row_token_counts"]
    assert counts["batched"]["checksum"] == counts["v1"]["checksum"]
    assert result["file_check"]["rows"] == 2000
    assert "planning (build_plan)" in proc.stdout
