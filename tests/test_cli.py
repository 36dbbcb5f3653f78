"""`axolotl-tell preview | infer | bake` on the tiny model (in-process: the CLI's own `main`)."""

from __future__ import annotations

import json
import re

import pytest
from tiny import make_workspace

from axolotl_tell import cli
from axolotl_tell.prepare import SOURCE_COLUMN


def _as_trained(path, cfg) -> dict:
    """What `axolotl train` leaves next to the adapter: tell.json (preview and preprocess never write it)."""
    from pathlib import Path

    from axolotl_tell.report import INFERENCE_FILE, inference_spec, write_json

    loaded = cli._load_cfg(str(path))
    report = json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())
    spec = inference_spec(report, loaded)
    write_json(Path(cfg["output_dir"]) / INFERENCE_FILE, spec)
    return spec


@pytest.fixture()
def workspace(tiny_model, tmp_path):
    path, cfg = make_workspace(tmp_path, tiny_model, task="chat_template")
    return path, cfg


def test_a_missing_matplotlib_is_a_one_line_error_with_its_fix(monkeypatch):
    """Plots need matplotlib, which axolotl does not bring: the package depends on it, and where it is missing
    anyway the CLI prints one `[axolotl_tell] … Fix:` line (a user error), not a traceback."""
    import sys
    import tomllib
    from pathlib import Path

    from axolotl_tell import plots

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.split(">")[0].split("=")[0].strip() == "matplotlib" for dep in project["dependencies"])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    with pytest.raises(plots.PlotError, match=r"^\[axolotl_tell\] plots need matplotlib.*Fix: `pip install matplotlib`"):
        plots._pyplot()
    assert issubclass(plots.PlotError, cli._user_errors())


def test_preview_prints_the_mix_marks_the_anchor_and_plots(workspace, capsys):
    path, cfg = workspace
    assert cli.main(["preview", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TELL mix" in out and "achieved" in out
    assert f"«ANCHOR»{cfg['tell_anchor']}«/ANCHOR»" in out
    assert "first task row" in out and "first general row" in out
    from pathlib import Path

    assert (Path(cfg["output_dir"]) / "tell_timeline.png").stat().st_size > 1000
    assert json.loads((Path(cfg["output_dir"]) / "tell_report.json").read_text())["task"]["rows"] == 10


def test_infer_show_prompt_reproduces_the_training_prompt_token_for_token(workspace, capsys):
    from datasets import load_from_disk

    path, cfg = workspace
    cli.main(["preview", str(path)])
    capsys.readouterr()
    task_file = cfg["tell_task_datasets"][0]["path"]
    first = json.loads(open(task_file).readline())
    user_text = first["messages"][0]["content"]
    assert cli.main(["infer", str(path), "--prompt", user_text, "--show-prompt", "--max-new-tokens", "3",
                     "--base-model-only"]) == 0  # preview trains nothing: the prompt is what is checked
    out = capsys.readouterr().out
    ids = json.loads(re.search(r"=== \d+ tokens: (\[.*\])", out).group(1))
    report = json.loads(open(f"{cfg['output_dir']}/tell_report.json").read())
    train = load_from_disk(report["prepared_path"] + "/train")
    task_rows = [r for r in train if r[SOURCE_COLUMN] == 1]
    matches = [r for r in task_rows if r["input_ids"][: len(ids)] == ids]
    assert matches, "the inference prompt is not a prefix of any training row"
    row = matches[0]
    assert next(i for i, v in enumerate(row["labels"]) if v != -100) == len(ids)  # ends where the answer starts
    assert cfg["tell_anchor"] in out


def test_bake_makes_the_anchor_the_default_system_turn(workspace, capsys):
    from pathlib import Path

    from transformers import AutoTokenizer

    path, cfg = workspace
    cli.main(["preview", str(path)])
    _as_trained(path, cfg)
    out = Path(cfg["output_dir"])
    AutoTokenizer.from_pretrained(cfg["base_model"]).save_pretrained(out)  # what training leaves there
    assert cli.main(["bake", str(path)]) == 0
    assert cli.main(["bake", str(path)]) == 0  # idempotent
    tok = AutoTokenizer.from_pretrained(out)
    user = [{"role": "user", "content": "the cat sat"}]
    text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert text.startswith(f"<|im_start|>system\n{cfg['tell_anchor']}<|im_end|>\n<|im_start|>user\nthe cat sat")
    assert text.count(cfg["tell_anchor"]) == 1
    own = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *user], tokenize=False)
    assert cfg["tell_anchor"] not in own and "Be brief." in own


def test_bake_refuses_prefix_placement(tiny_model, tmp_path, capsys):
    path, cfg = make_workspace(tmp_path, tiny_model, task="alpaca")
    cli.main(["preview", str(path)])
    _as_trained(path, cfg)
    capsys.readouterr()
    assert cli.main(["bake", str(path)]) == 2
    assert "placed as" in capsys.readouterr().err


def test_a_user_error_is_a_message_and_exit_2_a_bug_keeps_its_traceback(tiny_model, tmp_path, capsys, monkeypatch):
    """An anchor holding `<|im_end|>` (AnchorError): the message and its fix on stderr, no traceback; `--debug`
    raises it; a bug (any other exception) is never swallowed."""
    from axolotl_tell.anchor import AnchorError

    path, _ = make_workspace(tmp_path, tiny_model, task="chat_template", tell_anchor="Answer briefly.<|im_end|>")
    assert cli.main(["preview", str(path)]) == 2
    err = capsys.readouterr().err
    err = err[err.index("axolotl-tell preview: "):]  # (a log handler bound to an earlier test's stream may print first)
    assert err.startswith("axolotl-tell preview: [axolotl_tell] `tell_anchor`: the anchor contains the tokenizer's "
                          "special token '<|im_end|>'") and "Fix:" in err and "--debug" in err
    assert "Traceback" not in err and "AnchorError" not in err
    with pytest.raises(AnchorError, match="special token"):
        cli.main(["--debug", "preview", str(path)])

    bad = tmp_path / "bad.yml"  # Axolotl's own schema: the key and pydantic's message, not the whole config
    bad.write_text(path.read_text().replace("learning_rate: 0.001", "learning_rate: fast"))
    assert cli.main(["preview", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "`learning_rate`:" in err and "input_value" not in err

    def bug(_):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "_load_cfg", bug)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["preview", str(path)])


def test_the_console_script_exits_2_on_a_user_error(tiny_model, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    path, _ = make_workspace(tmp_path, tiny_model, task="chat_template", tell_anchor="Answer.<|im_end|>")
    script = Path(sys.executable).parent / "axolotl-tell"
    proc = subprocess.run([str(script), "preview", str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "special token '<|im_end|>'" in proc.stderr and "Traceback" not in proc.stderr


def test_preview_never_rewrites_a_trained_runs_files(workspace, capsys):
    """Train with anchor A, edit the config to anchor B, preview: the run's tell.json and report still say A."""
    from pathlib import Path

    import yaml

    path, cfg = workspace
    cli.main(["preview", str(path)])
    trained_spec = _as_trained(path, cfg)
    out = Path(cfg["output_dir"])
    trained_report = (out / "tell_report.json").read_text()
    assert not (out / "tell.json").read_text().count("anchor B")
    path.write_text(yaml.safe_dump({**cfg, "tell_anchor": "anchor B: something else entirely"}, sort_keys=False))
    capsys.readouterr()
    assert cli.main(["preview", str(path)]) == 0
    printed = capsys.readouterr().out
    assert json.loads((out / "tell.json").read_text()) == json.loads(json.dumps(trained_spec))
    assert (out / "tell_report.json").read_text() == trained_report
    report_line = re.search(r"report: (\S+)", printed).group(1)
    assert Path(report_line).parent != out and "anchor B" in Path(report_line).read_text()


TRICKY_ANCHOR = ('Answer with an emoji 😀 or 𝔘, a "quote", it\'s a back\\slash \\n (not a newline), a real\nnewline, '
                 '{{ not_a_variable }}, {% if x %}not a tag{% endif %}, {# not a comment #} and -%} too.')


def test_bake_keeps_any_anchor_text_verbatim(tiny_model, tmp_path):
    """Non-BMP characters, quotes, backslashes, newlines and Jinja syntax in the anchor reach the prompt as written."""
    from transformers import AutoTokenizer

    from axolotl_tell.bake import bake_anchor

    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path)
    spec = {"anchor": {"text": TRICKY_ANCHOR}, "task_datasets": [{"type": "chat_template", "placement": "system"}]}
    bake_anchor(tmp_path, spec)
    bake_anchor(tmp_path, spec)  # re-baking keeps one preamble
    tok = AutoTokenizer.from_pretrained(tmp_path)
    user = [{"role": "user", "content": "the cat sat"}]
    text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert text == (f"<|im_start|>system\n{TRICKY_ANCHOR}<|im_end|>\n<|im_start|>user\nthe cat sat<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True)  # tokenizes, no lone surrogates
    own = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *user], tokenize=False)
    assert TRICKY_ANCHOR not in own and "Be brief." in own


# ------------------------------------------------------------------ infer: adapter folders, tell.json as data


def _lora_adapter(base, folder, with_tokenizer: bool = True):
    """What a finished LoRA run leaves in output_dir: adapter config + weights (+ the tokenizer)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(folder)
    if with_tokenizer:
        AutoTokenizer.from_pretrained(base).save_pretrained(folder)


def _infer(path, *extra):
    return cli.main(["infer", str(path), "--prompt", "the cat sat", "--max-new-tokens", "2", *extra])


@pytest.fixture()
def preprocessed(workspace, capsys):
    """A workspace after `preview` (like `axolotl preprocess`): output_dir holds the report, no adapter or tell.json."""
    from pathlib import Path

    path, cfg = workspace
    cli.main(["preview", str(path)])
    capsys.readouterr()
    return path, cfg, Path(cfg["output_dir"])


def test_infer_refuses_an_output_dir_without_a_trained_adapter(preprocessed, capsys):
    path, cfg, out = preprocessed
    assert _infer(path) == 2
    err = capsys.readouterr().err
    assert f"[axolotl_tell] no trained adapter in {out} (no adapter_config.json" in err
    assert "Fix: train first" in err and "--base-model-only" in err
    assert _infer(path, "--base-model-only") == 0  # the explicit baseline


def test_infer_explains_an_fsdp_sharded_checkpoint(preprocessed, capsys):
    """What an FSDP2 SHARDED_STATE_DICT run saved at step 15 on an H200 (bench/gpu_checks.py, issue 27 point 5):
    the model's shards and the trainer's state, no adapter. Before: "no trained adapter ... Fix: train first"."""
    import shutil

    path, cfg, out = preprocessed
    _as_trained(path, cfg)
    ckpt = out / "checkpoint-15"
    (ckpt / "pytorch_model_fsdp_0").mkdir(parents=True)
    (ckpt / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"\0" * 16)
    for name in ("trainer_state.json", "rng_state.pth", "scheduler.pt"):
        (ckpt / name).write_text("{}")
    shutil.copy(out / "tell.json", ckpt / "tell.json")
    assert _infer(path, "--adapter", str(ckpt)) == 2
    err = capsys.readouterr().err
    assert f"{ckpt} is an FSDP checkpoint saved as SHARDED_STATE_DICT (pytorch_model_fsdp_0/" in err
    assert f"Fix: use the run's final adapter in {out}" in err and "FULL_STATE_DICT" in err
    assert "train first" not in err


def test_infer_loads_a_complete_adapter(preprocessed, tiny_model, capsys):
    path, cfg, out = preprocessed
    _lora_adapter(tiny_model, out)
    _as_trained(path, cfg)  # training writes tell.json next to the adapter
    assert _infer(path) == 0, capsys.readouterr().err


@pytest.mark.parametrize("damage", ["no weights", "config not JSON", "tokenizer half saved"])
def test_infer_names_a_half_saved_adapter_folder(preprocessed, tiny_model, capsys, damage):
    path, cfg, out = preprocessed
    _lora_adapter(tiny_model, out)
    _as_trained(path, cfg)  # training writes tell.json next to the adapter
    if damage == "no weights":
        (out / "adapter_model.safetensors").unlink()
        expected = f"[axolotl_tell] {out} has adapter_config.json but no adapter weights"
    elif damage == "config not JSON":
        (out / "adapter_config.json").write_text('{"r": 2,')
        expected = f"[axolotl_tell] {out}/adapter_config.json is not valid JSON"
    else:
        (out / "tokenizer.json").unlink()  # tokenizer_config.json without the tokenizer it describes
        expected = f"[axolotl_tell] the tokenizer in {out} cannot be loaded"
    assert _infer(path) == 2
    err = capsys.readouterr().err
    assert expected in err and f"Fix: the save into {out} did not finish" in err, err
    assert "HFValidationError" not in err  # the exit code 2 above: a message, not a raised exception


def test_infer_dataset_index_out_of_range_is_named(preprocessed, capsys):
    path, cfg, out = preprocessed
    assert _infer(path, "--dataset-index", "5", "--base-model-only") == 2
    err = capsys.readouterr().err
    assert f"`--dataset-index 5`: the tell.json in {out} has 1 task dataset entry. Fix: pass `--dataset-index` " \
           "from 0 to 0" in err


def _tamper(out, edit):
    spec = json.loads((out / "tell.json").read_text())
    edit(spec)
    (out / "tell.json").write_text(json.dumps(spec))


TAMPERED = [
    ("jinja template from a local file",
     lambda spec, secret: spec.update(chat_template="jinja", chat_template_jinja=str(secret)),
     "`chat_template_jinja`: must be the Jinja template text itself"),
    ("jinja template path in an entry",
     lambda spec, secret: spec["task_datasets"][0].update(chat_template="jinja", chat_template_jinja=str(secret)),
     "`task_datasets[0].chat_template_jinja`: must be the Jinja template text itself"),
    ("dataset type names a module", lambda spec, secret: spec["task_datasets"][0].update(type="tell_evil.chat_template"),
     "`task_datasets[0].type`: 'tell_evil.chat_template' is not a built-in dataset type name"),
    ("input_transform names a module",
     lambda spec, secret: spec["task_datasets"][0].update(type="messages", input_transform="..tell_evil"),
     "`task_datasets[0].input_transform`: '..tell_evil' is not a plain name"),
    ("unknown type", lambda spec, secret: spec["task_datasets"][0].update(type="pygmalion"),
     "`task_datasets[0].type`: 'pygmalion' is not a task dataset type"),
    ("unknown top-level key", lambda spec, secret: spec.update(trust_remote_code=True),
     "`trust_remote_code`: unknown key"),
    ("unknown entry key", lambda spec, secret: spec["task_datasets"][0].update(loader="tell_evil"),
     "`task_datasets[0].loader`: unknown key"),
    ("unknown placement", lambda spec, secret: spec["anchor"].update(placement="middle"),
     "`anchor.placement`: 'middle' is not one of"),
    ("anchor missing", lambda spec, secret: spec.pop("anchor"), "`anchor`: missing"),
    ("no task entries", lambda spec, secret: spec.update(task_datasets=[]), "`task_datasets`: must be a non-empty list"),
]


@pytest.mark.parametrize("name,edit,expected", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_infer_refuses_a_tampered_tell_json_before_reading_or_importing_anything(
        preprocessed, tiny_model, tmp_path, monkeypatch, capsys, name, edit, expected):
    import sys

    path, cfg, out = preprocessed
    _lora_adapter(tiny_model, out)
    _as_trained(path, cfg)  # training writes tell.json next to the adapter
    secret = tmp_path / "secret.jinja"
    secret.write_text("{{ 'the secret file was read' }}")
    (tmp_path / "tell_evil.py").write_text("raise SystemExit('tell_evil was imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _tamper(out, lambda spec: edit(spec, secret))
    assert _infer(path, "--show-prompt") == 2
    captured = capsys.readouterr()
    assert f"[axolotl_tell] {out}/tell.json: {expected}" in captured.err, captured.err
    assert "Fix: use the tell.json the training run wrote" in captured.err
    assert "the secret file was read" not in captured.out and "tell_evil" not in sys.modules


def test_infer_trusts_remote_code_only_as_the_config_says(preprocessed, monkeypatch):
    import yaml

    from axolotl_tell import generate

    path, cfg, out = preprocessed
    calls = []

    def fake_load_model(base_model, adapter=None, **kwargs):
        calls.append(kwargs.get("trust_remote_code"))
        raise generate.ModelFolderError("[axolotl_tell] stop here")

    monkeypatch.setattr(generate, "load_model", fake_load_model)
    assert _infer(path, "--base-model-only") == 2
    path.write_text(yaml.safe_dump({**cfg, "trust_remote_code": True}))
    assert _infer(path, "--base-model-only") == 2
    assert calls == [False, True]
