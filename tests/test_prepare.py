"""The TELL mix as prepared through Axolotl's own loaders (in-process, tiny model)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny import alpaca_rows, make_workspace, write_jsonl

from axolotl_tell.plan import plan_sha256
from axolotl_tell.prepare import SOURCE_COLUMN, TellDataError, prepare_tell_datasets

ANCHOR = "You turn statements into questions about animals."


@pytest.fixture(scope="module")
def load_cfg():
    from axolotl.cli.config import load_cfg

    return load_cfg


def _prepare(load_cfg, root: Path, model: Path, **kw):
    from axolotl_tell import compat

    path, _ = make_workspace(root, model, **kw)
    cfg = load_cfg(str(path))
    tokenizer = compat.load_tokenizer(cfg)
    return cfg, tokenizer, prepare_tell_datasets(cfg, tokenizer)


def _first_supervised(labels) -> int:
    return next(i for i, v in enumerate(labels) if v != -100)


def _rows(ds, source: int):
    return [r for r in ds if r[SOURCE_COLUMN] == source]


def test_alpaca_anchor_is_prompt_and_counts_match_report(load_cfg, tiny_model, tmp_path):
    cfg, tok, prepared = _prepare(load_cfg, tmp_path, tiny_model, task="alpaca")
    ds, report = prepared.train_dataset, prepared.report
    task_rows = _rows(ds, 1)
    assert len(task_rows) == report["task"]["occurrences"] == 10 * 3
    # every distinct task row occurs exactly `repeats` times
    assert set(Counter(tuple(r["input_ids"]) for r in task_rows).values()) == {3}
    for row in task_rows:
        cut = _first_supervised(row["labels"])
        assert ANCHOR in tok.decode(row["input_ids"][:cut])
        assert ANCHOR not in tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100])
    general_rows = _rows(ds, 0)
    assert all(ANCHOR not in tok.decode(r["input_ids"]) for r in general_rows)
    assert len(general_rows) == report["general"]["rows_used"]
    sup = lambda rows: sum(sum(1 for v in r["labels"] if v != -100) for r in rows)  # noqa: E731
    assert sup(task_rows) == report["task"]["supervised_tokens"]
    assert sup(general_rows) == report["general"]["supervised_tokens"]
    assert report["ratio"]["achieved"] >= report["ratio"]["requested"] == 2
    assert report["anchor"] == {"text": ANCHOR, "placement": "prefix", "placement_requested": "auto",
                                "separator": "\n\n", "source": "config"}
    saved = np.load(prepared.path / "plan_order.npy")
    assert plan_sha256(saved) == report["plan_sha256"]


def test_general_rows_are_exactly_plain_axolotl_rows(load_cfg, tiny_model, tmp_path):
    from axolotl.utils.data import prepare_datasets

    from axolotl_tell import compat

    cfg, tok, prepared = _prepare(load_cfg, tmp_path / "tell", tiny_model)
    plain_path, plain = make_workspace(tmp_path / "plain", tiny_model)
    for key in [k for k in plain if k.startswith("tell_")] + ["plugins"]:
        plain.pop(key)
    plain_path.write_text(yaml.safe_dump(plain))
    plain_cfg = load_cfg(str(plain_path))
    plain_train, _, _, _ = prepare_datasets(plain_cfg, compat.load_tokenizer(plain_cfg))
    plain_rows = {(tuple(r["input_ids"]), tuple(r["labels"])) for r in plain_train}
    ours = [(tuple(r["input_ids"]), tuple(r["labels"])) for r in _rows(prepared.train_dataset, 0)]
    assert ours and set(ours) <= plain_rows


def test_chat_template_anchor_is_the_system_turn(load_cfg, tiny_model, tmp_path):
    _, tok, prepared = _prepare(load_cfg, tmp_path, tiny_model, task="chat_template")
    assert prepared.report["anchor"]["placement"] == "system"
    for row in _rows(prepared.train_dataset, 1):
        text = tok.decode(row["input_ids"])
        assert text.startswith(f"<|im_start|>system\n{ANCHOR}<|im_end|>\n<|im_start|>user\n")
        assert "You are a helpful assistant." not in text  # the template's default system is replaced
        cut = _first_supervised(row["labels"])
        assert ANCHOR in tok.decode(row["input_ids"][:cut])


def test_chat_template_prefix_placement(load_cfg, tiny_model, tmp_path):
    _, tok, prepared = _prepare(load_cfg, tmp_path, tiny_model, task="chat_template",
                                tell_anchor_placement="prefix")
    for row in _rows(prepared.train_dataset, 1):
        assert f"<|im_start|>user\n{ANCHOR}\n\n" in tok.decode(row["input_ids"])


def test_completion_anchor_segment_is_masked(load_cfg, tiny_model, tmp_path):
    _, tok, prepared = _prepare(load_cfg, tmp_path, tiny_model, task="completion")
    anchor_ids = tok(ANCHOR + "\n\n", add_special_tokens=False)["input_ids"]
    for row in _rows(prepared.train_dataset, 1):
        ids, labels = row["input_ids"], row["labels"]
        assert ids[: len(anchor_ids)] == anchor_ids
        assert labels[: len(anchor_ids)] == [-100] * len(anchor_ids)
        assert all(v != -100 for v in labels[len(anchor_ids):])


def test_cache_is_reused_only_for_identical_inputs(load_cfg, tiny_model, tmp_path):
    _, _, first = _prepare(load_cfg, tmp_path, tiny_model)
    assert not first.from_cache
    _, _, again = _prepare(load_cfg, tmp_path, tiny_model)
    assert again.from_cache and again.path == first.path
    assert again.report["plan_sha256"] == first.report["plan_sha256"]
    paths = {first.path}
    for change in ({"seed": 8}, {"tell_anchor": "Another anchor."}, {"tell_general_ratio": 3},
                   {"tell_spread": "random"}, {"tell_task_repeats": 4}):
        _, _, other = _prepare(load_cfg, tmp_path, tiny_model, **change)
        assert not other.from_cache, change
        assert other.path not in paths, change
        paths.add(other.path)
    # editing the task file (same path) also invalidates the prepared mix
    write_jsonl(tmp_path / "task.jsonl", alpaca_rows(10, 99))
    cfg_path = tmp_path / "config.yml"
    cfg = load_cfg(str(cfg_path))
    from axolotl_tell import compat

    edited = prepare_tell_datasets(cfg, compat.load_tokenizer(cfg))
    assert not edited.from_cache


def test_seed_changes_the_plan_but_not_the_counts(load_cfg, tiny_model, tmp_path):
    _, _, a = _prepare(load_cfg, tmp_path / "a", tiny_model, seed=1)
    _, _, b = _prepare(load_cfg, tmp_path / "b", tiny_model, seed=2)
    assert a.report["plan_sha256"] != b.report["plan_sha256"]
    assert a.report["task"] == b.report["task"]


def test_a_crashed_save_leaves_nothing_loadable(load_cfg, tiny_model, tmp_path, monkeypatch):
    from datasets import Dataset

    def boom(self, *a, **k):
        raise RuntimeError("killed midway")

    monkeypatch.setattr(Dataset, "save_to_disk", boom)
    with pytest.raises(RuntimeError, match="killed midway"):
        _prepare(load_cfg, tmp_path, tiny_model)
    monkeypatch.undo()
    prepared_root = tmp_path / "prepared"
    assert not [p for p in prepared_root.iterdir() if p.is_dir() and not p.name.startswith("tell-general-")]
    assert not list(prepared_root.glob("tell-general-*/*/tell_ready.json"))  # no general token chunk either
    _, _, prepared = _prepare(load_cfg, tmp_path, tiny_model)
    assert not prepared.from_cache


def test_a_killed_save_leaves_no_temp_folder_forever(tmp_path):
    """A SIGKILL skips the cleanup in `save_atomically`; the next save of the same target (under its lock) does it."""
    from axolotl_tell.cache import READY_MARKER, save_atomically

    target = tmp_path / "tell-0123456789abcdef0123"
    killed = [tmp_path / f".tmp-{target.name}-k1ll3d", tmp_path / f".tmp-{target.name}-0ther"]
    for folder in killed:
        (folder / "train").mkdir(parents=True)
    other_target = tmp_path / ".tmp-tell-fffffffffffffffffff0-x"  # another key's save: not ours to remove
    other_target.mkdir()
    save_atomically(target, lambda tmp: (tmp / "data.txt").write_text("ok"))
    assert (target / READY_MARKER).is_file() and (target / "data.txt").read_text() == "ok"
    assert not any(folder.exists() for folder in killed)
    assert other_target.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, other_target.name])


def test_a_saved_folder_knows_when_its_files_were_cut_or_lost(tmp_path):
    """`cache.damage`: each file's size is recorded in the marker at save time; a stat per file checks it."""
    from axolotl_tell.cache import READY_MARKER, damage, save_atomically

    target = tmp_path / "tell-0123456789abcdef0123"
    save_atomically(target, lambda tmp: ((tmp / "rows").mkdir(), (tmp / "rows" / "data.arrow").write_bytes(b"x" * 100),
                                         (tmp / "stats.json").write_text("{}")))
    assert damage(target) is None
    (target / "rows" / "data.arrow").write_bytes(b"x" * 50)
    assert damage(target) == "rows/data.arrow is 50 bytes, 100 when saved"
    (target / "rows" / "data.arrow").write_bytes(b"x" * 100)
    assert damage(target) is None
    (target / "stats.json").unlink()
    assert "stats.json" in damage(target)
    (target / READY_MARKER).write_text('{"plugin": "0.1')  # the marker itself cut short
    assert "tell_ready.json" in damage(target)
    (target / READY_MARKER).write_text('{"plugin": "0.1"}')  # an older save: no sizes to check
    assert damage(target) is None


def test_a_damaged_prepared_mix_is_built_again(load_cfg, tiny_model, tmp_path, caplog):
    import logging

    _, _, first = _prepare(load_cfg, tmp_path, tiny_model)
    ids = first.train_dataset["input_ids"]  # read before the cut: the file is memory-mapped
    arrow = sorted((first.path / "train").glob("data-*.arrow"))[0]
    arrow.write_bytes(arrow.read_bytes()[:arrow.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="axolotl.tell"):
        _, _, again = _prepare(load_cfg, tmp_path, tiny_model)
    assert f"prepared TELL mix {first.path} is damaged" in caplog.text
    assert not again.from_cache and again.path == first.path
    assert again.train_dataset["input_ids"] == ids


def test_task_rows_that_already_hold_the_anchor_are_named_in_a_warning(load_cfg, tiny_model, tmp_path, caplog):
    from tiny import task_alpaca_rows

    from axolotl_tell import compat

    path, _ = make_workspace(tmp_path, tiny_model)
    rows = task_alpaca_rows(10)
    for row in rows[:4]:  # anchored by hand already: TELL adds the anchor a second time
        row["instruction"] = f"{ANCHOR}\n\n{row['instruction']}"
    write_jsonl(tmp_path / "task.jsonl", rows)
    cfg = load_cfg(str(path))
    tok = compat.load_tokenizer(cfg)
    with caplog.at_level("WARNING", logger="axolotl.tell"):
        prepared = prepare_tell_datasets(cfg, tok)
    warnings = [r.getMessage() for r in caplog.records if "already contain the anchor" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert f"`tell_task_datasets[0]` ({tmp_path}/task.jsonl): 4 of 10 task rows already contain" in warnings[0]
    assert "Fix:" in warnings[0]
    twice = [r for r in _rows(prepared.train_dataset, 1) if tok.decode(r["input_ids"]).count(ANCHOR) == 2]
    assert len(twice) == 4 * 3  # what the warning is about: 4 rows x 3 repeats hold it twice


def test_over_long_task_rows_are_an_error_not_a_silent_drop(load_cfg, tiny_model, tmp_path):
    with pytest.raises(TellDataError, match=r"row \d+: \d+ tokens > sequence_len 64"):
        _prepare(load_cfg, tmp_path, tiny_model, sequence_len=64)


def test_general_shortfall_error_warn_upsample(load_cfg, tiny_model, tmp_path):
    with pytest.raises(TellDataError, match="tell_general_shortfall"):
        _prepare(load_cfg, tmp_path / "e", tiny_model, general_rows=5, tell_general_ratio=50)
    _, _, warn = _prepare(load_cfg, tmp_path / "w", tiny_model, general_rows=5, tell_general_ratio=50,
                          tell_general_shortfall="warn")
    assert warn.report["general"]["rows_used"] == 5 and warn.report["ratio"]["achieved"] < 50
    assert warn.report["warnings"]
    _, _, up = _prepare(load_cfg, tmp_path / "u", tiny_model, general_rows=5, tell_general_ratio=50,
                        tell_general_shortfall="upsample")
    assert up.report["ratio"]["achieved"] >= 50 and up.report["general"]["occurrences"] > 5


def test_empty_task_file_is_an_error(load_cfg, tiny_model, tmp_path):
    path, cfg = make_workspace(tmp_path, tiny_model)
    Path(cfg["tell_task_datasets"][0]["path"]).write_text("")
    from axolotl_tell import compat

    loaded = load_cfg(str(path))
    with pytest.raises(Exception, match=r"tell_task_datasets\[0\]|no rows|empty"):
        prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))


def test_packed_order_survives_axolotl_sequential_multipack(load_cfg, tiny_model, tmp_path):
    from axolotl.utils.samplers.multipack import MultipackBatchSampler
    from axolotl.utils.samplers.utils import get_dataset_lengths
    from torch.utils.data import SequentialSampler

    cfg, _, prepared = _prepare(load_cfg, tmp_path, tiny_model, sample_packing=True)
    assert cfg.curriculum_sampling and cfg.sample_packing_sequentially
    ds = prepared.train_dataset
    sampler = MultipackBatchSampler(SequentialSampler(ds), lengths=get_dataset_lengths(ds), batch_max_len=512,
                                    batch_size=1, bin_size=200, sequential=True, drop_last=False)
    seen = [i for batch in sampler for pack in batch for i in pack]
    assert seen == list(range(len(ds)))


def test_unpacked_config_turns_on_sequential_sampling(load_cfg, tiny_model, tmp_path):
    path, _ = make_workspace(tmp_path, tiny_model)
    cfg = load_cfg(str(path))
    assert cfg.curriculum_sampling is True and cfg.dataloader_drop_last is False


@pytest.mark.parametrize("task", ["alpaca", "chat_template", "completion"])
def test_inference_prompt_matches_training_tokens(load_cfg, tiny_model, tmp_path, task):
    from axolotl_tell.prompting import prompt_ids_many
    from axolotl_tell.report import inference_spec

    cfg, tok, prepared = _prepare(load_cfg, tmp_path, tiny_model, task=task)
    spec = json.loads(json.dumps(inference_spec(prepared.report, cfg)))
    raw = [json.loads(line) for line in Path(cfg.tell_task_datasets[0]["path"]).read_text().splitlines()]
    prompts = prompt_ids_many(spec, tok, raw)
    trained = {tuple(r["input_ids"]) for r in _rows(prepared.train_dataset, 1)}
    for prompt in prompts:
        assert any(ids[: len(prompt)] == tuple(prompt) for ids in trained)
        if task != "completion":
            assert any(ids[: len(prompt)] == tuple(prompt) and _first_supervised(lab) == len(prompt)
                       for ids, lab in ((tuple(r["input_ids"]), r["labels"]) for r in _rows(prepared.train_dataset, 1)))


@pytest.mark.parametrize("task", ["alpaca", "chat_template", "completion"])
def test_the_tell_json_the_plugin_writes_passes_its_own_validation(load_cfg, tiny_model, tmp_path, task):
    from axolotl_tell.prompting import load_spec
    from axolotl_tell.report import INFERENCE_FILE, SPEC_KEYS, inference_spec, write_json

    cfg, _, prepared = _prepare(load_cfg, tmp_path, tiny_model, task=task)
    write_json(tmp_path / "out" / INFERENCE_FILE, inference_spec(prepared.report, cfg))  # what training writes
    spec = load_spec(tmp_path / "out")
    assert spec == json.loads(json.dumps(inference_spec(prepared.report, cfg), default=str))
    assert set(spec) == set(SPEC_KEYS) - {"kept"}  # `kept`: written only after tell_keep_best chose a checkpoint
    kept = {**spec, "kept": {"step": 12, "metric": "eval_tell/exact_match", "value": 0.65}}
    write_json(tmp_path / "out" / INFERENCE_FILE, kept)
    assert load_spec(tmp_path / "out") == kept


def test_a_jinja_template_file_is_written_into_tell_json_as_text(load_cfg, tiny_model, tmp_path):
    """Axolotl reads `chat_template_jinja` from a file path; tell.json holds the text (it names no file to read)."""
    from tiny import CHATML

    from axolotl_tell.prompting import load_spec, prompt_ids_many
    from axolotl_tell.report import INFERENCE_FILE, inference_spec, write_json

    template = tmp_path / "template.jinja"
    template.write_text(CHATML.replace("You are a helpful assistant.", "You help."))
    cfg, tok, prepared = _prepare(load_cfg, tmp_path, tiny_model, task="chat_template", chat_template="jinja",
                                  chat_template_jinja=str(template))
    write_json(tmp_path / "out" / INFERENCE_FILE, inference_spec(prepared.report, cfg))
    spec = load_spec(tmp_path / "out")
    assert spec["chat_template"] == "jinja" and spec["chat_template_jinja"] == template.read_text()
    template.unlink()  # inference needs the file no more
    raw = [json.loads(line) for line in Path(cfg.tell_task_datasets[0]["path"]).read_text().splitlines()]
    trained = {tuple(r["input_ids"]) for r in _rows(prepared.train_dataset, 1)}
    for prompt in prompt_ids_many(spec, tok, raw):
        assert any(ids[: len(prompt)] == tuple(prompt) for ids in trained)


def test_anchored_type_in_datasets_gives_the_same_task_tokens(load_cfg, tiny_model, tmp_path):
    """`type: axolotl_tell.anchored.alpaca` (anchored SFT, no mix) tokenizes like the TELL task path."""
    from axolotl.utils.data import prepare_datasets

    from axolotl_tell import compat

    _, _, prepared = _prepare(load_cfg, tmp_path / "tell", tiny_model)
    path, cfg = make_workspace(tmp_path / "sft", tiny_model)
    cfg["datasets"] = [{**cfg["tell_task_datasets"][0], "type": "axolotl_tell.anchored.alpaca"}]
    cfg.pop("tell_task_datasets")
    path.write_text(yaml.safe_dump(cfg))
    sft_cfg = load_cfg(str(path))
    train, _, _, _ = prepare_datasets(sft_cfg, compat.load_tokenizer(sft_cfg))
    assert {tuple(r["input_ids"]) for r in train} == {tuple(r["input_ids"]) for r in _rows(prepared.train_dataset, 1)}
