"""Which process this is, and the one collective the plugin itself starts (gathering Python objects).

The launcher's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``) is read, not the trainer's state: the plugin's
dataset hooks run before any trainer exists, and the answer must be the same in every hook. (One exception, by
design: the per-source eval loss masks accelerate's refilled eval rows by the trainer's ``args.process_index``, the
index accelerate deals batches by.)
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Global rank 0: the one writer of shared files and of the log's tables."""
    return rank() == 0


def is_local_main_process() -> bool:
    """Rank 0 of each node: node-local output folders get their own files too."""
    return local_rank() == 0


def distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process).

    Every rank must call it, the same number of times: a rank that skips it leaves the others waiting.
    """
    if not distributed():
        return [obj]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
