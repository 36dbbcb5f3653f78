"""The general pool: read in a fixed seeded order, tokenized lazily in chunks until the plan's budget is met.

A TELL run uses a small part of a large general set (10 task rows x 20 repeats x 40 tokens at ratio 50 is about
400k general supervised tokens: a few thousand rows of a million). So the pool is not tokenized whole:

* **Scan order.** Every raw general row gets a place in one seeded permutation of the pool (``POOL_ORDER_SEED``,
  fixed: which rows come first does not depend on the run's ``seed``, so every run reuses the same rows; the
  run's seed orders the mix). The order is cut into chunks of ``CHUNK_ROWS`` rows; inside a chunk, rows are
  grouped by dataset entry (each entry has its own prompt strategy), in permutation order.
* **Lazy tokenization.** Chunks are tokenized in order, through Axolotl's own strategy and long-row handling
  exactly as plain Axolotl tokenizes them, until the kept rows' supervised tokens reach the budget (or the pool
  ends: the plan's shortfall policy decides). The rest of the pool is never tokenized.
* **Token cache.** Each tokenized chunk is saved (atomically) under a key of what changes its tokens only: the
  entries, the data files' size and mtime, the tokenizer and the tokenization keys; not the ``tell_*`` keys, the
  anchor or the seed. Another ratio, repeat count, anchor or seed reuses every chunk already tokenized and
  tokenizes only the extra chunks it needs. A chunk damaged on disk afterwards (a cut file) is found before use
  and tokenized again, with a warning naming the cache folder.
* **Streaming** (``tell_general_streaming: true``): the rows come from a seeded shuffle buffer over the stream
  (``datasets``' ``IterableDataset.shuffle(seed=POOL_ORDER_SEED, buffer_size=tell_general_stream_buffer)``,
  entries interleaved row by row); memory is bounded by the buffer and the chunks read, not the pool.

The result, :class:`GeneralRows`, is the kept rows in scan order with their token counts: the plan takes the
shortest prefix reaching the budget, exactly as if the whole pool had been tokenized first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, concatenate_datasets, load_from_disk

from axolotl_tell import cache, compat
from axolotl_tell.datacheck import TellDataError, check_columns, check_local_data
from axolotl_tell.rows import row_token_counts, with_source
from axolotl_tell.version import __version__

LOG = logging.getLogger("axolotl.tell")

POOL_ORDER_SEED = 0x7E11
CHUNK_ROWS = 2048
DEFAULT_STREAM_BUFFER = 10_000
CHUNK_STATS = "chunk_stats.json"
GENERAL_CACHE_PREFIX = "tell-general-"
ENTRY_COLUMN, ROW_COLUMN = "_tell_entry", "_tell_row"  # a streamed row's entry, and its number in that entry


@dataclass
class GeneralRows:
    """Kept general rows (fit ``sequence_len``, at least one supervised token), in scan order."""

    dataset: Dataset | None  # with the source column; None when nothing was kept
    lengths: np.ndarray
    supervised: np.ndarray
    sources: list[dict]
    stats: dict = field(default_factory=dict)


@dataclass
class _Entry:
    index: int
    ds_cfg: object
    where: str
    raw: object  # Dataset, or IterableDataset when streaming
    rows: int | None  # None for a stream
    source: dict


def scan_order(total_rows: int) -> np.ndarray:
    """The pool's fixed scan order: row ``scan_order(n)[k]`` (of the entries' rows, concatenated) is read k-th.

    With one entry and no row dropped, plan ids below ``general.rows_candidates`` are positions in this order.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([POOL_ORDER_SEED, int(total_rows)]))) \
        .permutation(int(total_rows))


def general_cache_key(cfg, tokenizer, entries) -> str:
    """What changes the tokens of general rows, and nothing else (no tell_* key, anchor or seed)."""
    keys = [k for k in cache.TOKENIZATION_KEYS if k not in ("seed", "sample_packing")]
    payload = {
        "plugin": __version__,
        "axolotl": compat.axolotl_version(),
        "config": {k: cfg.get(k) for k in keys},
        "entries": [dict(e) for e in entries],
        "files": [cache.fingerprint_path(e["path"]) for e in entries],
        "tokenizer": cache.tokenizer_identity(tokenizer),
        "order": [POOL_ORDER_SEED, CHUNK_ROWS],
        "streaming": bool(cfg.get("tell_general_streaming")),
        "buffer": cfg.get("tell_general_stream_buffer") if cfg.get("tell_general_streaming") else None,
        # several streamed entries: read once each, tokenized per entry (issue 26); chunks saved before differ
        "stream_entries": "each once, per entry" if cfg.get("tell_general_streaming") and len(entries) > 1 else None,
        # entry shards are shuffled with the run's seed before sharding (Axolotl's loader)
        "shard_seed": cfg.get("seed") if any(e.get("shards") for e in entries) else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class GeneralPool:
    """The general entries of one config, scanned and tokenized chunk by chunk (see the module docstring)."""

    def __init__(self, cfg, tokenizer, entries, source_id_start: int = 0):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.streaming = bool(cfg.get("tell_general_streaming"))
        self.entries = [self._open(i, ds_cfg, source_id_start + i) for i, ds_cfg in enumerate(entries)]
        self.key = general_cache_key(cfg, tokenizer, entries)
        root = Path(cfg.get("dataset_prepared_path") or cache.DEFAULT_PREPARED_PATH)
        self.folder = root / f"{GENERAL_CACHE_PREFIX}{self.key[:20]}"
        self.rows_available = None if self.streaming else sum(e.rows for e in self.entries)
        self._order = None
        self._stream = None

    @property
    def sources(self) -> list[dict]:
        return [e.source for e in self.entries]

    # --- opening the entries -------------------------------------------------------------------------------
    def _open(self, i: int, ds_cfg, source_id: int) -> _Entry:
        where = f"`datasets[{i}]` ({ds_cfg.path})"
        if not self.streaming:
            check_local_data(ds_cfg, where)
        try:
            raw = compat.load_raw_dataset(ds_cfg, self.cfg, streaming=self.streaming)
        except TellDataError:
            raise
        except Exception as err:  # name the entry: the loader's own message often does not
            raise TellDataError(f"[axolotl_tell] {where} could not be loaded: {type(err).__name__}: {err}. "
                                "Fix: check the path, `ds_type` and the file's format.") from err
        rows = None
        if not self.streaming:
            rows = len(raw)
            if rows == 0:
                raise TellDataError(f"[axolotl_tell] {where} has no rows. Fix: point it at a file with general "
                                    "data, or remove the entry.")
            check_columns(raw, ds_cfg, where)
        source = {"id": source_id, "kind": "general", "index": i, "path": ds_cfg.path, "type": str(ds_cfg.type),
                  "rows_raw": rows if rows is not None else "unknown (streamed)"}
        return _Entry(i, ds_cfg, where, raw, rows, source)

    # --- scan order ------------------------------------------------------------------------------------------
    def _chunk_rows(self, k: int) -> list[tuple[_Entry, object, list | None]] | None:
        """Chunk ``k``'s raw rows per entry (in scan order), or None past the end of the pool.

        Each part: (entry, raw rows, the rows' numbers in their entry for a stream's chunk, else None).
        """
        if self.streaming:
            return self._stream_chunk(k)
        if self._order is None:
            self._order = scan_order(self.rows_available)
        part = self._order[k * CHUNK_ROWS:(k + 1) * CHUNK_ROWS]
        if part.size == 0:
            return None
        out, start = [], 0
        for entry in self.entries:
            mine = part[(part >= start) & (part < start + entry.rows)] - start
            if mine.size:
                out.append((entry, entry.raw.select(mine), None))  # None: its columns were checked at _open
            start += entry.rows
        return out

    def _stream_chunk(self, k: int):
        if self._stream is None:
            from datasets import interleave_datasets

            # each row carries its entry and its number there through the shuffle: the entry's own `type` and
            # source id tokenize it, and an error names its real file:line
            streams = [e.raw.map(lambda _, n, i=e.index: {ENTRY_COLUMN: i, ROW_COLUMN: n}, with_indices=True)
                       for e in self.entries]
            # every row of every entry once ("all_exhausted" would repeat the shorter entries until the longest ends)
            mixed = streams[0] if len(streams) == 1 else interleave_datasets(
                streams, stopping_strategy="all_exhausted_without_replacement")
            buffer = int(self.cfg.get("tell_general_stream_buffer") or DEFAULT_STREAM_BUFFER)
            self._stream = (iter(mixed.shuffle(seed=POOL_ORDER_SEED, buffer_size=buffer)), 0)
        iterator, position = self._stream
        while position < k * CHUNK_ROWS:  # chunks before k came from the cache: read past them
            if next(iterator, None) is None:
                return None
            position += 1
        rows = []
        for row in iterator:
            rows.append(row)
            if len(rows) == CHUNK_ROWS:
                break
        self._stream = (iterator, position + len(rows))
        if not rows:
            return None
        by_entry: dict[int, tuple[list, list]] = {}  # grouped by entry, in stream order (as the scan order does)
        for row in rows:
            kept, numbers = by_entry.setdefault(row.pop(ENTRY_COLUMN), ([], []))
            numbers.append(row.pop(ROW_COLUMN))
            kept.append(row)
        return [(self.entries[i], Dataset.from_list(kept), numbers) for i, (kept, numbers) in sorted(by_entry.items())]

    # --- tokenization and cache ------------------------------------------------------------------------------
    def _tokenize_chunk(self, parts) -> tuple[Dataset | None, dict]:

        kept, stats = [], {"rows_scanned": 0, "rows_dropped_too_long": 0, "rows_dropped_no_supervised_tokens": 0}
        for entry, raw, row_numbers in parts:
            stats["rows_scanned"] += len(raw)
            if self.streaming:
                check_columns(raw, entry.ds_cfg, entry.where, row_numbers)
            try:
                tokenized = compat.tokenize_with_axolotl(entry.ds_cfg, self.cfg, self.tokenizer, raw)
            except Exception as err:
                raise TellDataError(f"[axolotl_tell] {entry.where}: Axolotl's `type: {entry.ds_cfg.type}` could not "
                                    f"tokenize the rows: {type(err).__name__}: {err}. Fix: check that every row has "
                                    "the fields this type reads, or pick the `type` that matches the file.") from err
            tokenized = with_source(tokenized, entry.source["id"])
            fit = compat.drop_long_rows(tokenized, self.cfg)
            stats["rows_dropped_too_long"] += len(tokenized) - len(fit)
            _, supervised = row_token_counts(fit)
            trainable = np.flatnonzero(supervised > 0)
            stats["rows_dropped_no_supervised_tokens"] += len(fit) - int(trainable.size)
            if trainable.size:
                kept.append(fit.select(trainable).flatten_indices() if trainable.size < len(fit) else fit)
        dataset = None if not kept else kept[0] if len(kept) == 1 else concatenate_datasets(kept)
        return dataset, stats

    def _load_or_tokenize(self, k: int):
        """(dataset, stats, from_cache) of chunk ``k``; None past the end of the pool."""
        folder = self.folder / f"chunk-{k:06d}"
        cached = self._cached_chunk(folder) if cache.is_ready(folder) else None
        if cached is not None:
            stats, dataset = cached
            return None if stats.get("end") else (dataset, stats, True)
        parts = self._chunk_rows(k)
        if parts is None:
            cache.save_atomically(folder, lambda tmp: (tmp / CHUNK_STATS).write_text(json.dumps({"end": True})))
            return None
        dataset, stats = self._tokenize_chunk(parts)
        stats["rows_kept"] = len(dataset) if dataset is not None else 0

        def write(tmp: Path):
            if dataset is not None:
                dataset.save_to_disk(str(tmp / "rows"))
            (tmp / CHUNK_STATS).write_text(json.dumps(stats))

        cache.save_atomically(folder, write)
        if dataset is not None:  # the saved copy: memory-mapped, not held in memory
            dataset = load_from_disk(str(folder / "rows"))
        return dataset, stats, False

    def _cached_chunk(self, folder: Path):
        """(stats, rows) of a saved chunk; None if it is damaged: it is then dropped, to be tokenized again.

        Damage comes from outside (a full disk, a killed copy, a partial sync): the files' sizes recorded at save
        time, Arrow's own errors while loading, and the saved row count find it, before a short pool is used.
        Redoing it is safe: a chunk's rows follow from the cache key and its number alone (the scan order is
        fixed; a stream is read past the chunks before it), and the caller holds the cache's lock.
        """
        problem = cache.damage(folder)
        if problem is None:
            try:
                stats = json.loads((folder / CHUNK_STATS).read_text())
                if stats.get("end") or not stats["rows_kept"]:
                    return stats, None
                dataset = load_from_disk(str(folder / "rows"))
                if len(dataset) == stats["rows_kept"]:
                    return stats, dataset
                problem = f"{len(dataset)} rows, {stats['rows_kept']} when saved"
            except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:  # what a cut file raises
                problem = f"{type(err).__name__}: {err}"
        LOG.warning("[axolotl_tell] token cache %s: %s is damaged (%s); it is dropped and tokenized again.",
                    self.folder, folder.name, problem)
        try:
            shutil.rmtree(folder)
        except OSError as err:
            raise TellDataError(f"[axolotl_tell] the token cache {self.folder} is damaged ({folder.name}: {problem}) "
                                f"and could not be repaired ({type(err).__name__}: {err}). Fix: delete "
                                f"{self.folder} (a cache only: its rows are tokenized again).") from err
        return None

    def rows_until(self, budget: int) -> GeneralRows:
        """Kept rows in scan order until their supervised tokens reach ``budget``, or the whole pool."""
        from filelock import FileLock


        self.folder.mkdir(parents=True, exist_ok=True)
        parts, lengths, supervised = [], [], []
        totals = {"rows_scanned": 0, "rows_tokenized_now": 0, "rows_from_cache": 0, "rows_dropped_too_long": 0,
                  "rows_dropped_no_supervised_tokens": 0, "chunks": 0, "chunks_from_cache": 0}
        reached, started, last_log = 0, time.time(), time.time()
        with FileLock(str(self.folder) + ".lock"):  # runs sharing the cache never tokenize a chunk twice
            k = 0
            while budget <= 0 or reached < budget or k == 0:
                got = self._load_or_tokenize(k)
                if got is None:
                    break
                dataset, stats, from_cache = got
                totals["chunks"] += 1
                totals["chunks_from_cache"] += int(from_cache)
                totals["rows_scanned"] += stats["rows_scanned"]
                totals["rows_from_cache" if from_cache else "rows_tokenized_now"] += stats["rows_scanned"]
                for key in ("rows_dropped_too_long", "rows_dropped_no_supervised_tokens"):
                    totals[key] += stats[key]
                if dataset is not None:
                    chunk_lengths, chunk_supervised = row_token_counts(dataset)
                    parts.append(dataset)
                    lengths.append(chunk_lengths)
                    supervised.append(chunk_supervised)
                    reached += int(chunk_supervised.sum())
                k += 1
                if time.time() - last_log > 10:
                    last_log = time.time()
                    LOG.info("[axolotl_tell] general pool: %d rows scanned (%d from the token cache), %d of %d "
                             "supervised tokens, %.0f s", totals["rows_scanned"], totals["rows_from_cache"],
                             reached, budget, time.time() - started)
                if budget <= 0:
                    break
        totals["exhausted"] = budget > 0 and reached < budget
        totals["rows_available"] = self.rows_available if self.rows_available is not None else "unknown"
        totals["token_cache"] = str(self.folder)
        LOG.info("[axolotl_tell] general pool: %d of %s rows scanned (%d tokenized now, %d from the token cache "
                 "%s), %d supervised tokens for a budget of %d, %.1f s", totals["rows_scanned"],
                 totals["rows_available"], totals["rows_tokenized_now"], totals["rows_from_cache"], self.folder,
                 reached, budget, time.time() - started)
        dataset = None if not parts else parts[0] if len(parts) == 1 else concatenate_datasets(parts)
        empty = np.zeros(0, np.int64)
        return GeneralRows(dataset, np.concatenate(lengths) if lengths else empty,
                           np.concatenate(supervised) if supervised else empty, self.sources, totals)

    def whole_pool(self) -> GeneralRows:
        """Every row (upsample and warn shortfalls need the whole pool's counts)."""
        return self.rows_until(1 << 62)
