"""Build the TELL training set: tokenize general and anchored task data, plan, mix.

Flow (one call of :func:`prepare_tell_datasets`):

1. general entries (``datasets:``) -> Axolotl's own loader and prompt strategy,
   then Axolotl's over-long-row handling: the rows plain Axolotl would train on;
2. task entries (``tell_task_datasets:``) -> the same loader, anchored by
   :class:`~axolotl_tell.anchored.AnchoredDatasetStrategy`, tokenized without
   truncation and then *checked*: an over-long or empty task row is an error;
3. per-row supervised token counts -> :func:`~axolotl_tell.plan.build_plan`;
4. the plan is applied with one ``select``; every row keeps ``tell_source``;
5. the result is saved atomically under a key that covers every input.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset, concatenate_datasets, load_from_disk

from axolotl_tell import cache, compat
from axolotl_tell.anchor import Anchor, check_anchor_tokens, rows_holding_anchor
from axolotl_tell.anchor_config import resolve_anchor
from axolotl_tell.anchored import AnchoredDatasetStrategy
from axolotl_tell.args import resolved_ratio, resolved_repeats
from axolotl_tell.datacheck import (
    TellDataError,
    check_columns,
    check_local_data,
    check_raw_task_rows,
    check_writable_folder,
    row_location,
)
from axolotl_tell.general_pool import GeneralPool, GeneralRows
from axolotl_tell.plan import MixPlan, PlanError, PlanTooLargeError, build_plan, general_budget, resolve_repeats
from axolotl_tell.report import build_report
from axolotl_tell.rows import SOURCE_COLUMN, row_token_counts, with_source  # noqa: F401 - public here too

LOG = logging.getLogger("axolotl.tell")

NO_LIMIT = 1 << 30  # task rows are tokenized untruncated, then checked against sequence_len
DEFAULT_SEED = 42


@dataclass
class PreparedTell:
    train_dataset: Dataset  # planned order, with the SOURCE_COLUMN
    report: dict
    path: Path  # the prepared folder
    from_cache: bool
    eval_dataset: Dataset | None = None  # anchored task eval rows (never trained on), with the SOURCE_COLUMN
    eval_raw: list[dict] | None = None  # their raw rows: {"dataset_index", "row"}, for generation metrics


def run_seed(cfg) -> int:
    return int(cfg.seed) if cfg.get("seed") is not None else DEFAULT_SEED


def _task_entry_cfg(entry: dict, cfg):
    ds_cfg = compat.normalize_dataset_entry(entry)
    if ds_cfg.get("type") == "chat_template" and cfg.get("chat_template") and not entry.get("chat_template"):
        ds_cfg["chat_template"] = cfg.chat_template  # as Axolotl does for `datasets:` entries
        ds_cfg["chat_template_jinja"] = cfg.get("chat_template_jinja")
    return ds_cfg


def load_general(cfg, tokenizer, entries, split: str = "train") -> tuple[Dataset, list[dict]]:
    """General rows exactly as plain Axolotl tokenizes them, tagged with their source."""
    key = "test_datasets" if split == "test" else "datasets"
    parts, sources = [], []
    for i, ds_cfg in enumerate(entries):
        where = f"`{key}[{i}]` ({ds_cfg.path})"
        check_local_data(ds_cfg, where)
        try:
            raw = compat.load_raw_dataset(ds_cfg, cfg, split=split)
        except TellDataError:
            raise
        except Exception as err:  # name the entry: the loader's own message often does not
            raise TellDataError(f"[axolotl_tell] {where} could not be loaded: {type(err).__name__}: {err}. "
                                "Fix: check the path, `ds_type` and the file's format.") from err
        if len(raw) == 0:
            raise TellDataError(f"[axolotl_tell] {where} has no rows. Fix: point it at a file with general data, "
                                "or remove the entry.")
        check_columns(raw, ds_cfg, where)
        try:
            tokenized = compat.tokenize_with_axolotl(ds_cfg, cfg, tokenizer, raw)
        except Exception as err:
            raise TellDataError(f"[axolotl_tell] {where}: Axolotl's `type: {ds_cfg.type}` could not tokenize the "
                                f"rows: {type(err).__name__}: {err}. Fix: check that every row has the fields "
                                "this type reads, or pick the `type` that matches the file.") from err
        sources.append({"id": len(sources), "kind": "general", "index": i, "path": ds_cfg.path,
                        "type": str(ds_cfg.type), "rows_raw": len(raw)})
        parts.append(with_source(tokenized, sources[-1]["id"]))
    general = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return general, sources


def _load_task_raw(ds_cfg, cfg, index: int, key: str = "tell_task_datasets") -> Dataset:
    where = f"`{key}[{index}]` ({ds_cfg.path})"
    path = Path(str(ds_cfg.path))
    if path.is_file() and path.stat().st_size == 0:
        raise TellDataError(f"[axolotl_tell] {where} is an empty file. Fix: point it at a file with task examples.")
    check_local_data(ds_cfg, where)
    try:
        raw = compat.load_raw_dataset(ds_cfg, cfg)
    except Exception as err:  # name the entry: the loader's own message often does not
        raise TellDataError(f"[axolotl_tell] {where} could not be loaded: {type(err).__name__}: {err}. "
                            "Fix: check the path, `ds_type` and the file's format.") from err
    check_raw_task_rows(raw, where)
    check_columns(raw, ds_cfg, where)
    return raw


def task_raw_data(cfg, task_entries) -> list[tuple]:
    """``[(ds_cfg, raw rows), ...]`` per task entry: what ``tell_anchor: auto`` describes."""
    return [(ds_cfg, _load_task_raw(ds_cfg, cfg, i)) for i, ds_cfg in enumerate(task_entries)]


def load_task(cfg, tokenizer, entries, anchor: Anchor, first_id: int, key: str = "tell_task_datasets",
              ids: list[int] | None = None) -> tuple[Dataset, list[dict], list[dict]]:
    """Anchored, tokenized task rows; every row must fit ``sequence_len`` and supervise something.

    Returns (tokenized rows, sources, raw rows as ``{"dataset_index", "row"}``, in the same order).
    """
    from axolotl.utils.dict import DictDefault

    untruncated = DictDefault({**cfg, "sequence_len": NO_LIMIT})
    parts, sources, problems, raws = [], [], [], []
    for i, ds_cfg in enumerate(entries):
        raw = _load_task_raw(ds_cfg, cfg, i, key)
        if len(raw) == 0:
            raise TellDataError(f"[axolotl_tell] `{key}[{i}]` ({ds_cfg.path}) has no rows. "
                                "Fix: point it at a file with task examples.")
        _warn_rows_holding_anchor(raw, anchor, f"`{key}[{i}]` ({ds_cfg.path})")
        strategy = AnchoredDatasetStrategy(str(ds_cfg.type), tokenizer, untruncated, ds_cfg, anchor=anchor)
        try:
            tokenized = strategy.wrap_dataset(raw, process_count=cfg.dataset_num_proc)
        except Exception as err:
            raise _row_error(raw, strategy, ds_cfg, f"`{key}[{i}]` ({ds_cfg.path})", err) from err
        lengths, supervised = row_token_counts(tokenized)
        for row in np.flatnonzero(lengths > cfg.sequence_len)[:5]:
            problems.append(f"{key}[{i}] ({ds_cfg.path}) row {row}: {lengths[row]} tokens > sequence_len "
                            f"{cfg.sequence_len}{row_location(ds_cfg, int(row))}")
        for row in np.flatnonzero(supervised == 0)[:5]:
            problems.append(f"{key}[{i}] ({ds_cfg.path}) row {row}: no supervised tokens after templating (empty "
                            f"answer, no assistant turn, or every label masked){row_location(ds_cfg, int(row))}")
        if len(tokenized) != len(raw):
            problems.append(f"{key}[{i}] ({ds_cfg.path}): the prompt strategy kept "
                            f"{len(tokenized)} of {len(raw)} rows")
        source_id = ids[i] if ids else first_id + i
        sources.append({"id": source_id, "kind": "task", "index": i, "path": ds_cfg.path,
                        "type": str(ds_cfg.type), "placement": strategy.placement, "rows_raw": len(raw)})
        parts.append(with_source(tokenized, source_id))
        raws.extend({"dataset_index": i, "row": row} for row in raw.to_list())
    if problems:
        raise TellDataError(
            "[axolotl_tell] task rows that Axolotl would silently drop, truncate or not train on:\n  "
            + "\n  ".join(problems)
            + "\nFix: raise `sequence_len`, shorten `tell_anchor`, or fix/remove those rows."
        )
    task = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return task, sources, raws


def _warn_rows_holding_anchor(raw: Dataset, anchor: Anchor, where: str) -> None:
    """Rows that already contain the anchor text get it twice: say so (the data may be anchored already)."""
    count = rows_holding_anchor(raw, anchor.text)
    if count:
        LOG.warning("[axolotl_tell] %s: %d of %d task rows already contain the anchor text, so they will hold it "
                    "twice. Fix: remove the anchor from those rows (TELL adds it to every row), or ignore this if "
                    "the text is meant to be there.", where, count, len(raw))


def _row_error(raw: Dataset, strategy, ds_cfg, where: str, err: Exception) -> TellDataError:
    """The task row that made anchoring or tokenization fail, with ``file:line`` (task data is small)."""
    from axolotl_tell.anchor import COMPLETION, anchor_raw_row

    if strategy.family != COMPLETION:
        for r, row in enumerate(raw):
            try:
                anchor_raw_row(row, strategy.anchor, strategy.placement, strategy.inner_type, dict(strategy.inner_ds_cfg()))
            except Exception as row_err:  # noqa: BLE001 - reported with its row
                detail = str(row_err).removeprefix("[axolotl_tell] ")
                if "Fix:" not in detail:
                    detail += ". Fix: fix or remove that row"
                return TellDataError(f"[axolotl_tell] {where} row {r}{row_location(ds_cfg, r)}: {detail}")
    return TellDataError(f"[axolotl_tell] {where}: `type: {ds_cfg.type}` could not tokenize the anchored rows: "
                         f"{type(err).__name__}: {err}. Fix: check that every row has the fields this type reads.")


def split_task_eval(cfg, task: Dataset, raws: list[dict]):
    """Hold out ``tell_task_eval_rows`` task rows (seeded) for a task-only eval set, before planning."""
    n_eval = int(cfg.get("tell_task_eval_rows") or 0)
    if not n_eval:
        return task, raws, None, []
    if n_eval >= len(task):
        raise TellDataError(f"[axolotl_tell] `tell_task_eval_rows: {n_eval}` leaves no task row to train on "
                            f"({len(task)} task rows). Fix: hold out fewer rows, or use `tell_task_test_datasets`.")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([run_seed(cfg), 7])))
    perm = rng.permutation(len(task))
    held, kept = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
    return (task.select(kept).flatten_indices(), [raws[i] for i in kept],
            task.select(held).flatten_indices(), [raws[i] for i in held])


def _plan(cfg, task_counts, general_counts) -> MixPlan:
    (task_len, task_sup), (gen_len, gen_sup) = task_counts, general_counts
    try:
        return build_plan(
            task_sup,
            gen_sup,
            task_repeats=resolved_repeats(cfg),
            general_ratio=resolved_ratio(cfg),
            general_tokens=cfg.get("tell_general_tokens"),
            spread=cfg.get("tell_spread") or "even",
            seed=run_seed(cfg),
            shortfall=cfg.get("tell_general_shortfall") or "error",
            task_lengths=task_len,
            general_lengths=gen_len,
        )
    except PlanTooLargeError as err:
        raise TellDataError(
            f"[axolotl_tell] cannot build the mix: {err}. Fix: lower `tell_general_ratio` / `tell_general_tokens` "
            "or `tell_task_repeats`; with `tell_general_shortfall: upsample`, add general data instead of "
            "repeating a small pool that many times."
        ) from err
    except PlanError as err:
        raise TellDataError(
            f"[axolotl_tell] cannot build the mix: {err}. Fix: add general data to `datasets:`, lower "
            "`tell_general_ratio`/`tell_general_tokens`, or set `tell_general_shortfall: warn` (use all "
            "general data) or `upsample` (repeat general rows)."
        ) from err


def _budget(cfg, task_supervised: np.ndarray) -> int:
    """The general supervised tokens the plan will ask for (before any general row is tokenized)."""
    try:
        repeats = resolve_repeats(int(task_supervised.size), resolved_repeats(cfg))
    except PlanError as err:
        raise TellDataError(f"[axolotl_tell] `tell_task_repeats`: {err}. Fix: an integer >= 1 or `auto`.") from err
    return general_budget(int(task_supervised.sum()) * repeats, resolved_ratio(cfg), cfg.get("tell_general_tokens"))


def _check_general_left(cfg, general: GeneralRows) -> None:
    """The pool ended with no row to train on: say why (too long, or nothing supervised)."""
    if general.dataset is not None and len(general.dataset):
        return
    stats = general.stats
    scanned, too_long = stats["rows_scanned"], stats["rows_dropped_too_long"]
    if scanned and too_long == scanned:
        raise TellDataError(f"[axolotl_tell] `datasets:`: all {scanned} general rows are longer than "
                            f"`sequence_len: {cfg.sequence_len}` and were dropped. Fix: raise `sequence_len`, or set "
                            "`excess_length_strategy: truncate`.")
    raise TellDataError(f"[axolotl_tell] `datasets:`: none of the {scanned - too_long} general rows has a supervised "
                        "token after templating (every label is -100). Fix: check `train_on_inputs`, "
                        "`roles_to_train`, the field mappings of the entries, and that the answers are not empty.")


def _check_files(general_entries, task_entries, test_entries, streaming: bool = False) -> None:
    """Every local data file, before any tokenization: a bad line fails in seconds, not after the general data."""
    for key, entries in (("tell_task_datasets", task_entries), ("tell_task_test_datasets", test_entries),
                         ("datasets", [] if streaming else general_entries)):
        for i, ds_cfg in enumerate(entries):
            check_local_data(ds_cfg, f"`{key}[{i}]` ({ds_cfg.path})")


def _build(cfg, tokenizer, anchor, general_entries, task_entries, test_entries):
    _check_files(general_entries, task_entries, test_entries, streaming=bool(cfg.get("tell_general_streaming")))
    pool = GeneralPool(cfg, tokenizer, general_entries)
    task, task_sources, task_raws = load_task(cfg, tokenizer, task_entries, anchor, first_id=len(general_entries))
    task, task_raws, eval_task, eval_raws = split_task_eval(cfg, task, task_raws)
    if test_entries:  # eval rows count as the first task source in per-source metrics
        eval_task, _, eval_raws = load_task(cfg, tokenizer, test_entries, anchor, first_id=0,
                                            key="tell_task_test_datasets", ids=[task_sources[0]["id"]] * len(test_entries))
    task_counts = row_token_counts(task)
    # only the general rows the budget needs are tokenized (general_pool.py); all of them if the pool is short
    general = pool.rows_until(_budget(cfg, task_counts[1]))
    _check_general_left(cfg, general)  # after the task rows' own errors

    plan = _plan(cfg, task_counts, (general.lengths, general.supervised))
    for warning in plan.warnings:
        LOG.warning("[axolotl_tell] %s", warning)
    mixed = concatenate_datasets([general.dataset, task]).select(plan.order).flatten_indices()
    if cfg.sample_packing:
        mixed = compat.prepare_for_packing(mixed, cfg)

    stats = general.stats
    report = build_report(
        plan,
        anchor=anchor,
        sources=general.sources + task_sources,
        general_filtering={
            "rows_available": stats["rows_available"],  # the whole pool ("unknown" for a stream)
            "rows_candidates": plan.general_rows_available,  # scanned rows that fit and supervise something
            "rows_scanned": stats["rows_scanned"],
            "rows_tokenized": stats["rows_scanned"],
            "rows_tokenized_now": stats["rows_tokenized_now"],
            "rows_from_token_cache": stats["rows_from_cache"],
            "rows_dropped_too_long": stats["rows_dropped_too_long"],
            "rows_dropped_no_supervised_tokens": stats["rows_dropped_no_supervised_tokens"],
            "token_cache": stats["token_cache"],
        },
        cfg=cfg,
    )
    report["task"]["eval_rows"] = len(eval_task) if eval_task is not None else 0
    report["task"]["eval_source"] = ("held_out" if cfg.get("tell_task_eval_rows") else
                                     "tell_task_test_datasets" if test_entries else None)
    return mixed, report, plan, eval_task, eval_raws


def prepare_tell_datasets(cfg, tokenizer) -> PreparedTell:
    """The planned TELL mix for ``cfg``: from the prepared folder if it is current, else built now."""
    from filelock import FileLock

    general_entries = list(cfg.datasets or [])
    if not general_entries:
        raise TellDataError("[axolotl_tell] `datasets:` is empty: TELL needs general data to mix the task into. "
                            "Fix: list general instruction data under `datasets:`.")
    check_writable_folder("dataset_prepared_path", cfg.get("dataset_prepared_path") or cache.DEFAULT_PREPARED_PATH)
    check_writable_folder("output_dir", cfg.output_dir)  # written after the mix is built: fail before that
    task_entries = [_task_entry_cfg(dict(e), cfg) for e in cfg.tell_task_datasets]
    anchor = resolve_anchor(cfg, task_data=lambda: task_raw_data(cfg, task_entries))  # `auto`: cached or generated
    check_anchor_tokens(anchor, tokenizer)
    test_entries = [_task_entry_cfg(dict(e), cfg) for e in cfg.get("tell_task_test_datasets") or []]
    key = cache.cache_key(cfg, tokenizer, anchor.text, general_entries, task_entries + test_entries)
    path = cache.prepared_dir(cfg, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # one rank builds, the others load
        from_cache = cache.is_ready(path)
        problem = cache.damage(path) if from_cache else None
        if problem:  # changed on disk after its save: built again (the save replaces the folder)
            LOG.warning("[axolotl_tell] the prepared TELL mix %s is damaged (%s); it is built again.", path, problem)
            from_cache = False
        if from_cache:
            LOG.info("[axolotl_tell] loading prepared TELL mix from %s", path)
        else:
            LOG.info("[axolotl_tell] building the TELL mix (cache key %s)", key[:20])
            mixed, report, plan, eval_task, eval_raws = _build(cfg, tokenizer, anchor, general_entries,
                                                               task_entries, test_entries)
            report["prepared_path"] = str(path)
            report["cache_key"] = key

            def write(tmp: Path):
                mixed.save_to_disk(str(tmp / "train"))
                if eval_task is not None:
                    eval_task.save_to_disk(str(tmp / "task_eval"))
                    (tmp / "task_eval_raw.jsonl").write_text(
                        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in eval_raws), encoding="utf-8")
                np.save(tmp / "plan_order.npy", plan.order)
                (tmp / "tell_report.json").write_text(json.dumps(report, indent=2))

            cache.save_atomically(path, write)
    return load_prepared(path, from_cache)


def load_prepared(path: Path, from_cache: bool = True) -> PreparedTell:
    """A prepared TELL folder: train mix, report, and the task eval rows if any."""
    report = json.loads((path / "tell_report.json").read_text())
    eval_dataset = eval_raw = None
    if (path / "task_eval").is_dir():
        eval_dataset = load_from_disk(str(path / "task_eval"))
        eval_raw = [json.loads(line) for line in (path / "task_eval_raw.jsonl").read_text(encoding="utf-8").splitlines()]
    return PreparedTell(load_from_disk(str(path / "train")), report, path, from_cache, eval_dataset, eval_raw)
