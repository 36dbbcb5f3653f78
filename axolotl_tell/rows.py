"""Tokenized rows: their token counts (vectorised over Arrow buffers) and the source column the mix carries.

The lowest layer under both ``prepare.py`` and ``general_pool.py``: no Axolotl import.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

from axolotl_tell.datacheck import TOKEN_COLUMNS, TellDataError

SOURCE_COLUMN = "tell_source"
COUNT_BATCH_ROWS = 1 << 16


def row_token_counts(dataset: Dataset, batch_rows: int = COUNT_BATCH_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(total tokens, supervised tokens) per row, vectorised over Arrow buffers.

    Streams the rows in batches of ``batch_rows``: memory is the two int64 outputs (16 bytes per row) plus
    about 9 bytes per token of one batch, whatever the dataset's size (``bench/scale.py`` measures it).
    """
    n = len(dataset)
    lengths, supervised = np.zeros(n, np.int64), np.zeros(n, np.int64)
    if n == 0:
        return lengths, supervised
    start = 0
    for batch in dataset.select_columns(["input_ids", "labels"]).with_format("arrow").iter(batch_size=batch_rows):
        rows = batch.num_rows
        lengths[start:start + rows] = pc.list_value_length(batch.column("input_ids")).to_numpy(zero_copy_only=False)
        at = start
        for labels in batch.column("labels").chunks:
            offsets = labels.offsets.to_numpy()
            flat = labels.flatten().to_numpy(zero_copy_only=False)
            trained = np.zeros(flat.size + 1, np.int64)
            np.cumsum(flat != -100, out=trained[1:])
            supervised[at:at + len(labels)] = trained[offsets[1:] - offsets[0]] - trained[offsets[:-1] - offsets[0]]
            at += len(labels)
        start += rows
    return lengths, supervised


def with_source(dataset: Dataset, source_id: int) -> Dataset:
    keep = [c for c in TOKEN_COLUMNS if c in dataset.column_names]
    missing = [c for c in ("input_ids", "labels") if c not in keep]
    if missing:
        raise TellDataError(f"[axolotl_tell] tokenized rows lack {missing}; the dataset type must produce labels. "
                            "Fix: use a `type` that tokenizes into input_ids and labels (an SFT prompt strategy).")
    dataset = dataset.select_columns(keep)
    if "attention_mask" not in keep:
        dataset = dataset.map(lambda r: {"attention_mask": [1] * len(r["input_ids"])})
    return dataset.add_column(SOURCE_COLUMN, np.full(len(dataset), source_id, dtype=np.int16))
