"""Packed runs on several ranks train the whole plan (issue 27 point 1).

Axolotl's multipack sampler builds the same list of pack batches on every rank and drops a last batch of fewer
than ``micro_batch_size`` packs; accelerate then deals the batches round-robin and, with ``drop_last`` copied from
the sampler, drops the last ``batches mod world`` of them. Measured before the fix (2 gloo ranks, real batches,
ratio 3): 88 of 113 planned rows trained, and the report said ``complete: true``.

Two layers: the sampler itself with accelerate's own sharding for 1 to 8 ranks (fast, no processes), and real
``axolotl train`` runs on 2 gloo ranks (``tests/cpu_launch.py``) whose collators record every row they train
(``AXOLOTL_TELL_RECORD_ORDER``), compared with the prepared plan.
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
from tiny import make_workspace

from axolotl_tell.pack_schedule import PlanTooSmallForRanks, fill_for_ranks, row_batches, rows_trained

LAUNCHER = Path(__file__).parent / "cpu_launch.py"


def _shard(batches: list, batch_size: int, world: int, drop_last: bool) -> list[list]:
    """What each rank's dataloader yields: accelerate's BatchSamplerShard over a batch sampler with these batches
    (even_batches off, as Axolotl sets it for packed training)."""
    from accelerate.data_loader import BatchSamplerShard

    if world == 1:  # accelerate shards nothing on one process
        return [list(batches)]

    class Fixed:  # a batch sampler that yields the given batches (what the multipack sampler is to accelerate)
        def __init__(self):
            self.batch_size, self.drop_last = batch_size, drop_last

        def __iter__(self):
            return iter(batches)

        def __len__(self):
            return len(batches)

    return [list(BatchSamplerShard(Fixed(), num_processes=world, process_index=r, split_batches=False,
                                   even_batches=False)) for r in range(world)]


def _multipack_batches(lengths: list[int], batch_size: int, batch_max_len: int,
                       drop_last: bool = False) -> tuple[list, object]:
    """Axolotl's own multipack sampler over the plan (sequential order); its trainer builds it with ``drop_last``,
    which the plugin turns off for training (``compat.fill_pack_batches_for_ranks``)."""
    from torch.utils.data import SequentialSampler

    from axolotl.utils.samplers.multipack import MultipackBatchSampler

    sampler = MultipackBatchSampler(SequentialSampler(range(len(lengths))), lengths=np.array(lengths),
                                    batch_max_len=batch_max_len, batch_size=batch_size, group_size=100_000,
                                    bin_size=200, sequential=True, drop_last=drop_last)
    return sampler.generate_batches(), sampler


def _rows(batches) -> list[int]:
    return [i for batch in batches for pack in batch for i in pack]


@pytest.mark.parametrize("world", range(1, 9))
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_every_planned_row_reaches_a_rank_once_the_batches_are_filled(world, batch_size):
    # 37 rows of 300 tokens, 2048-token packs: 6 rows a pack, 7 packs (the last one short)
    lengths = [300] * 37
    batches, _ = _multipack_batches(lengths, batch_size, 2048)
    packs = sum(len(b) for b in batches)
    try:
        filled, copied = fill_for_ranks(batches, batch_size, world)
    except PlanTooSmallForRanks as err:
        assert -(-packs // batch_size) < world, err  # refused only when some rank would get no planned batch
        assert "Fix:" in str(err)
        return
    per_rank = _shard(filled, batch_size, world, drop_last=False)
    trained = Counter(i for rank in per_rank for batch in rank for pack in batch for i in pack)
    assert packs == 7 and set(trained) == set(range(37))  # every planned row
    assert len({len(rank) for rank in per_rank}) == 1  # every rank the same number of batches: no rank waits
    assert sum(trained.values()) == 37 + copied.rows  # the copies are exactly what was added, and counted


def test_the_unfilled_batches_lose_rows_on_two_ranks():
    """The failure itself, at the sampler level: without the fill, two ranks lose the last pack(s)."""
    lengths = [300] * 37  # 7 packs; real batches of 2: 3 full batches + 1 short one that the sampler drops
    batches, _ = _multipack_batches(lengths, 2, 2048, drop_last=True)
    per_rank = _shard(batches, 2, 2, drop_last=True)
    assert len({i for rank in per_rank for batch in rank for pack in batch for i in pack}) < 37


def test_a_plan_smaller_than_the_ranks_is_refused_with_its_numbers():
    batches = [[[0, 1, 2]], [[3, 4]]]
    with pytest.raises(PlanTooSmallForRanks) as err:
        fill_for_ranks(batches, 1, 4)
    message = str(err.value)
    assert "2 micro-batches" in message and "4 ranks" in message and "Fix:" in message


def test_rows_trained_counts_distinct_planned_rows_and_the_copies():
    """What `trained.rows_*` and `complete` rest on. Unpacked, 10 rows, 4 a micro-batch, 2 ranks: accelerate's
    even_batches gives [8, 9, 0, 1] and [2, 3, 4, 5] as the last round (6 copies)."""
    batches = row_batches(10, 4, 2)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5]]
    assert rows_trained(batches, 2, 2) == {"rows_trained": 10, "rows_copied": 6}
    assert rows_trained(batches, 2, 1) == {"rows_trained": 8, "rows_copied": 0}  # stopped early: incomplete
    assert row_batches(10, 4, 1) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # one rank: nothing copied
    filled, copies = fill_for_ranks([[[0, 1], [2]], [[3, 4]]], 2, 2)  # 3 packs, 2 a batch, 2 ranks
    flat = [[row for pack in batch for row in pack] for batch in filled]
    assert rows_trained(flat, 2, 1) == {"rows_trained": 5, "rows_copied": copies.rows} and copies.packs == 1


def test_the_shipped_multigpu_example_trains_its_plan_at_any_world_size():
    """example_configs/deepspeed_zero2_multigpu.yml: micro_batch_size 4, sequence_len 2048, packed in the varlen
    geometry (one 4 x 2048-token bin a micro-batch) and in real batches of 4 packs. Its plan's row lengths are
    not on this machine (a 1.7B model's tokenizer and Alpaca); the test uses the plan's size from the report of
    the same recipe on the demo data (10 task rows, auto repeats, ratio 3: ~3-4 bins of 8,192 tokens) as rows of
    the demo's median length, and the smallest plan the example can make (1 bin)."""
    for rows, length in ((230, 110), (120, 60), (60, 110)):
        for batch_size, max_len in ((1, 4 * 2048), (4, 2048)):
            batches, _ = _multipack_batches([length] * rows, batch_size, max_len)
            for world in range(1, 9):
                try:
                    filled, copied = fill_for_ranks(batches, batch_size, world)
                except PlanTooSmallForRanks:
                    assert -(-sum(len(b) for b in batches) // batch_size) < world
                    continue
                per_rank = _shard(filled, batch_size, world, drop_last=False)
                assert {i for r in per_rank for b in r for p in b for i in p} == set(range(rows)), (rows, world)


# -- real runs on 2 gloo ranks ------------------------------------------------------------------------------


def _launch(cfg_path: Path, record: Path, world: int = 2, timeout: int = 420) -> subprocess.CompletedProcess:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "ACCELERATE_USE_CPU": "true",
           "OMP_NUM_THREADS": "1", "AXOLOTL_TELL_RECORD_ORDER": str(record)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port",
           str(port), str(LAUNCHER), str(cfg_path)]
    return subprocess.run(cmd, cwd=cfg_path.parent, env=env, capture_output=True, text=True, timeout=timeout)


def _trained_and_planned(record: Path, report: dict) -> tuple[Counter, Counter]:
    from datasets import load_from_disk

    from axolotl_tell.rows import SOURCE_COLUMN
    from axolotl_tell.source_metrics import row_key

    trained = Counter()
    for path in record.parent.glob(record.name + ".rank*"):
        for line in path.read_text().splitlines():
            batch = json.loads(line)
            if batch["split"] == "train":
                trained.update(tuple(row) for row in batch["rows"])
    planned = Counter((r[SOURCE_COLUMN], row_key(r["input_ids"])) for r in
                      load_from_disk(report["prepared_path"] + "/train"))
    return trained, planned


@pytest.mark.e2e
@pytest.mark.parametrize("real_batches", [True, False], ids=["real_batches", "varlen"])
def test_two_packed_ranks_train_every_planned_row(tiny_model, tmp_path, real_batches):
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, task="chat_template", sample_packing=True,
                                   sequence_len=2048, micro_batch_size=2, multipack_real_batches=real_batches,
                                   tell_general_ratio=3)
    record = tmp_path / "order.jsonl"
    proc = _launch(cfg_path, record)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    report = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())
    trained, planned = _trained_and_planned(record, report)
    assert not planned - trained, f"{sum((planned - trained).values())} of {sum(planned.values())} planned rows " \
                                  "never trained"
    section = report["trained"]
    copies = sum((trained - planned).values())
    assert section["rows_planned"] == sum(planned.values()) and section["rows_trained"] == sum(planned.values())
    assert section["rows_copied"] == copies and section["complete"] is True


@pytest.mark.e2e
def test_a_packed_plan_of_fewer_micro_batches_than_ranks_is_refused(tiny_model, tmp_path):
    # 10 general rows, 4 task rows once: one 4,096-token bin, two ranks
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, task="chat_template", general_rows=10, task_rows=4,
                                   sample_packing=True, sequence_len=2048, micro_batch_size=2,
                                   multipack_real_batches=False, tell_general_ratio=1, tell_task_repeats=1)
    proc = _launch(cfg_path, tmp_path / "order.jsonl", timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "fewer than the 2 ranks" in log and "Fix:" in log, log[-3000:]
