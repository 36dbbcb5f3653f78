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

import hashlib
import json
import logging
import os

import numpy as np
import torch

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
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        path = f"{path}.rank{os.environ.get('RANK', '0')}"
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
    """Summed token loss and supervised token counts per source kind, for train and eval."""

    def __init__(self, source_kinds: dict[int, str]):
        size = max(source_kinds) + 1 if source_kinds else 1
        kind_of = torch.full((size,), -1, dtype=torch.long)
        for source, kind in source_kinds.items():
            kind_of[source] = KINDS.index(kind)
        self.kind_of = kind_of
        self.sums = {"train": torch.zeros(4, dtype=torch.float64), "eval": torch.zeros(4, dtype=torch.float64)}

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, source_ids: torch.Tensor, split: str) -> None:
        """Add one micro-batch: causal shift, supervised positions only, per-token CE in float32.

        Only the logits rows of supervised positions are read (gathered from the contiguous logits, no
        shifted copy of the whole tensor), and CE is logsumexp - target logit (no log_softmax tensor).
        """
        shift_labels = labels[:, 1:]
        rows_b, rows_p = (shift_labels != -100).nonzero(as_tuple=True)
        if rows_b.numel() == 0:
            return
        batch, length, vocab = logits.shape
        rows = logits.reshape(-1, vocab).index_select(0, rows_b * length + rows_p).float()
        targets = shift_labels[rows_b, rows_p]
        token_loss = torch.logsumexp(rows, dim=-1) - rows.gather(1, targets[:, None]).squeeze(1)
        sources = source_ids.to(labels.device)[:, 1:][rows_b, rows_p]
        self.add_token_losses(token_loss, targets, sources, split)

    @torch.no_grad()
    def add_token_losses(self, token_loss: torch.Tensor, shift_labels: torch.Tensor, shift_sources: torch.Tensor,
                         split: str) -> None:
        """Add per-token losses already computed for the training loss (flat, aligned with shifted labels)."""
        keep = (shift_labels != -100) & (shift_sources >= 0)
        kinds = self.kind_of.to(token_loss.device)[shift_sources[keep]]
        losses = token_loss[keep]
        sums = torch.zeros(4, dtype=torch.float64, device=token_loss.device)
        for k in range(len(KINDS)):
            mask = kinds == k
            sums[2 * k] = losses[mask].double().sum()
            sums[2 * k + 1] = mask.sum()
        self._accumulate(split, sums)

    def _accumulate(self, split: str, sums: torch.Tensor) -> None:
        # stays on the device: no host sync per micro-batch, only at logging time
        if self.sums[split].device != sums.device:
            self.sums[split] = self.sums[split].to(sums.device)
        self.sums[split] += sums

    def pop(self, split: str) -> dict[str, float]:
        """Metrics since the last call, summed over ranks; resets the split's sums."""
        sums = self.sums[split].clone()
        self.sums[split].zero_()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
            sums = sums.to(device)
            torch.distributed.all_reduce(sums, op=torch.distributed.ReduceOp.SUM)
        sums = sums.cpu()
        out = {}
        for k, kind in enumerate(KINDS):
            loss_sum, count = float(sums[2 * k]), int(sums[2 * k + 1])
            out[f"tell/{kind}_tokens"] = count
            if count:
                out[f"tell/{kind}_loss"] = loss_sum / count
        return out


class SourceAwareCausalLMLoss:
    """transformers' ``ForCausalLMLoss``, computed once per token so the per-source sums come for free.

    Same result as the default (shift, float32 CE, ignore -100, sum / ``num_items_in_batch`` or mean), but
    with ``reduction="none"`` first: the training loss is the sum of those per-token losses, and the meter
    reads them (detached). ``pending`` holds the micro-batch's source ids until the forward consumes them.
    """

    def __init__(self, meter: SourceLossMeter, default):
        self.meter, self.default = meter, default
        self.pending: tuple[torch.Tensor, str] | None = None

    def __call__(self, logits, labels, vocab_size: int, num_items_in_batch=None, ignore_index: int = -100,
                 shift_labels=None, **kwargs):
        pending, self.pending = self.pending, None
        if pending is None or shift_labels is not None or ignore_index != -100:
            return self.default(logits, labels, vocab_size, num_items_in_batch=num_items_in_batch,
                                ignore_index=ignore_index, shift_labels=shift_labels, **kwargs)
        source_ids, split = pending
        logits = logits.float()
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:].reshape(-1)
        shift_labels = shift_labels.to(logits.device)
        token_loss = torch.nn.functional.cross_entropy(logits.view(-1, vocab_size), shift_labels,
                                                       ignore_index=ignore_index, reduction="none")
        shift_sources = torch.nn.functional.pad(source_ids.to(logits.device), (0, 1), value=-1)[..., 1:].reshape(-1)
        self.meter.add_token_losses(token_loss.detach(), shift_labels, shift_sources, split)
        if num_items_in_batch is not None:
            if torch.is_tensor(num_items_in_batch):
                num_items_in_batch = num_items_in_batch.to(token_loss.device)
            return token_loss.sum() / num_items_in_batch
        return token_loss.sum() / (shift_labels != ignore_index).sum()


def install_source_loss(model, meter: SourceLossMeter) -> SourceAwareCausalLMLoss | None:
    """Put :class:`SourceAwareCausalLMLoss` on the transformers model inside ``model`` (PEFT/DeepSpeed unwrapped).

    Only where the model uses transformers' default causal-LM loss; otherwise None (the caller falls back
    to scoring the returned logits).
    """
    try:
        from transformers.loss.loss_utils import ForCausalLMLoss
    except ImportError:  # pragma: no cover - older transformers
        return None
    inner = model
    for _ in range(4):  # DeepSpeed/DDP `.module`, PEFT `.get_base_model()`
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        elif hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
            inner = inner.module
        else:
            break
    if getattr(inner, "loss_function", None) is not ForCausalLMLoss:
        return None
    loss = SourceAwareCausalLMLoss(meter, ForCausalLMLoss)
    inner.loss_function = loss
    return loss


def attach(trainer, meter: SourceLossMeter) -> None:
    """Wrap the trainer's collators, ``compute_loss`` and ``log`` (instance-level; any trainer class)."""
    trainer.data_collator = SourceIdsCollator(trainer.data_collator)
    if getattr(trainer, "eval_data_collator", None) is not None:
        trainer.eval_data_collator = SourceIdsCollator(trainer.eval_data_collator, split="eval")
    compute_loss, log = trainer.compute_loss, trainer.log
    warned = []
    source_loss = install_source_loss(trainer.model, meter)
    LOG.info("[axolotl_tell] per-source loss: %s", "from the training loss's per-token cross-entropy"
             if source_loss is not None else "from the returned logits (the model has its own loss function)")

    def compute_loss_with_sources(model, inputs, return_outputs=False, **kwargs):
        source_ids = inputs.pop(SOURCE_IDS, None)
        if source_ids is None:
            return compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        split = "train" if model.training else "eval"
        if source_loss is not None:
            source_loss.pending = (source_ids, split)
        loss, outputs = compute_loss(model, inputs, return_outputs=True, **kwargs)
        if source_loss is not None and source_loss.pending is None:  # the forward's loss did the counting
            return (loss, outputs) if return_outputs else loss
        if source_loss is not None:
            source_loss.pending = None
        logits = getattr(outputs, "logits", None) if not isinstance(outputs, dict) else outputs.get("logits")
        if logits is None or logits.dim() != 3:
            if not warned:
                LOG.warning("[axolotl_tell] the model returned no logits (fused loss kernel?): per-source loss is off")
                warned.append(True)
        else:
            meter.update(logits.detach(), inputs["labels"], source_ids, split)
        return (loss, outputs) if return_outputs else loss

    def log_with_sources(logs, *args, **kwargs):
        split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        logs.update({prefix + key: value for key, value in meter.pop(split).items()})
        return log(logs, *args, **kwargs)

    trainer.compute_loss = compute_loss_with_sources
    trainer.log = log_with_sources
