"""The general pool read lazily: only the rows the budget needs are tokenized, reused across mixes, streamable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tiny import alpaca_rows, make_workspace, write_jsonl

from axolotl_tell import general_pool
from axolotl_tell.prepare import SOURCE_COLUMN, TellDataError, prepare_tell_datasets


@pytest.fixture(scope="module")
def load_cfg():
    from axolotl.cli.config import load_cfg

    return load_cfg


@pytest.fixture()
def count_tokenized(monkeypatch):
    """How many general rows went through Axolotl's tokenization."""
    from axolotl_tell import compat

    counted = {"rows": 0}
    real = compat.tokenize_with_axolotl

    def counting(ds_cfg, cfg, tokenizer, dataset, processor=None):
        if Path(str(ds_cfg.path)).name == "general.jsonl":  # the workspace's general file (not the task rows)
            counted["rows"] += len(dataset)
        return real(ds_cfg, cfg, tokenizer, dataset, processor)

    monkeypatch.setattr(compat, "tokenize_with_axolotl", counting)
    return counted


def _prepare(load_cfg, root: Path, model: Path, **kw):
    from axolotl_tell import compat

    path, _ = make_workspace(root, model, **kw)
    cfg = load_cfg(str(path))
    return prepare_tell_datasets(cfg, compat.load_tokenizer(cfg))


def _rows(prepared) -> list[tuple]:
    return [(r[SOURCE_COLUMN], tuple(r["input_ids"])) for r in prepared.train_dataset]


@pytest.mark.parametrize("chunk", [7, 64])
def test_lazy_planning_equals_planning_on_the_whole_pool(load_cfg, tiny_model, tmp_path, monkeypatch, chunk):
    """Same rows, same order, same plan hash whether the pool is tokenized whole or chunk by chunk."""
    monkeypatch.setattr(general_pool, "CHUNK_ROWS", 100_000)  # one chunk: the whole pool, tokenized first
    whole = _prepare(load_cfg, tmp_path / "whole", tiny_model, general_rows=400)
    monkeypatch.setattr(general_pool, "CHUNK_ROWS", chunk)
    lazy = _prepare(load_cfg, tmp_path / "lazy", tiny_model, general_rows=400)
    assert _rows(lazy) == _rows(whole)  # (plan_sha256 differs: task row ids follow the number of scanned rows)
    g_whole, g_lazy = whole.report["general"], lazy.report["general"]
    assert g_whole["rows_scanned"] == 400 and g_lazy["rows_scanned"] < 400  # the lazy run stopped early
    assert g_lazy["rows_used"] == g_whole["rows_used"] and g_lazy["rows_available"] == 400


def test_a_ratio_anchor_or_seed_change_reuses_the_tokenized_rows(load_cfg, tiny_model, tmp_path, monkeypatch,
                                                                 count_tokenized):
    monkeypatch.setattr(general_pool, "CHUNK_ROWS", 16)
    first = _prepare(load_cfg, tmp_path, tiny_model, general_rows=600)
    g = first.report["general"]
    assert count_tokenized["rows"] == g["rows_tokenized_now"] == g["rows_scanned"] < 600
    count_tokenized["rows"] = 0
    other = _prepare(load_cfg, tmp_path, tiny_model, general_rows=600, seed=11,
                     tell_anchor="Another anchor for the same task.")
    assert count_tokenized["rows"] == 0 and other.report["general"]["rows_from_token_cache"] > 0
    assert other.report["plan_sha256"] != first.report["plan_sha256"]
    bigger = _prepare(load_cfg, tmp_path, tiny_model, general_rows=600, tell_general_ratio=4)
    g2 = bigger.report["general"]
    assert g2["rows_from_token_cache"] == g["rows_scanned"]  # every row tokenized before is reused
    assert count_tokenized["rows"] == g2["rows_tokenized_now"] == g2["rows_scanned"] - g["rows_scanned"] > 0


def test_stale_token_cache_is_never_reused(load_cfg, tiny_model, tmp_path, count_tokenized):
    from axolotl_tell import compat

    _prepare(load_cfg, tmp_path, tiny_model)
    count_tokenized["rows"] = 0
    longer = _prepare(load_cfg, tmp_path, tiny_model, sequence_len=200)  # a tokenization key
    assert longer.report["general"]["rows_from_token_cache"] == 0 and count_tokenized["rows"] > 0
    count_tokenized["rows"] = 0
    path, cfg = make_workspace(tmp_path, tiny_model, seed=8)  # seed: a new mix, the same general tokens ...
    loaded = load_cfg(str(path))
    reused = prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))
    assert reused.report["general"]["rows_tokenized_now"] == 0 and count_tokenized["rows"] == 0
    write_jsonl(Path(cfg["datasets"][0]["path"]), alpaca_rows(120, 99))  # ... until the data file changes
    loaded = load_cfg(str(path))
    changed = prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))
    assert changed.report["general"]["rows_from_token_cache"] == 0 and count_tokenized["rows"] > 0


def test_a_killed_chunk_save_leaves_nothing_loadable(load_cfg, tiny_model, tmp_path, monkeypatch, count_tokenized):
    from datasets import Dataset

    monkeypatch.setattr(general_pool, "CHUNK_ROWS", 16)
    real_save = Dataset.save_to_disk
    calls = {"n": 0}

    def dying_save(self, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second chunk dies mid-save
            raise KeyboardInterrupt("killed")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_to_disk", dying_save)
    with pytest.raises(KeyboardInterrupt):
        _prepare(load_cfg, tmp_path, tiny_model)
    monkeypatch.setattr(Dataset, "save_to_disk", real_save)
    count_tokenized["rows"] = 0
    again = _prepare(load_cfg, tmp_path, tiny_model)
    g = again.report["general"]
    assert g["rows_from_token_cache"] == 16  # the first chunk was saved whole; the killed one is redone
    assert count_tokenized["rows"] == g["rows_tokenized_now"] == g["rows_scanned"] - 16
    cache = Path(g["token_cache"])
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]


def test_shortfall_policies_on_a_lazily_read_pool(load_cfg, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(general_pool, "CHUNK_ROWS", 8)
    with pytest.raises(TellDataError, match="cannot build the mix"):
        _prepare(load_cfg, tmp_path / "e", tiny_model, general_rows=20, tell_general_ratio=500)
    warn = _prepare(load_cfg, tmp_path / "w", tiny_model, general_rows=20, tell_general_ratio=500,
                    tell_general_shortfall="warn")
    assert warn.report["general"]["rows_used"] == warn.report["general"]["rows_scanned"] == 20
    up = _prepare(load_cfg, tmp_path / "u", tiny_model, general_rows=20, tell_general_ratio=50,
                  tell_general_shortfall="upsample")
    g = up.report["general"]
    assert g["shortfall"] == "upsample" and g["occurrences"] > g["rows_used"] == 20


def test_over_long_and_unsupervised_general_rows_are_counted(load_cfg, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(general_pool, "CHUNK_ROWS", 8)
    path, cfg = make_workspace(tmp_path, tiny_model, tell_general_shortfall="warn", tell_general_ratio=100)
    rows = alpaca_rows(30, 5)
    rows += [{"instruction": "word " * 400, "input": "", "output": "long"} for _ in range(4)]
    write_jsonl(Path(cfg["datasets"][0]["path"]), rows)
    from axolotl_tell import compat

    loaded = load_cfg(str(path))
    prepared = prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))
    g = prepared.report["general"]
    assert g["rows_scanned"] == 34 and g["rows_dropped_too_long"] == 4 and g["rows_used"] == 30


def _axolotl(*args, cwd: Path) -> str:
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(bin_dir / "axolotl"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.mark.e2e
def test_streaming_general_data_through_preprocess_and_train(tiny_model, tmp_path):
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, general_rows=300, tell_general_streaming=True,
                                   tell_general_stream_buffer=50)
    _axolotl("preprocess", str(cfg_path), cwd=tmp_path)
    report = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())
    g = report["general"]
    assert g["rows_available"] == "unknown" and 0 < g["rows_scanned"] <= 300 and g["rows_used"] > 0
    log = _axolotl("train", str(cfg_path), cwd=tmp_path)
    assert "loading prepared TELL mix" in log
    assert (Path(cfg["output_dir"]) / "adapter_model.safetensors").is_file()
    trained = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())["trained"]
    assert trained["complete"]


def test_streaming_is_deterministic_and_reuses_its_chunks(load_cfg, tiny_model, tmp_path, monkeypatch,
                                                          count_tokenized):
    monkeypatch.setattr(general_pool, "CHUNK_ROWS", 16)
    kw = {"general_rows": 300, "tell_general_streaming": True, "tell_general_stream_buffer": 40}
    first = _prepare(load_cfg, tmp_path / "a", tiny_model, **kw)
    second = _prepare(load_cfg, tmp_path / "b", tiny_model, **kw)  # fresh folders: read and tokenized again
    assert _rows(first) == _rows(second)
    scanned = first.report["general"]["rows_scanned"]
    count_tokenized["rows"] = 0
    more = _prepare(load_cfg, tmp_path / "a", tiny_model, tell_general_ratio=4, **kw)
    g = more.report["general"]
    assert g["rows_from_token_cache"] == scanned and count_tokenized["rows"] == g["rows_tokenized_now"] > 0


def test_plan_ids_are_positions_in_the_pools_scan_order(load_cfg, tiny_model, tmp_path):
    """`general_pool.scan_order` maps a plan id back to its line of the pool (the benchmark's no-anchor twin uses it)."""
    from datasets import Dataset

    from axolotl_tell import compat

    path, cfg = make_workspace(tmp_path, tiny_model)
    loaded = load_cfg(str(path))
    tok = compat.load_tokenizer(loaded)
    prepared = prepare_tell_datasets(loaded, tok)
    order = np.load(prepared.path / "plan_order.npy")
    candidates = prepared.report["general"]["rows_candidates"]
    raw = [json.loads(line) for line in Path(cfg["datasets"][0]["path"]).read_text().splitlines()]
    line_of = general_pool.scan_order(len(raw))
    checked = 0
    for position, plan_id in enumerate(order.tolist()):
        if plan_id >= candidates or checked == 12:
            continue
        alone = compat.tokenize_with_axolotl(loaded.datasets[0], loaded, tok, Dataset.from_list([raw[line_of[plan_id]]]))
        assert prepared.train_dataset[position]["input_ids"] == alone[0]["input_ids"], (position, plan_id)
        checked += 1
    assert checked == 12


def _two_streamed_entries(root: Path, model: Path, second: Path, second_type: str, **kw):
    """The workspace's general.jsonl (alpaca) plus ``second``, streamed (issue 26)."""
    general = root / "general.jsonl"
    return make_workspace(root, model, tell_general_streaming=True, tell_general_stream_buffer=50, **kw,
                          datasets=[{"path": str(general), "ds_type": "json", "type": "alpaca"},
                                    {"path": str(second), "ds_type": "json", "type": second_type}])


def test_streamed_entries_of_two_types_fail_at_config_load(load_cfg, tiny_model, tmp_path):
    from tiny import chat_rows

    chat = write_jsonl(tmp_path / "chat.jsonl", chat_rows(50, 4))
    path, _ = _two_streamed_entries(tmp_path, tiny_model, chat, "chat_template", general_rows=300)
    with pytest.raises(Exception) as info:
        load_cfg(str(path))
    message = str(info.value)
    for part in ("tell_general_streaming", "`datasets[0]`", "general.jsonl", "`type: alpaca`", "`datasets[1]`",
                 "chat.jsonl", "`type: chat_template`", "Fix:"):
        assert part in message, message
    assert not (tmp_path / "prepared").exists()


def test_a_streamed_rows_error_names_the_file_and_line_it_came_from(load_cfg, tiny_model, tmp_path):
    rows = alpaca_rows(40, 8)
    del rows[12]["instruction"]  # line 13 of other.jsonl; general.jsonl is valid
    other = write_jsonl(tmp_path / "other.jsonl", rows)
    path, _ = _two_streamed_entries(tmp_path, tiny_model, other, "alpaca", general_rows=300)
    from axolotl_tell import compat

    loaded = load_cfg(str(path))
    with pytest.raises(TellDataError) as info:
        prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))
    message = str(info.value)
    assert f"`datasets[1]` ({other})" in message and f"row 12 ({other}:13)" in message, message
    assert "general.jsonl" not in message, message


def test_streamed_entries_are_each_read_once_and_keep_their_source(load_cfg, tiny_model, tmp_path):
    other = write_jsonl(tmp_path / "other.jsonl", alpaca_rows(40, 8))
    path, _ = _two_streamed_entries(tmp_path, tiny_model, other, "alpaca", general_rows=300,
                                    tell_general_ratio=500, tell_general_shortfall="warn")
    from axolotl_tell import compat

    loaded = load_cfg(str(path))
    prepared = prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))
    assert prepared.report["general"]["rows_scanned"] == 340  # not the short entry over again until the long ends
    used = {}
    for source in prepared.train_dataset[SOURCE_COLUMN]:
        used[source] = used.get(source, 0) + 1
    assert used[0] == 300 and used[1] == 40  # every row once, under its own entry's source id


def _cut_in_half(folder: Path) -> Path:
    """What a full disk, a killed copy or a partial sync leaves: the chunk's Arrow file cut to half its size."""
    arrow = sorted(folder.rglob("data-*.arrow"))[0]  # the saved rows (not a `cache-*` file datasets adds later)
    data = arrow.read_bytes()
    arrow.write_bytes(data[:len(data) // 2])
    return arrow


@pytest.mark.parametrize("marker", ["with sizes", "older, without sizes"])
def test_a_damaged_token_cache_chunk_is_tokenized_again(load_cfg, tiny_model, tmp_path, monkeypatch,
                                                        count_tokenized, caplog, marker):
    import logging

    from axolotl_tell import cache

    monkeypatch.setattr(general_pool, "CHUNK_ROWS", 16)
    first = _prepare(load_cfg, tmp_path / "a", tiny_model, general_rows=600)
    token_cache = Path(first.report["general"]["token_cache"])
    chunk = token_cache / "chunk-000001"
    if marker != "with sizes":  # a cache saved before sizes were recorded: Arrow's own error finds the damage
        (chunk / cache.READY_MARKER).write_text(json.dumps({"plugin": "0"}))
    _cut_in_half(chunk)
    count_tokenized["rows"] = 0
    with caplog.at_level(logging.WARNING, logger="axolotl.tell"):
        again = _prepare(load_cfg, tmp_path / "a", tiny_model, general_rows=600, tell_general_ratio=3)
    assert f"token cache {token_cache}: chunk-000001 is damaged" in caplog.text
    g = again.report["general"]
    assert g["rows_from_token_cache"] == first.report["general"]["rows_scanned"] - 16
    assert count_tokenized["rows"] == g["rows_tokenized_now"] == g["rows_scanned"] - g["rows_from_token_cache"]
    fresh = _prepare(load_cfg, tmp_path / "b", tiny_model, general_rows=600, tell_general_ratio=3)
    assert _rows(again) == _rows(fresh)  # never a short pool: the same rows as a cache never damaged
    assert cache.damage(chunk) is None


def test_a_damaged_chunk_that_cannot_be_removed_names_the_cache_folder(load_cfg, tiny_model, tmp_path,
                                                                      monkeypatch):
    import shutil

    monkeypatch.setattr(general_pool, "CHUNK_ROWS", 16)
    first = _prepare(load_cfg, tmp_path, tiny_model, general_rows=600)
    token_cache = Path(first.report["general"]["token_cache"])
    _cut_in_half(token_cache / "chunk-000000")

    def refused(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refused)
    with pytest.raises(TellDataError) as info:
        _prepare(load_cfg, tmp_path, tiny_model, general_rows=600, tell_general_ratio=3)
    message = str(info.value)
    assert f"token cache {token_cache}" in message and f"Fix: delete {token_cache}" in message, message


@pytest.mark.e2e
def test_a_damaged_token_cache_through_axolotl_preprocess(tiny_model, tmp_path):
    """Issue 26 as a user met it: cut a chunk in half, preprocess again with another ratio."""
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, general_rows=3000)
    _axolotl("preprocess", str(cfg_path), cwd=tmp_path)
    token_cache, = [p for p in (tmp_path / "prepared").glob(f"{general_pool.GENERAL_CACHE_PREFIX}*") if p.is_dir()]
    _cut_in_half(token_cache / "chunk-000000")
    make_workspace(tmp_path, tiny_model, general_rows=3000, tell_general_ratio=3)
    log = _axolotl("preprocess", str(cfg_path), cwd=tmp_path)
    assert f"token cache {token_cache}: chunk-000000 is damaged" in log
    g = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())["general"]
    assert g["rows_tokenized_now"] > 0 and g["rows_used"] > 0
