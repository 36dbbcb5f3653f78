"""The same config gives the same bytes everywhere, and every rank sees its share of one global order.

* across processes: `prepare_tell_datasets` in separate `python -c` processes (different PYTHONHASHSEED; two
  at once on one prepared folder, as two ranks do, and one on a fresh folder) gives a byte-identical
  `plan_order.npy`, the same `tell_report.json` (minus `prepared_path` / `cache_key` and the token cache's provenance) and the same rows;
* across simulated world sizes 1/2/4/8: accelerate's own `prepare_data_loader` (what `accelerator.prepare`
  does to the trainer's dataloader) shards the sequential batches; interleaving the ranks' batches step by
  step gives the plan order back, and the union of what the ranks see is the plan: exactly once each, plus,
  unpacked and with more than one rank, the first `(-rows) % (world * micro_batch)` planned rows a second
  time (accelerate's `even_batches` fills the last global batch by cycling back to the start; Axolotl keeps
  it on for unpacked data). Packed (Axolotl turns `even_batches` off), nothing repeats: the last round of
  packs goes to the first ranks only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny import make_workspace

from axolotl_tell.plan import build_plan, plan_sha256

WORLD_SIZES = (1, 2, 4, 8)


# ------------------------------------------------------------------ sharding, as accelerate does it


class _Positions(list):
    """A map-style dataset of plan positions; a list index (a pack) returns the list itself."""

    def __getitem__(self, idx):
        return list(idx) if isinstance(idx, list) else super().__getitem__(idx)


def _rank_batches(n: int, world: int, rank: int, micro: int = 1, batch_sampler=None, even_batches: bool = True):
    """What rank `rank` of `world` iterates: Axolotl's dataloader, prepared by accelerate."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader, SequentialSampler

    data = _Positions(range(n))
    if batch_sampler is None:  # unpacked: HF/Axolotl DataLoader(sampler=SequentialSampler, batch_size, drop_last)
        loader = DataLoader(data, batch_size=micro, sampler=SequentialSampler(data), drop_last=False,
                            collate_fn=list)
    else:  # packed: DataLoader(batch_sampler=MultipackBatchSampler)
        loader = DataLoader(data, batch_sampler=batch_sampler, collate_fn=lambda packs: [i for p in packs for i in p])
    prepared = prepare_data_loader(loader, num_processes=world, process_index=rank, put_on_device=False,
                                   even_batches=even_batches)
    return [list(batch) for batch in prepared]


def _interleave(per_rank: list[list[list[int]]]) -> list[int]:
    """The global order: step s = rank 0's s-th batch, then rank 1's, ..."""
    out = []
    for step in range(max(len(b) for b in per_rank)):
        for batches in per_rank:
            if step < len(batches):
                out.extend(batches[step])
    return out


def _counts():
    """Supervised tokens per task row (13) and per general row (2000)."""
    rng = np.random.default_rng(3)
    return rng.integers(5, 40, 13), rng.integers(1, 300, 2000)


PLAN_KEYS = {"task_repeats": 5, "general_ratio": 12, "spread": "even", "seed": 11}


@pytest.fixture(scope="module")
def plan():
    return build_plan(*_counts(), **PLAN_KEYS)


@pytest.mark.parametrize("micro", [1, 3, 4])
def test_every_world_size_sees_one_global_order(plan, micro):
    order = plan.order
    n = order.size
    assert n % 8 and n % 3  # a final partial global batch for every world size
    for world in WORLD_SIZES:
        same = build_plan(*_counts(), **PLAN_KEYS)
        assert plan_sha256(same.order) == plan.sha256  # the plan does not depend on the world size
        per_rank = [_rank_batches(n, world, r, micro) for r in range(world)]
        assert len({len(b) for b in per_rank}) == 1  # even_batches: every rank takes the same number of steps
        positions = _interleave(per_rank)
        extra = len(positions) - n
        assert extra == ((-n) % (world * micro) if world > 1 else 0)
        assert positions[:n] == list(range(n))  # step by step, the ranks walk the plan in order
        assert positions[n:] == list(range(extra))  # the last global batch is filled from the start of the plan
        seen = Counter(order[positions].tolist())
        assert seen == Counter(order.tolist()) + Counter(order[:extra].tolist())
        # what the padding costs: the first `extra` planned rows twice; task occurrences only those among them,
        # and the even spread puts the first one half a gap from the start
        task_positions = plan.task_positions()
        assert int(task_positions[0]) == n // (2 * plan.task_occurrences)
        repeated_task = sum(c for row, c in (seen - Counter(order.tolist())).items() if row >= plan.general_rows_available)
        assert repeated_task == int((task_positions < extra).sum())


def test_packed_sequential_batches_are_shared_out_without_repeats(plan):
    """Packed, Axolotl and accelerate alone: each rank takes every world-th pack; the last `packs % world` packs
    are dropped (world > 1).

    Axolotl builds its MultipackBatchSampler with `drop_last=True` and turns accelerate's `even_batches` off,
    so accelerate's shard stops at the last round every rank can take: nothing repeats, and up to world - 1
    packs at the end of the plan are not trained. This test pins that upstream behaviour, which the plugin's fill
    repairs (`compat.fill_pack_batches_for_ranks`; tests/test_multirank_plan.py).
    """
    from axolotl.utils.samplers.multipack import MultipackBatchSampler
    from torch.utils.data import SequentialSampler

    n = plan.order.size
    lengths = np.random.default_rng(5).integers(20, 200, n)

    def sampler():  # as Axolotl's trainer builds it: batches of one pack of micro_batch x sequence_len tokens
        return MultipackBatchSampler(SequentialSampler(range(n)), lengths=lengths, batch_max_len=4 * 256,
                                     batch_size=1, bin_size=200, sequential=True, drop_last=True)

    packs = [pack for batch in sampler() for pack in batch]
    assert [i for pack in packs for i in pack] == list(range(n))  # one rank: every row, in plan order
    for world in WORLD_SIZES:
        per_rank = [_rank_batches(n, world, r, batch_sampler=sampler(), even_batches=False) for r in range(world)]
        assert len({len(b) for b in per_rank}) == 1  # the same number of steps on every rank
        kept = (len(packs) // world) * world if world > 1 else len(packs)
        covered = sum(len(pack) for pack in packs[:kept])
        assert _interleave(per_rank) == list(range(covered))  # in plan order, each row once
        dropped = plan.order[covered:]
        assert len(packs) - kept < world and dropped.size == n - covered
        if world == 1:
            assert covered == n


# ------------------------------------------------------------------ byte-identical across processes

_PREPARE = """
import hashlib, json, sys
sys.path.insert(0, {tests!r})
import conftest  # offline environment
from axolotl.cli.config import load_cfg
from axolotl_tell import compat
from axolotl_tell.prepare import prepare_tell_datasets
cfg = load_cfg(sys.argv[1])
prepared = prepare_tell_datasets(cfg, compat.load_tokenizer(cfg))
digest = hashlib.sha256()
for row in prepared.train_dataset.with_format("numpy"):
    for column in ("input_ids", "labels", "attention_mask", "tell_source"):
        digest.update(row[column].astype("<i8").tobytes())
print("RESULT " + json.dumps({{"path": str(prepared.path), "from_cache": prepared.from_cache,
                              "rows": len(prepared.train_dataset), "rows_sha256": digest.hexdigest()}}))
"""


def _spawn(config: Path, hash_seed: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    code = _PREPARE.format(tests=str(Path(__file__).parent))
    return subprocess.Popen([sys.executable, "-c", code, str(config)], env=env, cwd=config.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def _report(path: str) -> dict:
    report = json.loads((Path(path) / "tell_report.json").read_text())
    out = {k: v for k, v in report.items() if k not in ("prepared_path", "cache_key")}
    # where the general tokens came from (this folder's token cache, or tokenized now) is provenance, not the mix
    out["general"] = {k: v for k, v in out["general"].items()
                      if k not in ("token_cache", "rows_tokenized_now", "rows_from_token_cache")}
    return out


def test_prepare_is_byte_identical_across_processes_and_ranks(tiny_model, tmp_path):
    _, cfg = make_workspace(tmp_path, tiny_model, tell_task_eval_rows=2)
    configs = {}
    for name in ("shared", "fresh"):
        configs[name] = tmp_path / f"{name}.yml"
        configs[name].write_text(yaml.safe_dump({**cfg, "dataset_prepared_path": str(tmp_path / f"prepared_{name}"),
                                                 "output_dir": str(tmp_path / f"out_{name}")}, sort_keys=False))
    # two "ranks" at once on one prepared folder: the first to take the file lock builds, the other loads
    rank0, rank1 = _spawn(configs["shared"], "1"), _spawn(configs["shared"], "2")
    ranks = [_result(rank0), _result(rank1)]
    fresh = _result(_spawn(configs["fresh"], "3"))  # another process, another folder, another hash seed

    assert sorted(r["from_cache"] for r in ranks) == [False, True]
    assert ranks[0]["path"] == ranks[1]["path"] and not fresh["from_cache"]
    assert len({r["rows_sha256"] for r in [*ranks, fresh]}) == 1
    shared_dir, fresh_dir = Path(ranks[0]["path"]), Path(fresh["path"])
    assert (shared_dir / "plan_order.npy").read_bytes() == (fresh_dir / "plan_order.npy").read_bytes()
    assert _report(str(shared_dir)) == _report(str(fresh_dir))
    assert (shared_dir / "task_eval_raw.jsonl").read_bytes() == (fresh_dir / "task_eval_raw.jsonl").read_bytes()
    assert not [p for p in shared_dir.parent.iterdir() if p.name.startswith(".tmp-")]


def test_prepare_is_identical_across_runs_in_one_process(tiny_model, tmp_path):
    """Random spread and up-sampled general data: every seeded choice, twice, in fresh folders."""
    from axolotl.cli.config import load_cfg

    from axolotl_tell import compat
    from axolotl_tell.prepare import prepare_tell_datasets

    results = []
    for run in ("a", "b"):
        path, _ = make_workspace(tmp_path, tiny_model, general_rows=6, tell_general_ratio=20, tell_spread="random",
                                 tell_general_shortfall="upsample",
                                 dataset_prepared_path=str(tmp_path / f"prepared_{run}"))
        cfg = load_cfg(str(path))
        results.append(prepare_tell_datasets(cfg, compat.load_tokenizer(cfg)))
    a, b = results
    assert not a.from_cache and not b.from_cache and a.path != b.path
    assert (a.path / "plan_order.npy").read_bytes() == (b.path / "plan_order.npy").read_bytes()
    assert _report(str(a.path)) == _report(str(b.path))
    assert a.report["general"]["shortfall"] == "upsample"
    assert a.train_dataset["input_ids"] == b.train_dataset["input_ids"]
