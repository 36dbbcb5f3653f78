"""Per-source loss: ``tell/task_loss`` and ``tell/general_loss``, token-weighted, across ranks.

Three small pieces, attached to whatever trainer and collator Axolotl built (so
packing, DeepSpeed and FSDP paths stay Axolotl's own):

* :class:`SourceIdsCollator` wraps the collator: it removes each row's
  ``tell_source`` before Axolotl's collator runs and returns ``tell_source_ids``,
  one source id per token, aligned with ``labels`` (packed rows too; padding -1).
* :class:`SourceLossMeter` adds up, per source kind, the summed token loss and
  the supervised token count of each micro-batch. Where the model uses
  transformers' default causal-LM loss, :class:`SourceAwareCausalLMLoss` takes its
  place and computes the per-token CE once, for both the training loss and the
  sums; otherwise the meter scores the logits the model returned (supervised
  positions only; no extra forward pass).
* :func:`attach` wraps ``compute_loss`` and ``log``: at every logging step the
  sums are all-reduced (sums, not means of means) and added to the logs, so every
  logger Axolotl supports (stdout, tensorboard, wandb, mlflow) gets them.

Test-only debug hook: with ``AXOLOTL_TELL_RECORD_ORDER=PATH`` in the environment,
the collator appends one JSON line per batch it collates to ``PATH`` (``PATH.rank<R>``
when ``WORLD_SIZE > 1``): ``{"split": "train"|"eval", "rows": [[tell_source,
row_key], ...]}``, rows in batch order (packed rows flattened), ``row_key`` =
:func:`row_key` of the row's ``input_ids``. The resume test uses it to compare
what two runs trained on. Off (no cost) when the variable is unset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os

import numpy as np
import torch

from axolotl_tell import compat, ranks
from axolotl_tell.weight_warmup import task_weight_at, warmup_steps

SOURCE_IDS = "tell_source_ids"
KINDS = ("task", "general")
RECORD_ORDER_ENV = "AXOLOTL_TELL_RECORD_ORDER"
LOG = logging.getLogger("axolotl.tell")


def row_key(input_ids) -> str:
    """A short content hash of one row's ``input_ids`` (its identity in recorded orders)."""
    return hashlib.sha1(np.asarray(input_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def _record(split: str, rows: list) -> None:
    path = os.environ.get(RECORD_ORDER_ENV)
    if not path:
        return
    if ranks.world_size() > 1:
        path = f"{path}.rank{ranks.rank()}"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"split": split, "rows": rows}) + "\n")


def _source_of(feature: dict, column: str) -> int:
    value = feature.pop(column)
    return int(value[0] if isinstance(value, (list, tuple, np.ndarray)) else value)


class SourceIdsCollator:
    """Wrap an Axolotl collator; turn each row's ``tell_source`` into per-token ``tell_source_ids``."""

    def __init__(self, inner, column: str = "tell_source", split: str = "train"):
        self.inner = inner
        self.column = column
        self.split = split  # for the record-order debug hook only

    def __getattr__(self, name):  # behave like the wrapped collator for everything else
        if name == "inner":  # unpickled (spawn/forkserver workers): `inner` not set yet, no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, features, return_tensors=None):
        packed = bool(features) and isinstance(features[0], list)
        groups = features if packed else [[f] for f in features]
        if not groups or self.column not in groups[0][0]:
            return self.inner(features) if return_tensors is None else self.inner(features, return_tensors)
        per_row, recorded = [], []
        recording = bool(os.environ.get(RECORD_ORDER_ENV))
        for group in groups:
            ids = []
            for feature in group:  # the dataloader builds fresh dicts per batch: popping is safe
                source = _source_of(feature, self.column)
                ids.extend([source] * len(feature["input_ids"]))
                if recording:
                    recorded.append([source, row_key(feature["input_ids"])])
            per_row.append(ids)
        if recording:
            _record(self.split, recorded)
        batch = self.inner(features) if return_tensors is None else self.inner(features, return_tensors)
        labels = batch["labels"]
        if labels.shape[0] == 1 and len(per_row) > 1:  # batch_flattening: every example in one [1, T] row
            per_row = [[source for ids in per_row for source in ids]]
        out = torch.full(labels.shape, -1, dtype=torch.long)
        for row, ids in enumerate(per_row):
            n = min(len(ids), labels.shape[1])
            if getattr(self.inner, "tokenizer", None) is not None and self.inner.tokenizer.padding_side == "left":
                out[row, labels.shape[1] - n:] = torch.tensor(ids[:n])
            else:
                out[row, :n] = torch.tensor(ids[:n])
        batch[SOURCE_IDS] = out
        return batch


class SourceLossMeter:
    """Summed token loss and supervised token counts per source kind, for train and eval.

    ``sums[split]`` is reset at each logging step; ``trained`` keeps the whole run's train sums (for the
    report's record of what was actually trained).
    """

    # Logits rows scored at once by the fallback: bounds its float32 copy (rows x vocab x 4 bytes: 256 rows of a
    # 128k vocabulary are 128 MiB), so a run that fits thanks to chunked or Liger cross-entropy still fits.
    SCORE_CHUNK_ROWS = 256

    def __init__(self, source_kinds: dict[int, str]):
        size = max(source_kinds) + 1 if source_kinds else 1
        kind_of = torch.full((size,), -1, dtype=torch.long)
        for source, kind in source_kinds.items():
            kind_of[source] = KINDS.index(kind)
        self.kind_of = kind_of
        self.sums = {"train": torch.zeros(4, dtype=torch.float64), "eval": torch.zeros(4, dtype=torch.float64)}
        self.trained = torch.zeros(4, dtype=torch.float64)
        self.measured = {"train": False, "eval": False}  # a fused loss returns no logits: nothing to report

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, source_ids: torch.Tensor, split: str) -> None:
        """Add one micro-batch: causal shift, supervised positions only, per-token CE in float32.

        Only the logits rows of supervised positions are read, ``SCORE_CHUNK_ROWS`` at a time (no shifted copy
        of the whole tensor, no float32 copy of it either), and CE is logsumexp - target logit.
        """
        shift_labels = labels[:, 1:]
        rows_b, rows_p = (shift_labels != -100).nonzero(as_tuple=True)
        if rows_b.numel() == 0:
            self.measured[split] = True
            return
        batch, length, vocab = logits.shape
        flat = logits.reshape(-1, vocab)
        positions = rows_b * length + rows_p
        targets = shift_labels[rows_b, rows_p]
        token_loss = torch.empty(positions.numel(), dtype=torch.float32, device=logits.device)
        for start in range(0, positions.numel(), self.SCORE_CHUNK_ROWS):
            part = slice(start, start + self.SCORE_CHUNK_ROWS)
            rows = flat.index_select(0, positions[part]).float()
            token_loss[part] = torch.logsumexp(rows, dim=-1) - rows.gather(1, targets[part, None]).squeeze(1)
        sources = source_ids.to(labels.device)[:, 1:][rows_b, rows_p]
        self.add_token_losses(token_loss, targets, sources, split)

    @torch.no_grad()
    def add_token_losses(self, token_loss: torch.Tensor, shift_labels: torch.Tensor, shift_sources: torch.Tensor,
                         split: str) -> None:
        """Add per-token losses already computed for the training loss (flat, aligned with shifted labels).

        Masks and scatter-adds only: no boolean indexing, so no device-to-host sync per micro-batch.
        """
        device = token_loss.device
        kind_of = self.kind_of.to(device)
        sources = shift_sources.to(device).long()
        valid = (shift_labels.to(device) != -100) & (sources >= 0)
        kinds = torch.where(valid, kind_of[sources.clamp(min=0)], -1)
        valid = valid & (kinds >= 0)
        slot = torch.where(valid, kinds, len(KINDS))  # invalid tokens go to a discarded extra slot
        losses = torch.zeros(len(KINDS) + 1, dtype=torch.float64, device=device)
        losses.scatter_add_(0, slot, torch.where(valid, token_loss.double(), 0.0))
        counts = torch.bincount(slot, minlength=len(KINDS) + 1).double()
        sums = torch.stack([losses[:-1], counts[:-1]], dim=1).reshape(-1)  # task loss, task n, general loss, ...
        self._accumulate(split, sums)

    def token_weights(self, sources: torch.Tensor, task_weight: float) -> torch.Tensor:
        """``task_weight`` where a token comes from a task source, 1 elsewhere (general, padding, unknown)."""
        kind_of = self.kind_of.to(sources.device)
        sources = sources.long()
        kinds = torch.where(sources >= 0, kind_of[sources.clamp(min=0, max=kind_of.numel() - 1)], -1)
        is_task = (kinds == KINDS.index("task")) & (sources < kind_of.numel())
        return torch.where(is_task, task_weight, 1.0).float()

    def share_weights(self, sources: torch.Tensor, supervised: torch.Tensor, task_share: float) -> torch.Tensor:
        """Per-token weights that give task tokens ``task_share`` of the micro-batch's loss and general tokens the
        rest, each source averaged over its own supervised tokens; all 1 where one source is missing.

        With ``N`` supervised task + general tokens, ``n_task`` of them task: task tokens weigh ``share * N /
        n_task``, general ones ``(1 - share) * N / n_general``, so the weighted sum over ``N`` is
        ``share * mean(task) + (1 - share) * mean(general)``. No host sync: the counts stay on the device.
        """
        kind_of = self.kind_of.to(sources.device)
        sources = sources.long()
        known = (sources >= 0) & (sources < kind_of.numel()) & supervised
        kinds = torch.where(known, kind_of[sources.clamp(min=0, max=kind_of.numel() - 1)], -1)
        is_task, is_general = kinds == KINDS.index("task"), kinds == KINDS.index("general")
        n_task, n_general = is_task.sum().float(), is_general.sum().float()
        both = (n_task > 0) & (n_general > 0)
        total = n_task + n_general
        task_w = torch.where(both, task_share * total / n_task.clamp(min=1), 1.0)
        general_w = torch.where(both, (1 - task_share) * total / n_general.clamp(min=1), 1.0)
        return torch.where(is_task, task_w, torch.where(is_general, general_w, 1.0)).float()

    def _accumulate(self, split: str, sums: torch.Tensor) -> None:
        # stays on the device: no host sync per micro-batch, only at logging time
        if self.sums[split].device != sums.device:
            self.sums[split] = self.sums[split].to(sums.device)
        self.sums[split] += sums
        self.measured[split] = True
        if split == "train":
            if self.trained.device != sums.device:
                self.trained = self.trained.to(sums.device)
            self.trained += sums

    def pop(self, split: str, replicas: int = 1) -> dict[str, float]:
        """Metrics since the last call, summed over ranks; resets the split's sums.

        ``replicas``: ranks that see the same tokens (tensor parallel): their copies are not counted twice.
        Every rank must call this (one all-reduce). Returns {} if nothing was measured (fused loss kernels).
        """
        flag = torch.ones(1, dtype=torch.float64) if self.measured[split] else torch.zeros(1, dtype=torch.float64)
        both = _all_reduce_sum(torch.cat([self.sums[split].cpu(), flag]))
        self.sums[split].zero_()
        if not both[-1] > 0:
            return {}
        sums = both[:-1] / max(replicas, 1)
        out = {}
        for k, kind in enumerate(KINDS):
            loss_sum, count = float(sums[2 * k]), int(round(float(sums[2 * k + 1])))
            out[f"tell/{kind}_tokens"] = count
            if count:
                out[f"tell/{kind}_loss"] = loss_sum / count
        return out

    def trained_tokens(self, replicas: int = 1) -> dict[str, int]:
        """Supervised tokens trained over the whole run, per source kind, summed over ranks (all ranks call)."""
        sums = _all_reduce_sum(self.trained.clone()) / max(replicas, 1)
        return {kind: int(round(float(sums[2 * k + 1]))) for k, kind in enumerate(KINDS)}


UNWEIGHTED_LOSS = "tell/unweighted_loss"
TASK_LOSS_WEIGHT = "tell/task_loss_weight"  # logged during a warm-up of the weight


def unweighted_loss(measured: dict) -> float | None:
    """The stock (unweighted) loss pooled over every supervised token since the last log, from :meth:`pop`'s
    per-source means and counts: ``sum(n_kind * loss_kind) / sum(n_kind)``."""
    total = sum(measured.get(f"tell/{kind}_tokens", 0) for kind in KINDS)
    if not total:
        return None
    return sum(measured.get(f"tell/{kind}_tokens", 0) * measured.get(f"tell/{kind}_loss", 0.0)
               for kind in KINDS) / total


class TellTrainingError(RuntimeError):
    """The trainer Axolotl built cannot do what the TELL config asks."""


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _reduce_device():
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"


def _all_reduce_sum(sums: torch.Tensor) -> torch.Tensor:
    if _distributed():
        sums = sums.to(_reduce_device())
        torch.distributed.all_reduce(sums, op=torch.distributed.ReduceOp.SUM)
    return sums.cpu()


@dataclasses.dataclass
class SourcesHandoff:
    """One micro-batch's source ids on their way from ``compute_loss`` to the model's loss function."""

    source_ids: torch.Tensor
    split: str
    consumed: bool = False


class SourceAwareCausalLMLoss:
    """transformers' ``ForCausalLMLoss``, computed once per token so the per-source sums come for free.

    Same result as the default (shift, float32 CE, ignore -100, sum / ``num_items_in_batch`` or mean), but
    with ``reduction="none"`` first: the training loss is the sum of those per-token losses, and the meter
    reads them (detached).

    The model's forward calls this loss with logits and labels only: the micro-batch's source ids reach it through
    :meth:`batch_sources` (a hand-off the ``compute_loss`` wrapper opens around the forward), and the hand-off says
    afterwards whether this loss consumed them (else the wrapper scores the returned logits itself).

    ``task_weight`` (``tell_task_loss_weight``): in training, each task token's loss is multiplied by it before
    the sum; the denominator stays the supervised token count, so 1 is exactly the stock loss. In a TELL mix
    the task's tokens are ~1/(1 + ratio) of the loss; the weight raises their share without changing the data.
    ``task_share`` (``tell_task_loss_share``, instead of a weight): the task's share of each micro-batch's loss
    is fixed, whatever the lengths of the general rows in it (:meth:`SourceLossMeter.share_weights`).
    ``weight_schedule`` (``tell_task_loss_weight_warmup_ratio``): optimizer step -> the task weight at that step;
    :meth:`at_step` sets it before each training forward.
    """

    def __init__(self, meter: SourceLossMeter, default, task_weight: float = 1.0, task_share: float | None = None,
                 weight_schedule=None):
        self.meter, self.default, self.task_weight = meter, default, float(task_weight)
        self.task_share = None if task_share is None else float(task_share)
        self.weight_schedule, self.full_weight = weight_schedule, self.task_weight  # what a warm-up reaches
        self.pending: SourcesHandoff | None = None  # set only inside `batch_sources`

    @contextlib.contextmanager
    def batch_sources(self, source_ids: torch.Tensor, split: str):
        """Hand the next forward's loss this micro-batch's source ids; yields the hand-off (``.consumed``)."""
        if self.pending is not None:  # a hand-off never closed: two forwards interleaved, the sums would mix
            raise RuntimeError("[axolotl_tell] internal: a micro-batch's source ids were handed over twice")
        handoff = SourcesHandoff(source_ids, split)
        self.pending = handoff
        try:
            yield handoff
        finally:
            self.pending = None

    @property
    def reweights(self) -> bool:
        """Whether the training loss differs from the stock one (a weight, a warming-up weight or a share)."""
        return self.task_weight != 1.0 or self.task_share is not None or self.weight_schedule is not None

    def at_step(self, step: int) -> None:
        """Set the task weight of optimizer step ``step`` (a warm-up; a constant weight stays as it is)."""
        if self.weight_schedule is not None:
            self.task_weight = float(self.weight_schedule(step))

    def describe(self) -> str:
        return _reweighting(self.full_weight, self.task_share)

    def __call__(self, logits, labels, vocab_size: int, num_items_in_batch=None, ignore_index: int = -100,
                 shift_labels=None, **kwargs):
        handoff = self.pending
        if handoff is None or handoff.consumed or shift_labels is not None or ignore_index != -100:
            # not measured here: the caller scores the returned logits
            return self.default(logits, labels, vocab_size, num_items_in_batch=num_items_in_batch,
                                ignore_index=ignore_index, shift_labels=shift_labels, **kwargs)
        handoff.consumed = True
        source_ids, split = handoff.source_ids, handoff.split
        logits = logits.float()
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:].reshape(-1)
        shift_labels = shift_labels.to(logits.device)
        token_loss = torch.nn.functional.cross_entropy(logits.view(-1, vocab_size), shift_labels,
                                                       ignore_index=ignore_index, reduction="none")
        shift_sources = torch.nn.functional.pad(source_ids.to(logits.device), (0, 1), value=-1)[..., 1:].reshape(-1)
        self.meter.add_token_losses(token_loss.detach(), shift_labels, shift_sources, split)
        if split == "train" and self.task_share is not None:
            token_loss = token_loss * self.meter.share_weights(shift_sources, shift_labels != ignore_index,
                                                               self.task_share)
        elif split == "train" and self.task_weight != 1.0:
            token_loss = token_loss * self.meter.token_weights(shift_sources, self.task_weight)
        if num_items_in_batch is not None:
            if torch.is_tensor(num_items_in_batch):
                num_items_in_batch = num_items_in_batch.to(token_loss.device)
            return token_loss.sum() / num_items_in_batch
        return token_loss.sum() / (shift_labels != ignore_index).sum()


def _reweighting(task_weight: float, task_share: float | None) -> str:
    """The key and value that reweight the training loss, as the user wrote them (for error messages)."""
    return (f"tell_task_loss_share: {task_share:g}" if task_share is not None
            else f"tell_task_loss_weight: {task_weight:g}")


def is_stock_causal_lm_loss(fn) -> bool:
    """transformers' own ``ForCausalLMLoss``, not a replacement patched in under the same name.

    Axolotl's ``chunked_cross_entropy`` rebinds ``transformers.loss.loss_utils.ForCausalLMLoss`` itself, so an
    identity check against that name would take the chunked loss for the stock one.
    """
    return (getattr(fn, "__module__", None) == "transformers.loss.loss_utils"
            and getattr(fn, "__name__", None) == "ForCausalLMLoss")


def install_source_loss(model, meter: SourceLossMeter, task_weight: float = 1.0,
                        task_share: float | None = None, weight_schedule=None) -> SourceAwareCausalLMLoss | None:
    """Put :class:`SourceAwareCausalLMLoss` on the transformers model inside ``model`` (PEFT/DeepSpeed unwrapped).

    Only where the model uses transformers' stock causal-LM loss; otherwise None (the caller falls back
    to scoring the returned logits).
    """
    inner = model
    for _ in range(4):  # DeepSpeed/DDP `.module`, PEFT `.get_base_model()`
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        elif hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
            inner = inner.module
        else:
            break
    stock = getattr(inner, "loss_function", None)
    if not is_stock_causal_lm_loss(stock):
        return None
    loss = SourceAwareCausalLMLoss(meter, stock, task_weight, task_share, weight_schedule)
    inner.loss_function = loss
    return loss


class _EvalGeometry:
    """What :func:`compat.even_batches_refilled_rows` needs about the unpacked eval loader on several ranks, and a
    batch counter."""

    def __init__(self, n_rows: int, world: int, rank: int, batch_size: int):
        self.n_rows, self.world, self.rank, self.batch_size = n_rows, world, rank, batch_size
        self.batch = 0

    def mask_refills(self, source_ids: torch.Tensor) -> torch.Tensor:
        copies = compat.even_batches_refilled_rows(self.batch, source_ids.shape[0], self.n_rows, self.world,
                                                   self.rank, self.batch_size)
        self.batch += 1
        if copies:
            source_ids = source_ids.clone()
            source_ids[copies] = -1
        return source_ids


def _eval_geometry(trainer) -> _EvalGeometry | None:
    """Unpacked eval on several ranks (the only case with refilled copies), else None."""
    args = trainer.args
    world = int(getattr(args, "world_size", 1) or 1)
    packed_eval = getattr(args, "sample_packing", False) and getattr(args, "eval_sample_packing", None) is not False
    dataset = getattr(trainer, "eval_dataset", None)
    if world <= 1 or packed_eval or dataset is None or isinstance(dataset, dict):
        return None
    if getattr(args, "dataloader_persistent_workers", False):
        return None  # the loader is built once and cached: the flag set per evaluation would not reach it
    # the trainer's own index: accelerate deals eval batches by it (data-parallel ranks; see ranks.py)
    return _EvalGeometry(len(dataset), world, int(args.process_index), int(args.per_device_eval_batch_size))


def attach(trainer, meter: SourceLossMeter, *, keep_model_loss: bool = False, replicas: int = 1,
           task_loss_weight: float = 1.0, task_loss_share: float | None = None,
           task_loss_weight_warmup: float | None = None) -> None:
    """Wrap the trainer's collators, ``compute_loss``, ``evaluate`` and ``log`` (instance-level; any trainer class).

    ``keep_model_loss``: the user chose a memory-saving loss (chunked / Liger / cut cross-entropy): leave it in
    place and score the returned logits in bounded chunks. ``replicas``: ranks that see the same tokens.
    ``task_loss_weight``, ``task_loss_share``: see :class:`SourceAwareCausalLMLoss`; they need the stock loss (else
    an error here). ``task_loss_weight_warmup``: the fraction of the run's steps (``trainer.state.max_steps``, known
    once training starts) over which the weight rises from 1 to ``task_loss_weight`` (:mod:`weight_warmup`).
    """
    trainer.data_collator = SourceIdsCollator(trainer.data_collator)
    if getattr(trainer, "eval_data_collator", None) is not None:
        trainer.eval_data_collator = SourceIdsCollator(trainer.eval_data_collator, split="eval")
    compute_loss, log, evaluate = trainer.compute_loss, trainer.log, trainer.evaluate
    reweighted = task_loss_weight != 1.0 or task_loss_share is not None
    warned = []
    schedule = None
    if task_loss_weight_warmup is not None and task_loss_share is None and task_loss_weight != 1.0:
        def schedule(step):  # max_steps is known once training starts, not here
            warmup = warmup_steps(trainer.state.max_steps, task_loss_weight_warmup)
            return task_weight_at(step, task_loss_weight, warmup)
    source_loss = None if keep_model_loss else install_source_loss(trainer.model, meter, task_loss_weight,
                                                                   task_loss_share, schedule)
    if source_loss is None and (task_loss_weight != 1.0 or task_loss_share is not None):
        raise TellTrainingError(
            f"[axolotl_tell] {_reweighting(task_loss_weight, task_loss_share)} needs transformers' stock causal-LM "
            "loss, but this model computes its own (a fused or custom loss). Fix: set `tell_task_loss_weight: 1` "
            "(and no `tell_task_loss_share`), or remove the key that replaces the loss")
    LOG.info("[axolotl_tell] per-source loss: %s", "from the training loss's per-token cross-entropy"
             if source_loss is not None else "from the returned logits, scored in chunks (the model keeps its own "
             "loss function)")
    geometry = _eval_geometry(trainer)
    even_eval = geometry is not None  # unpacked eval on several ranks, the loader rebuilt per evaluation
    if replicas > 1:  # tensor parallel: accelerate shards over data-parallel ranks only; copies are not masked
        geometry = None

    def compute_loss_with_sources(model, inputs, return_outputs=False, **kwargs):
        source_ids = inputs.pop(SOURCE_IDS, None)
        if source_ids is None:
            return compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        split = "train" if model.training else "eval"
        if split == "eval" and geometry is not None:
            source_ids = geometry.mask_refills(source_ids)
        labels = inputs.get("labels")  # a compute_loss_func or label smoothing pops them from `inputs`
        if source_loss is None:
            loss, outputs = compute_loss(model, inputs, return_outputs=True, **kwargs)
        else:
            if split == "train" and schedule is not None:
                source_loss.at_step(trainer.state.global_step)  # one weight for the whole step's micro-batches
            with source_loss.batch_sources(source_ids, split) as handoff:
                loss, outputs = compute_loss(model, inputs, return_outputs=True, **kwargs)
            if handoff.consumed:  # the forward's loss did the counting (and the weighting)
                return (loss, outputs) if return_outputs else loss
            if split == "train" and source_loss.reweights:
                # labels were taken away before the forward (a compute_loss_func such as Axolotl's EAFT): the
                # loss was computed elsewhere, without the weight; never train on as if it had been applied
                raise TellTrainingError(
                    f"[axolotl_tell] {source_loss.describe()} was not applied: the training loss was computed "
                    "outside the model (a `compute_loss_func`, e.g. `use_eaft`). Fix: set `tell_task_loss_weight: 1` "
                    "(and no `tell_task_loss_share`), or remove what replaces the loss")
        logits = getattr(outputs, "logits", None) if not isinstance(outputs, dict) else outputs.get("logits")
        if logits is None or logits.dim() != 3 or labels is None:
            if not warned:
                LOG.warning("[axolotl_tell] the model returned no logits (fused loss kernel?): tell/* per-source "
                            "metrics are not logged")
                warned.append(True)
        else:
            meter.update(logits.detach(), labels, source_ids, split)
        return (loss, outputs) if return_outputs else loss

    def evaluate_even(*args, **kwargs):
        # Packed training leaves accelerate's even_batches off; unpacked eval needs it, or ranks get different
        # numbers of eval batches and the evaluation loop's per-step gathers hang. Its copies are masked above.
        accelerator = getattr(trainer, "accelerator", None)
        previous = getattr(accelerator, "even_batches", None)
        if geometry is not None:
            geometry.batch = 0
        if even_eval:
            accelerator.even_batches = True
        try:
            return evaluate(*args, **kwargs)
        finally:
            if even_eval:
                accelerator.even_batches = previous

    def log_with_sources(logs, *args, **kwargs):
        # Only the trainer's own loss logs, which every rank reaches: other logs (bench eval, causal-LM
        # metrics) come from rank 0 alone, where an all-reduce would wait for the others forever.
        split = "eval" if "eval_loss" in logs else "train" if "loss" in logs else None
        if split is not None:
            prefix = "eval_" if split == "eval" else ""
            measured = meter.pop(split, replicas)
            logs.update({prefix + key: value for key, value in measured.items()})
            if split == "train" and reweighted:
                # `loss` is the weighted training objective (what the optimizer, max_grad_norm and Axolotl's
                # loss watchdog see); this is the stock loss over the same tokens, to compare with unweighted runs
                unweighted = unweighted_loss(measured)
                if unweighted is not None:
                    logs[UNWEIGHTED_LOSS] = unweighted
                if schedule is not None and source_loss is not None:
                    logs[TASK_LOSS_WEIGHT] = source_loss.task_weight  # the last step's, during the warm-up
        return log(logs, *args, **kwargs)

    trainer.compute_loss = compute_loss_with_sources
    trainer.evaluate = evaluate_even
    trainer.log = log_with_sources
