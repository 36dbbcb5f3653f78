"""Which planned rows each rank trains, and the fill that lets every rank train its share of the whole plan.

Pure logic (no Axolotl or torch imports): ``compat.fill_pack_batches_for_ranks`` hands in the multipack sampler's
batches; the trainer callbacks hand in how far training got.

On several ranks accelerate deals the packed micro-batches round-robin (micro-batch ``k * world + rank`` is
that rank's ``k``-th) and drops the last ``batches mod world`` of them; Axolotl's sampler already dropped a last
batch of fewer than ``micro_batch_size`` packs. A TELL plan is small and its task rows are spread through all of
it, so both cuts drop task rows. :func:`fill_for_ranks` completes the last batch and the last round with copies of
the plan's first packs (as accelerate's own ``even_batches`` does for unpacked rows): every planned row is trained
once, a few rows twice, and the report says how many.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Copies:
    """Packs (and the rows in them) added so that every rank gets the same number of full micro-batches."""

    packs: int = 0
    rows: int = 0


class PlanTooSmallForRanks(ValueError):
    """A packed plan with fewer micro-batches than ranks: some rank would train nothing but copies."""


def fill_for_ranks(batches: list[list[list[int]]], batch_size: int, world: int,
                   batch_tokens: int | None = None) -> tuple[list[list[list[int]]], Copies]:
    """``batches`` (each ``batch_size`` packs of row indices, the last one maybe short) filled up to a multiple of
    ``world`` full batches with copies of the first packs. One rank: returned as they are (a short last batch is
    trained as it is). Raises :class:`PlanTooSmallForRanks` when the plan fills fewer batches than ``world``."""
    if world <= 1:
        return batches, Copies()
    packs = [pack for batch in batches for pack in batch]
    needed = math.ceil(len(packs) / batch_size) if packs else 0
    if needed < world:
        size = f" of up to {batch_tokens:,} tokens" if batch_tokens else ""
        raise PlanTooSmallForRanks(
            f"[axolotl_tell] the packed plan fills {needed} micro-batch{'es' if needed != 1 else ''} ({len(packs)} "
            f"pack{'s' if len(packs) != 1 else ''}{size}, {batch_size} a micro-batch): fewer than the {world} "
            f"ranks, so {world - needed} rank(s) would train only copies of the others' rows. Fix: make the plan "
            "larger (raise `tell_general_ratio` or `tell_task_repeats`, or give more general rows), lower "
            f"`micro_batch_size`, train on at most {needed} rank(s), or set `sample_packing: false`.")
    total = math.ceil(needed / world) * world * batch_size
    extra = [packs[i % len(packs)] for i in range(total - len(packs))]
    every = packs + extra
    filled = [every[i:i + batch_size] for i in range(0, total, batch_size)]
    return filled, Copies(packs=len(extra), rows=sum(len(pack) for pack in extra))


def row_batches(rows: int, batch_size: int, world: int) -> list[list[int]]:
    """Unpacked rows in order, ``batch_size`` a micro-batch, the last round completed with the first rows again
    (accelerate's ``even_batches``, on for unpacked training): the rows of each global micro-batch."""
    order = list(range(rows))
    if world > 1 and rows:
        total = math.ceil(rows / (batch_size * world)) * batch_size * world
        order += [order[i % rows] for i in range(total - rows)]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def rows_trained(global_batches: list[list[int]], world: int, micro_batches_per_rank: int) -> dict:
    """What the first ``micro_batches_per_rank`` micro-batches of every rank covered: ``rows_trained`` distinct
    planned rows, ``rows_copied`` extra copies (rows trained a second time by the fill)."""
    reached = global_batches[:max(0, micro_batches_per_rank) * max(1, world)]
    seen = [row for batch in reached for row in batch]
    distinct = len(set(seen))
    return {"rows_trained": distinct, "rows_copied": len(seen) - distinct}
