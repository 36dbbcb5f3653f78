"""The benchmark's results file under several writers at once (the GPU machine runs parallel streams into one file)."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench_run():
    for p in (str(ROOT / "bench"), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)
    spec = importlib.util.spec_from_file_location("bench_run_module", ROOT / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _writer(path: str, writer: int, n: int) -> None:
    run = _bench_run()
    for i in range(n):
        run.record_run(Path(path), {"key": f"w{writer}-{i}", "payload": "x" * 2000}, {"grid": "g"})


def test_parallel_writers_keep_every_run(tmp_path):
    out = tmp_path / "results.json"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(out), w, 30)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    keys = {r["key"] for r in json.loads(out.read_text())["runs"]}
    assert keys == {f"w{w}-{i}" for w in range(4) for i in range(30)}
    assert not list(tmp_path.glob("*.tmp"))


def test_record_run_replaces_a_run_by_key(tmp_path):
    run = _bench_run()
    out = tmp_path / "results.json"
    run.record_run(out, {"key": "a", "score": 0.1})
    run.record_run(out, {"key": "b", "score": 0.2})
    results = run.record_run(out, {"key": "a", "score": 0.3}, {"device": "cpu"})
    assert [(r["key"], r["score"]) for r in results["runs"]] == [("b", 0.2), ("a", 0.3)]
    assert json.loads(out.read_text()) == results


def test_a_missing_model_stops_the_bench_before_any_cell(tmp_path, capsys):
    """A fresh clone without `scripts/get_model.py`'s model: one clear error with its fix, no cell tried or recorded
    (each used to fail deep inside axolotl with a hub-name error, all of them in turn)."""
    run = _bench_run()
    out = tmp_path / "results.json"
    code = run.main(["--grid", "smoke", "--out", str(out), "--model", str(tmp_path / "no-model"), "--device", "cpu",
                     "--work", str(tmp_path / "work"), "--max-cells", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no model folder there (not found)" in err and "Fix: pass --model" in err
    assert "scripts/get_model.py" in err
    assert not out.exists() and not (tmp_path / "work").exists()


def test_the_model_folder_check_names_the_default_fetch(tmp_path, monkeypatch):
    run = _bench_run()
    monkeypatch.setattr(run, "DEFAULT_MODEL", tmp_path / "default")
    assert run.model_folder_problem(str(tmp_path / "default")) == (
        f"--model {tmp_path / 'default'}: no model folder there (not found). "
        f"Fix: python scripts/get_model.py --out {tmp_path / 'default'}")
    (tmp_path / "m").mkdir()
    assert "no config.json in it" in run.model_folder_problem(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text("{}")
    assert run.model_folder_problem(str(tmp_path / "m")) is None
