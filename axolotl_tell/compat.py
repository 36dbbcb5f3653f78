"""Every Axolotl (and accelerate) internal the plugin touches, in one place.

Axolotl's data helpers are not a public API; they moved between 0.19 and
0.21. Importing them here keeps the rest of the package version-agnostic and
makes a future break show up in one file.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from datasets import Dataset, DatasetDict, IterableDatasetDict

SUPPORTED_AXOLOTL = ("0.19", "0.20", "0.21")

# Contracts with Axolotl's `train()` that the plugin's end of run relies on (checked against each supported version
# by tests/test_axolotl_contracts.py, one process and two ranks):
# * `post_train` is called twice: inside `execute_training` right after `trainer.train()` (before the final model
#   and tokenizer are saved), then after `save_trained_model` and the tokenizer save. The end-of-run work (record,
#   generation eval, plots, bake) waits for the second call, so it describes and scores what was saved.
POST_TRAIN_CALL_AFTER_SAVE = 2
# * by that second call Axolotl has destroyed the process group (`cleanup_distributed`): the end-of-run work runs
#   on each node's main process alone and must start no collective (a gather there raises or hangs).
PROCESS_GROUP_AT_END_OF_RUN = False


def axolotl_version() -> str:
    try:
        return version("axolotl")
    except PackageNotFoundError:  # pragma: no cover - the plugin needs axolotl
        return "missing"


def check_axolotl_version() -> None:
    found = axolotl_version()
    if not found.startswith(SUPPORTED_AXOLOTL):
        raise RuntimeError(
            f"[axolotl_tell] axolotl {found} is not supported (supported: {', '.join(SUPPORTED_AXOLOTL)}). "
            "Fix: `pip install 'axolotl>=0.19,<0.22'`, or remove `axolotl_tell.TellPlugin` from `plugins:`."
        )


def load_raw_dataset(ds_cfg, cfg, split: str = "train", streaming: bool = False):
    """A dataset entry's raw rows, as Axolotl loads them (split and shards applied); an IterableDataset if
    ``streaming``."""
    from axolotl.utils.data.shared import load_dataset_with_config

    dataset = load_dataset_with_config(ds_cfg, cfg.hf_use_auth_token, streaming=streaming)
    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        if ds_cfg.split and ds_cfg.split in dataset:
            dataset = dataset[ds_cfg.split]
        elif split in dataset:
            dataset = dataset[split]
        else:
            raise ValueError(
                f"[axolotl_tell] no `{split}` split in dataset {ds_cfg.path}. Fix: set `split:` on the entry."
            )
    if ds_cfg.shards and streaming:  # a stream has no random access: its shards as they come
        dataset = dataset.shard(num_shards=ds_cfg.shards, index=ds_cfg.get("shards_idx", 0))
    elif ds_cfg.shards:
        dataset = dataset.shuffle(seed=cfg.seed).shard(
            num_shards=ds_cfg.shards, index=ds_cfg.get("shards_idx", 0)
        )
    return dataset


def tokenize_with_axolotl(ds_cfg, cfg, tokenizer, dataset: Dataset, processor=None) -> Dataset:
    """Tokenize raw rows with Axolotl's own prompt strategy for ``ds_cfg.type``."""
    from axolotl.utils.data.wrappers import get_dataset_wrapper

    base_type, prompt_style = _split_type(ds_cfg.type)
    wrapped, _ = get_dataset_wrapper(
        dataset_config=ds_cfg,
        tokenizer=tokenizer,
        cfg=cfg,
        dataset_base_type=base_type,
        dataset=dataset,
        dataset_prompt_style=prompt_style,
        processor=processor,
    )
    return wrapped


def _split_type(ds_type) -> tuple[str | None, str | None]:
    if not isinstance(ds_type, str):
        return None, None
    base, _, style = ds_type.partition(":")
    return base, style or None


def drop_long_rows(dataset: Dataset, cfg) -> Dataset:
    """Axolotl's own handling of over-long rows (``excess_length_strategy``)."""
    from axolotl.utils.data.utils import handle_long_seq_in_dataset

    return handle_long_seq_in_dataset(dataset, cfg.sequence_len, cfg)


def prepare_for_packing(dataset: Dataset, cfg) -> Dataset:
    """Axolotl's packing preparation (position ids, model-specific columns)."""
    from axolotl.utils.trainer import process_datasets_for_packing

    dataset, _ = process_datasets_for_packing(cfg, dataset, None)
    return dataset


def total_num_steps(cfg, dataset: Dataset) -> int:
    from axolotl.utils.trainer import calculate_total_num_steps

    steps = calculate_total_num_steps(cfg, dataset)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def normalize_dataset_entry(entry: dict):
    """A dataset entry as Axolotl's schema normalizes ``datasets:`` entries."""
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.datasets import SFTDataset

    known = set(SFTDataset.model_fields)
    unknown = sorted(k for k in entry if k not in known)
    if unknown:
        raise ValueError(
            f"[axolotl_tell] `tell_task_datasets` entry {entry.get('path')!r} has unknown keys {unknown}. "
            "Fix: use the keys of a `datasets:` entry (Axolotl would silently drop these)."
        )
    return DictDefault(SFTDataset(**entry).model_dump(exclude_none=True))


def dataset_entry_keys() -> set[str]:
    """The keys of a ``datasets:`` entry (Axolotl's ``SFTDataset`` schema)."""
    from axolotl.utils.schemas.datasets import SFTDataset

    return set(SFTDataset.model_fields)


def train_dataset_meta(train_dataset, eval_dataset, steps):
    from axolotl.common.datasets import TrainDatasetMeta

    return TrainDatasetMeta(train_dataset=train_dataset, eval_dataset=eval_dataset, total_num_steps=steps)


def load_tokenizer(cfg):
    from axolotl.loaders import load_tokenizer as _load

    return _load(cfg)


def fill_pack_batches_for_ranks(trainer, on_schedule) -> None:
    """Every planned row trained on any number of ranks, packed in either geometry (issue 27 point 1).

    Axolotl's multipack sampler drops a last batch of fewer than ``micro_batch_size`` packs (``drop_last=True``),
    and on several ranks accelerate copies that ``drop_last`` into its per-rank sharding, which then drops the
    last ``batches mod world`` batches too. Here the training sampler keeps its last batch and
    ``pack_schedule.fill_for_ranks`` completes the batches to a multiple of the world size with copies of the
    first packs, so every rank gets the same number of full batches (no rank waits at a collective).
    ``on_schedule(batches)`` gets what the ranks will train (copies included; the report recounts them). Not for
    the eval sampler (the same method builds it). Raises ``PlanTooSmallForRanks`` for a plan of fewer batches than
    ranks.
    """
    from axolotl_tell.pack_schedule import fill_for_ranks

    create = getattr(trainer, "_create_multipack_sampler", None)
    if create is None:
        return
    world = int(getattr(trainer.args, "world_size", 1) or 1)

    def create_filled(*args, **kwargs):
        sampler = create(*args, **kwargs)
        dataset = kwargs.get("dataset", args[1] if len(args) > 1 else None)
        training = kwargs.get("is_training", True) and (dataset is None or dataset is trainer.train_dataset)
        if not training or not hasattr(sampler, "generate_batches"):
            return sampler
        generate = sampler.generate_batches

        def generate_filled(set_stats: bool = False):
            if sampler._batches is not None:  # cached: already filled
                return sampler._batches
            batches, _ = fill_for_ranks(generate(set_stats=set_stats), sampler.batch_size, world,
                                        sampler.batch_size * sampler.batch_max_len)
            sampler._batches = batches
            on_schedule(batches)
            return batches

        sampler.drop_last = False
        sampler.generate_batches = generate_filled
        sampler._batches = None
        sampler._len_across_ranks = None  # counted again (on every rank alike) over the filled batches
        len(sampler)
        return sampler

    trainer._create_multipack_sampler = create_filled


def dataloader_steps(trainer) -> tuple[int, int]:
    """(optimizer steps, micro-batches) of one pass over the train dataloader the trainer builds, on every path.

    Axolotl's own estimate (``calculate_total_num_steps``) rounds packed runs down and may assume another
    multipack geometry than the trainer uses; the dataloader is the truth. The micro-batch count is the
    smallest over ranks, so every rank agrees on the step count.
    """
    import math

    import torch

    batches = len(trainer.get_train_dataloader())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
        count = torch.tensor([batches], dtype=torch.long, device=device)
        torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
        batches = int(count.item())
    accumulation = max(int(trainer.args.gradient_accumulation_steps or 1), 1)
    return max(1, math.ceil(batches / accumulation)), batches


def set_max_steps(trainer, steps: int) -> None:
    trainer.args.max_steps = int(steps)


def even_batches_refilled_rows(local_batch: int, rows: int, n_rows: int, world: int, rank: int,
                               batch_size: int) -> list[int]:
    """Rows of a rank's eval micro-batch that accelerate's ``even_batches`` copied from the start of the set.

    accelerate deals the eval batches round-robin (global batch ``k * world + rank`` is this rank's ``k``-th)
    and fills the last round with the first rows again; a row whose global position is past the set is such a
    copy. HF drops them from ``eval_loss``; the per-source sums must too. This mirrors accelerate's
    ``BatchSamplerShard`` (``even_batches=True``); ``tests/test_source_metrics.py`` checks it against accelerate's own
    sharding, so a change there fails a test.
    """
    first = (local_batch * world + rank) * batch_size
    return [j for j in range(rows) if first + j >= n_rows]
