"""Bad input fails fast: before any model is loaded, naming the key or `file:line`, with a fix, leaving no
prepared data behind.

One table, three stages (what `axolotl train` runs, in order, before it loads a model):

* ``config``: the error arises in ``load_cfg`` (the YAML is validated; nothing is read yet);
* ``data``: ``load_cfg`` passes and ``prepare_tell_datasets`` raises (data files are read and checked);
* ``env``: the environment is wrong (monkeypatched Axolotl version, unsupported Axolotl features); raised in
  ``load_cfg``.

The config-key cases of ``tests/test_config_errors.py`` are not repeated here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny import alpaca_rows, chat_rows, make_workspace, write_jsonl

# ---------------------------------------------------------------- data mutations (root, cfg) -> None


def _set(**values):
    def mutate(root, cfg):
        for key, value in values.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
    return mutate


def _task_entry(**values):
    def mutate(root, cfg):
        cfg["tell_task_datasets"][0].update(values)
    return mutate


def _edit_line(name: str, lineno: int, edit):
    """Replace line ``lineno`` (1-based) of ``root/name`` by ``edit(line_bytes)``."""
    def mutate(root, cfg):
        path = root / name
        lines = path.read_bytes().split(b"\n")
        lines[lineno - 1] = edit(lines[lineno - 1])
        path.write_bytes(b"\n".join(lines))
    return mutate


def _rows(name: str, edit):
    """Rewrite ``root/name`` (JSON Lines) as ``edit(rows)`` returns them."""
    def mutate(root, cfg):
        path = root / name
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))
    return mutate


def _drop_field(field: str, only_row: int | None = None):
    def edit(rows):
        for i, row in enumerate(rows):
            if only_row is None or i == only_row:
                row.pop(field, None)
        return rows
    return edit


def _write(name: str, data: bytes | str, entry: str = "tell_task_datasets", **entry_values):
    def mutate(root, cfg):
        path = root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        target = cfg[entry][0]
        target.update(path=str(path), **entry_values)
    return mutate


def _chat_task(edit_rows=None, **entry_values):
    def mutate(root, cfg):
        rows = chat_rows(10, 3)
        if edit_rows:
            edit_rows(rows)
        write_jsonl(root / "chat_task.jsonl", rows)
        cfg["tell_task_datasets"] = [{"path": str(root / "chat_task.jsonl"), "ds_type": "json",
                                      "type": "chat_template", **entry_values}]
    return mutate


def _anchor_file(data: bytes):
    def mutate(root, cfg):
        (root / "anchor.txt").write_bytes(data)
        cfg.pop("tell_anchor")
        cfg["tell_anchor_file"] = str(root / "anchor.txt")
    return mutate


def _general_rows(rows, **entry_values):
    def mutate(root, cfg):
        write_jsonl(root / "general.jsonl", rows)
        cfg["datasets"][0].update(entry_values)
    return mutate


def _both(*mutations):
    def mutate(root, cfg):
        for m in mutations:
            m(root, cfg)
    return mutate


def _task_json_array_with_bad_line(root, cfg):
    rows = [json.loads(line) for line in (root / "task.jsonl").read_text().splitlines()]
    text = json.dumps(rows, indent=2).splitlines()
    assert text[7].endswith(",")  # line 8: the second row's first field
    text[7] = text[7][:-1]  # -> line 9 lacks the ',' delimiter before it
    (root / "task.json").write_text("\n".join(text))
    cfg["tell_task_datasets"][0]["path"] = str(root / "task.json")


def _tokenized_export(rows: list[dict]) -> list[dict]:
    """Rows as a tokenized export leaves them: the text fields plus token columns."""
    return [{**row, "input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]} for row in rows]


def _task_parquet(root, cfg):
    from datasets import Dataset

    rows = [json.loads(line) for line in (root / "task.jsonl").read_text().splitlines()]
    Dataset.from_list(_tokenized_export(rows)).to_parquet(str(root / "task.parquet"))
    cfg["tell_task_datasets"][0].update(path=str(root / "task.parquet"), ds_type="parquet")


def _test_rows_tokenized(root, cfg):
    rows = [json.loads(line) for line in (root / "task.jsonl").read_text().splitlines()]
    write_jsonl(root / "task_test.jsonl", [{**r, "input_ids": [5, 6, 7]} for r in rows[:3]])  # ids only
    cfg["tell_task_test_datasets"] = [{"path": str(root / "task_test.jsonl"), "ds_type": "json", "type": "alpaca"}]


def _version(value: str):
    def mutate(root, cfg, monkeypatch):
        monkeypatch.setattr("axolotl_tell.compat.axolotl_version", lambda: value)
    return mutate


LONG_GENERAL = alpaca_rows(40, 5, words=120)
UNSUPERVISED_GENERAL = [{"messages": r["messages"][:1]} for r in chat_rows(40, 5)]

# (id, stage, mutation, regex the message must match: `{root}` is the workspace folder, escaped)
CASES = [
    # -- config keys: wrong types, empty, out of range, conflicting
    ("task datasets is a mapping", "config", _set(tell_task_datasets={"path": "t.jsonl", "type": "alpaca"}),
     r"`tell_task_datasets`: must be a list"),
    ("task entry is a string", "config", _set(tell_task_datasets=["task.jsonl"]), r"tell_task_datasets\[0\]"),
    ("task type unsupported", "config", _task_entry(type="pygmalion"),
     r"tell_task_datasets\[0\]\.type`: dataset type 'pygmalion' is not supported"),
    ("task type is a mapping", "config", _task_entry(type={"field_instruction": "q"}),
     r"tell_task_datasets\[0\]\.type`: must be a type name"),
    ("anchor is a list", "config", _set(tell_anchor=["one", "two"]), r"`tell_anchor`: must be a string"),
    ("anchor file is empty", "config", _anchor_file(b"  \n"), r"`tell_anchor_file`: .*anchor\.txt is empty"),
    ("anchor file not UTF-8", "config", _anchor_file(b"You classify.\nCaf\xe9 notes\n"),
     r"`tell_anchor_file`: .*anchor\.txt:2 is not UTF-8"),
    ("ratio infinite", "config", _set(tell_general_ratio=float("inf")), r"`tell_general_ratio`: must be a finite"),
    ("ratio NaN", "config", _set(tell_general_ratio=float("nan")), r"`tell_general_ratio`: must be a finite"),
    ("ratio boolean", "config", _set(tell_general_ratio=True), r"`tell_general_ratio`"),
    ("ratio list", "config", _set(tell_general_ratio=[1, 2]), r"`tell_general_ratio`"),
    ("tokens fractional", "config", _set(tell_general_ratio=None, tell_general_tokens=1.5), r"`tell_general_tokens`"),
    ("tokens string", "config", _set(tell_general_ratio=None, tell_general_tokens="1M"), r"`tell_general_tokens`"),
    ("repeats fractional", "config", _set(tell_task_repeats=2.5), r"`tell_task_repeats`"),
    ("repeats negative", "config", _set(tell_task_repeats=-1), r"`tell_task_repeats`"),
    ("repeats boolean", "config", _set(tell_task_repeats=True), r"`tell_task_repeats`"),
    ("ratio absurdly large", "config", _set(tell_general_ratio=1e12),
     r"`tell_general_ratio`: 1000000000000\.0 is more than the maximum of 1,000,000"),
    ("repeats a million", "config", _set(tell_task_repeats=1_000_000),
     r"`tell_task_repeats`: 1000000 is more than the maximum of 10,000"),
    ("seed negative", "config", _set(seed=-1), r"`seed`: must be an integer >= 0, got -1"),
    ("seed not an integer", "config", _set(seed="seven"), r"`seed`: must be an integer >= 0, got 'seven'"),
    ("separator not a string", "config", _set(tell_anchor_separator=5), r"`tell_anchor_separator`"),
    ("system placement on completion", "config", _both(_task_entry(type="completion"),
                                                       _set(tell_anchor_placement="system")),
     r"`tell_anchor_placement`: `system` does not fit `tell_task_datasets\[0\]`"),
    ("system placement on alpaca", "config", _set(tell_anchor_placement="system"), r"`tell_anchor_placement`"),
    ("eval rows negative", "config", _set(tell_task_eval_rows=-1), r"`tell_task_eval_rows`"),
    ("eval rows and eval sets", "config",
     _set(tell_task_eval_rows=2, tell_task_test_datasets=[{"path": "t.jsonl", "type": "alpaca"}]),
     r"`tell_task_eval_rows`: both"),
    ("eval sets not a list", "config", _set(tell_task_test_datasets="t.jsonl"), r"`tell_task_test_datasets`"),
    ("eval metric unknown", "config", _set(tell_task_eval_rows=2, tell_eval_generate="bleu"), r"`tell_eval_generate`"),
    ("eval metric without rows", "config", _set(tell_eval_generate="exact_match"),
     r"`tell_eval_generate`: there are no task eval rows"),
    ("eval metric on completion rows", "config",
     _both(_task_entry(type="completion"), _set(tell_task_eval_rows=2, tell_eval_generate="exact_match")),
     r"`tell_eval_generate`: `type: completion` task rows have no separate answer"),
    ("eval max tokens zero", "config", _set(tell_eval_max_new_tokens=0), r"`tell_eval_max_new_tokens`"),
    ("source metrics not a boolean", "config", _set(tell_source_metrics="sometimes"), r"`tell_source_metrics`"),
    ("bake with alpaca task data", "config", _set(tell_bake_anchor=True),
     r"`tell_bake_anchor`: needs the anchor as a system turn"),
    ("auto-anchor key without auto", "config", _set(tell_anchor_examples=4), r"`tell_anchor_examples`"),
    ("auto template without examples", "config", _set(tell_anchor="auto", tell_anchor_template="Describe it."),
     r"`tell_anchor_template`"),
    ("auto token budget zero", "config", _set(tell_anchor="auto", tell_anchor_max_tokens=0),
     r"`tell_anchor_max_tokens`"),
    ("epochs not a number", "config", _set(num_epochs="one"), r"`num_epochs`"),
    ("epochs zero", "config", _set(num_epochs=0), r"`num_epochs`"),
    ("val_set_size negative", "config", _set(val_set_size=-0.1), r"`val_set_size`"),
    # -- environment: Axolotl version, Axolotl features TELL cannot plan around
    ("axolotl too old", "env", _version("0.18.2"), r"axolotl 0\.18\.2 is not supported"),
    ("axolotl too new", "env", _version("0.22.0"), r"axolotl 0\.22\.0 is not supported"),
    ("axolotl not installed", "env", _version("missing"), r"axolotl missing is not supported"),
    ("pretraining_dataset", "env", _set(pretraining_dataset=[{"path": "c4", "type": "pretrain"}]),
     r"`pretraining_dataset`: not supported"),
    ("preference training", "env", _set(rl="dpo"), r"`rl`: not supported"),
    ("skip_prepare_dataset", "env", _set(skip_prepare_dataset=True), r"`skip_prepare_dataset`: not supported"),
    ("PoSE", "env", _set(use_pose=True), r"`use_pose`: not supported"),
    # -- data: missing files, malformed lines, bytes, columns, empty, rows that cannot train
    ("task file missing", "data", _task_entry(path="{root}/missing_task.jsonl"),
     r"`tell_task_datasets\[0\]`.*file not found: {root}/missing_task\.jsonl"),
    ("general file missing", "data", lambda root, cfg: cfg["datasets"][0].update(path=str(root / "gone.jsonl")),
     r"`datasets\[0\]`.*file not found: {root}/gone\.jsonl"),
    ("task line malformed", "data", _edit_line("task.jsonl", 4, lambda b: b[:-7]),
     r"`tell_task_datasets\[0\]`.*{root}/task\.jsonl:4: not valid JSON"),
    ("general line malformed", "data", _edit_line("general.jsonl", 7, lambda b: b + b","),
     r"`datasets\[0\]`.*{root}/general\.jsonl:7: not valid JSON"),
    ("task bytes not UTF-8", "data", _edit_line("task.jsonl", 5, lambda b: b.replace(b"Turn", b"T\xfcrn")),
     r"{root}/task\.jsonl:5: byte \d+ of the line \(b'\\xfc'\) is not UTF-8"),
    ("general bytes not UTF-8", "data", _edit_line("general.jsonl", 3, lambda b: b[:20] + b"\xc3\x28" + b[20:]),
     r"`datasets\[0\]`.*{root}/general\.jsonl:3: byte 21 .* is not UTF-8"),
    ("task line not an object", "data", _edit_line("task.jsonl", 2, lambda b: b"[1, 2, 3]"),
     r"{root}/task\.jsonl:2: a JSON list, not an object"),
    ("task .json array malformed", "data", _task_json_array_with_bad_line,
     r"{root}/task\.json:9: not valid JSON \(Expecting ',' delimiter"),
    ("task column missing", "data", _rows("task.jsonl", _drop_field("output")),
     r"`tell_task_datasets\[0\]`.*the rows have no \['output'\] field for `type: alpaca`"),
    ("task field missing in one row", "data", _rows("task.jsonl", _drop_field("output", only_row=6)),
     r"row 6 \({root}/task\.jsonl:7\) has no value for `output`"),
    ("general column missing", "data", _rows("general.jsonl", _drop_field("instruction")),
     r"`datasets\[0\]`.*no \['instruction'\] field"),
    ("chat field_messages wrong", "data", _chat_task(field_messages="conversations"),
     r"`tell_task_datasets\[0\]`.*no \['conversations'\] field for `type: chat_template`"),
    ("task file empty", "data", _write("empty.jsonl", b""), r"`tell_task_datasets\[0\]`.*empty\.jsonl is an empty file"),
    ("task file blank lines only", "data", _write("blank.jsonl", "\n  \n\n"), r"blank\.jsonl has no rows"),
    ("general JSON array empty", "data", _write("general.json", "[]", entry="datasets"), r"`datasets\[0\]`.*has no rows"),
    ("chat row without messages", "data", _chat_task(lambda rows: rows[6].update(messages=[])),
     r"row 6 \({root}/chat_task\.jsonl:7\): a chat task row has no messages"),
    ("chat row empty after templating", "data", _chat_task(lambda rows: rows[4].update(messages=rows[4]["messages"][:1])),
     r"row 4: no supervised tokens after templating .*\({root}/chat_task\.jsonl:5\)"),
    ("anchored rows over sequence_len", "data", _set(tell_anchor="You turn statements into questions. " * 30),
     r"row 0: \d+ tokens > sequence_len 256 \({root}/task\.jsonl:1\)"),
    ("all general rows over sequence_len", "data", _both(_general_rows(LONG_GENERAL), _set(sequence_len=230)),
     r"`datasets:`: all 40 general rows are longer than `sequence_len: 230`"),
    ("no general row trains", "data", _general_rows(UNSUPERVISED_GENERAL, type="chat_template"),
     r"`datasets:`: none of the 40 general rows has a supervised token"),
    ("upsampled plan too large", "data",
     _set(tell_general_ratio=None, tell_general_tokens=10**12, tell_general_shortfall="upsample"),
     r"cannot build the mix: the plan would hold about [\d,]+ rows, more than the maximum of 50,000,000: "
     r"10 task rows x 3 repeats = 30 task occurrences.*Fix: lower `tell_general_ratio`"),
    ("task rows tokenized (JSON Lines)", "data", _rows("task.jsonl", _tokenized_export),
     r"`tell_task_datasets\[0\]` \({root}/task\.jsonl\): the rows carry token columns "
     r"\['input_ids', 'attention_mask', 'labels'\] .*Fix: drop the columns"),
    ("task rows tokenized (parquet)", "data", _task_parquet,
     r"`tell_task_datasets\[0\]` \({root}/task\.parquet\): the rows carry token columns "
     r"\['input_ids', 'attention_mask', 'labels'\]"),
    ("task test rows tokenized", "data", _test_rows_tokenized,
     r"`tell_task_test_datasets\[0\]` \({root}/task_test\.jsonl\): the rows carry token columns \['input_ids'\]"),
    ("anchor holds the eos token", "data", _set(tell_anchor="Answer in one word, then write <|im_end|>."),
     r"`tell_anchor`: the anchor contains the tokenizer's special token '<\|im_end\|>', which becomes that one "
     r"control token .*Fix: .*\(e\.g\. '<\| im_end \|>'"),
    ("anchor file holds a special token", "data", _anchor_file(b"Pad the answer with <pad> tokens.\n"),
     r"`tell_anchor_file`: the anchor contains the tokenizer's special token '<pad>'"),
    ("eval rows leave no task row", "data", _set(tell_task_eval_rows=10), r"`tell_task_eval_rows: 10` leaves no task row"),
]


@pytest.fixture(scope="module")
def load_cfg():
    from axolotl.cli.config import load_cfg

    return load_cfg


@pytest.fixture
def model_loads(monkeypatch):
    """Every model load (``PreTrainedModel.from_pretrained``) attempted during the test, refused."""
    from transformers import PreTrainedModel

    calls = []

    def refuse(cls, *args, **kwargs):
        calls.append((cls.__name__, args[:1]))
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    return calls


def assert_nothing_prepared(root: Path) -> None:
    prepared = root / "prepared"
    if not prepared.exists():
        return
    ready = [p for p in prepared.glob("tell-*") if p.is_dir() and (p / "tell_ready.json").exists()]
    leftovers = [p for p in prepared.iterdir() if p.name.startswith(".tmp-")]
    assert not ready and not leftovers, (ready, leftovers)


def _fill(value, root: Path):
    """``{root}`` in config values -> the workspace folder."""
    if isinstance(value, str):
        return value.replace("{root}", str(root))
    if isinstance(value, list):
        return [_fill(v, root) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, root) for k, v in value.items()}
    return value


def _run_case(load_cfg, tiny_model, root: Path, stage: str, mutate, monkeypatch) -> str:
    from axolotl_tell import compat
    from axolotl_tell.prepare import prepare_tell_datasets

    path, cfg = make_workspace(root, tiny_model)
    if stage == "env" and mutate.__code__.co_argcount == 3:
        mutate(root, cfg, monkeypatch)
    else:
        mutate(root, cfg)
    path.write_text(yaml.safe_dump(_fill(cfg, root), sort_keys=False))
    if stage in ("config", "env"):
        with pytest.raises(Exception) as info:
            load_cfg(str(path))
        return str(info.value)
    loaded = load_cfg(str(path))  # the config itself is fine
    with pytest.raises(Exception) as info:
        prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))
    return str(info.value)


def test_the_table_is_big_enough():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1] for c in CASES} == {"config", "env", "data"}


@pytest.mark.parametrize("name,stage,mutate,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_fast_naming_where_and_fix(load_cfg, tiny_model, tmp_path, monkeypatch, model_loads,
                                                   name, stage, mutate, pattern):
    message = _run_case(load_cfg, tiny_model, tmp_path, stage, mutate, monkeypatch)
    expected = pattern.replace("{root}", re.escape(str(tmp_path)))
    assert re.search(expected, message, re.S), f"{name}: {message}"
    assert "Fix:" in message, message
    assert "[axolotl_tell]" in message, message
    assert model_loads == []
    assert_nothing_prepared(tmp_path)


def test_a_bad_task_file_is_found_before_the_general_data_is_tokenized(load_cfg, tiny_model, tmp_path, monkeypatch):
    """Every local file is checked before any tokenization, so a bad task line fails in seconds."""
    from axolotl_tell import compat, prepare

    path, cfg = make_workspace(tmp_path, tiny_model)
    _edit_line("task.jsonl", 3, lambda b: b"{oops")(tmp_path, cfg)
    tokenized = []
    real = compat.tokenize_with_axolotl
    monkeypatch.setattr(compat, "tokenize_with_axolotl", lambda *a, **k: tokenized.append(1) or real(*a, **k))
    loaded = load_cfg(str(path))
    with pytest.raises(prepare.TellDataError, match=re.escape(f"{tmp_path}/task.jsonl:3")):
        prepare.prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))
    assert tokenized == []


@pytest.mark.parametrize("key", ["dataset_prepared_path", "output_dir"])
def test_a_folder_that_cannot_be_written_is_refused_before_tokenizing(load_cfg, tiny_model, tmp_path, monkeypatch, key):
    """Tests run as root, where permission bits do not stop a write: a regular file in the path does, for anyone."""
    from axolotl_tell import compat, prepare

    path, cfg = make_workspace(tmp_path, tiny_model)
    (tmp_path / "blocked").write_text("a file, not a folder")
    cfg[key] = str(tmp_path / "blocked" / "sub")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    loaded = load_cfg(str(path))
    tokenized = []
    real = compat.tokenize_with_axolotl
    monkeypatch.setattr(compat, "tokenize_with_axolotl", lambda *a, **k: tokenized.append(1) or real(*a, **k))
    with pytest.raises(prepare.TellDataError) as info:
        prepare.prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))
    message = str(info.value)
    assert re.search(rf"^\[axolotl_tell\] `{key}` \({re.escape(str(tmp_path))}/blocked/sub\): cannot write there "
                     r"\((FileExistsError|NotADirectoryError)", message), message
    assert f"Fix: point `{key}` at a folder you can write to" in message
    assert tokenized == []


def test_the_file_check_accepts_what_axolotl_reads(tmp_path):
    """JSON Lines with blank lines and a BOM, a pretty-printed .json array, a .json object (`field`)."""
    from axolotl.utils.dict import DictDefault

    from axolotl_tell.datacheck import check_json_file, check_local_data

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\n\n{"a": "\xc3\xa9"}\n   \n')
    assert check_json_file(jsonl, "x") == 2
    array = tmp_path / "rows.json"
    array.write_text(json.dumps([{"a": 1}, {"a": 2}, {"a": 3}], indent=2))
    assert check_json_file(array, "x") == 3
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"data": [{"a": 1}]}, indent=2))
    assert check_json_file(doc, "x") == -1
    lines_in_json = tmp_path / "lines.json"
    lines_in_json.write_text('{"a": 1}\n{"a": 2}\n')
    assert check_json_file(lines_in_json, "x") == 2
    check_local_data(DictDefault({"path": "tatsu-lab/alpaca"}), "x")  # a hub name is not a missing file
    check_local_data(DictDefault({"path": str(tmp_path), "ds_type": "json"}), "x")  # a folder: its JSON files


@pytest.mark.e2e
def test_axolotl_train_stops_before_loading_the_model(tiny_model, tmp_path):
    """`axolotl train` itself: the malformed line is reported with file:line and the model is never loaded."""
    path, cfg = make_workspace(tmp_path, tiny_model)
    _edit_line("general.jsonl", 11, lambda b: b[: len(b) // 2])(tmp_path, cfg)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(bin_dir / "axolotl"), "train", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{tmp_path}/general.jsonl:11: not valid JSON" in log and "Fix:" in log, log[-3000:]
    assert "LlamaForCausalLM" not in log and "trainable params" not in log, log[-3000:]
    assert not (Path(cfg["output_dir"]) / "adapter_model.safetensors").exists()
    assert_nothing_prepared(tmp_path)
