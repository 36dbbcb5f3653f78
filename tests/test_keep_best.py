"""`tell_keep_best`: the checkpoint with the best task metric becomes the saved adapter, and the record says so."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from axolotl_tell.args import TellConfigError, validate_tell_config
from axolotl_tell.keep_best import (best_metric_key, keep_best_training_args, kept_section,
                                    steps_between_evaluations)
from tiny import make_workspace

TASK = [{"path": "task.jsonl", "ds_type": "json", "type": "alpaca"}]
BASE = {"tell_task_datasets": TASK, "tell_anchor": "Answer.", "datasets": [{"path": "g.jsonl", "type": "alpaca"}]}
KEEP = {**BASE, "tell_task_eval_rows": 4, "tell_eval_generate": "exact_match", "tell_keep_best": True}


def test_training_args_follow_the_metric_and_the_evaluation_count():
    args = keep_best_training_args(KEEP)
    assert args == {"eval_strategy": "steps", "eval_steps": 1 / 7, "save_strategy": "steps", "save_steps": 1 / 7,
                    "load_best_model_at_end": True, "metric_for_best_model": "eval_tell/keep_best",
                    "greater_is_better": True}
    assert keep_best_training_args({**KEEP, "evals_per_epoch": 4})["eval_steps"] == 0.25
    assert keep_best_training_args({**KEEP, "eval_steps": 10})["save_steps"] == 10
    assert keep_best_training_args(BASE) is None


def test_metric_key_as_the_user_wrote_it():
    from axolotl_tell.keep_best import reported_metric_key

    assert reported_metric_key({**KEEP, "tell_eval_generate": "json_fields"}) == "eval_tell/accuracy"
    assert best_metric_key({**KEEP, "tell_eval_generate": "json_fields"}) == "eval_tell/keep_best"  # floored
    assert best_metric_key({**KEEP, "metric_for_best_model": "tell/f1_yes"}) == "eval_tell/f1_yes"
    assert best_metric_key({**KEEP, "metric_for_best_model": "eval_loss"}) == "eval_loss"
    assert best_metric_key({**KEEP, "tell_eval_generate": "pkg.mod.fn"}) is None


def test_evaluation_interval_reads_like_transformers():
    assert steps_between_evaluations(1 / 7, 41) == 6
    assert steps_between_evaluations(10, 41) == 10


@pytest.mark.parametrize("change,key", [
    ({"tell_eval_generate": None, "tell_task_eval_rows": 0}, "tell_keep_best"),
    ({"save_strategy": "no"}, "save_strategy"),
    ({"eval_strategy": "epoch"}, "eval_strategy"),
    ({"save_steps": 5, "eval_steps": 10}, "save_steps"),
    ({"evals_per_epoch": 0}, "evals_per_epoch"),
    ({"fsdp_config": {"fsdp_version": 2}}, "tell_keep_best"),
    ({"tell_keep_best": "yes"}, "tell_keep_best"),
])
def test_combinations_that_cannot_work_are_refused(change, key):
    cfg = {k: v for k, v in {**KEEP, **change}.items() if v is not None}
    with pytest.raises(TellConfigError) as err:
        validate_tell_config(cfg)
    assert f"`{key}`" in str(err.value) and "Fix:" in str(err.value)


def test_a_custom_metric_needs_its_key_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = {**KEEP, "tell_eval_generate": "tiny.scripted_metric"}
    with pytest.raises(TellConfigError, match="metric_for_best_model: tell/"):
        validate_tell_config(cfg)
    validate_tell_config({**cfg, "metric_for_best_model": "tell/score"})


def test_a_tie_goes_to_the_later_step_without_changing_the_number():
    from axolotl_tell.keep_best import later_wins_ties

    assert later_wins_ties(0.9, None, None, True) == 0.9  # first evaluation
    assert later_wins_ties(0.95, 0.9, 0.9, True) == 0.95  # better: as it is
    assert later_wins_ties(0.8, 0.9, 0.9, True) == 0.8  # worse: as it is
    tie = later_wins_ties(0.9, 0.9, 0.9, True)
    assert tie > 0.9 and tie == pytest.approx(0.9, abs=1e-12)
    assert later_wins_ties(0.9, 0.9, tie, True) > tie  # a third equal value wins again
    assert later_wins_ties(1.2, 1.2, 1.2, False) < 1.2  # lower is better


class _FakeTrainer:
    """transformers' best-checkpoint rule, as ``Trainer._determine_best_metric`` applies it: a strictly better value
    (``np.greater``) replaces the best; the callback runs before it, on the same metrics dict."""

    def __init__(self, callback, metric_key):
        from types import SimpleNamespace

        self.callback = callback
        self.args = SimpleNamespace(greater_is_better=True, load_best_model_at_end=True,
                                    metric_for_best_model=metric_key)
        self.state = SimpleNamespace(global_step=0, max_steps=0, best_metric=None, best_global_step=None)
        self.logged = []

    def evaluate(self, step, metrics):
        self.state.global_step = step
        self.callback.on_evaluate(self.args, self.state, None, model=object(), metrics=metrics)
        self.logged.append(dict(metrics))
        value = metrics[self.args.metric_for_best_model]
        if self.state.best_metric is None or value > self.state.best_metric:
            self.state.best_metric, self.state.best_global_step = value, step


def _keep_best_run(tmp_path, monkeypatch, curve, floor, **cfg_extra):
    """Scripted evaluations (step, exact_match) through the plugin's callback and the trainer's rule: the kept step,
    what the trainer logged, and tell_report's kept section."""
    from types import SimpleNamespace

    from axolotl.utils.dict import DictDefault

    import axolotl_tell.evaluate as evaluate
    from axolotl_tell.keep_best import reported_metric_key
    from axolotl_tell.training import _GenerateAtEval

    values = iter(curve)
    monkeypatch.setattr(evaluate, "generation_eval", lambda *a, **k: (
        {"exact_match": (v := next(values)[1]), "score": v, "n": 50, "metric": "exact_match",
         "constant_answer": "unknown", "constant_answer_score": floor}, []))
    cfg = DictDefault({**KEEP, "output_dir": str(tmp_path), **cfg_extra})
    plugin = SimpleNamespace(evaluations=[], floor=None, spec={}, prepared=SimpleNamespace(eval_raw=[{}]))
    callback = _GenerateAtEval(plugin, cfg)
    callback.tokenizer = object()
    trainer = _FakeTrainer(callback, best_metric_key(cfg))
    for step, _ in curve:
        trainer.evaluate(step, {})
    kept = kept_section(f"{tmp_path}/checkpoint-{trainer.state.best_global_step}", trainer.state.best_metric,
                        trainer.state.best_global_step, reported_metric_key(cfg), plugin.evaluations, curve[-1][0],
                        floor=plugin.floor)
    return trainer.state.best_global_step, trainer.logged, kept


# the recorded validation curve of the benchmark's disfl_qa 30-row tell_best run (leverage_cpu.json, seed 0): its
# one-answer floor ("unknown" on every row) scores 0.28, and no evaluation beats it
AT_THE_FLOOR = [(23, 0.28), (46, 0.12), (69, 0.08), (92, 0.1), (115, 0.14), (138, 0.14), (160, 0.14)]


def test_no_evaluation_above_the_one_answer_floor_keeps_the_end_point(tmp_path, monkeypatch):
    step, logged, kept = _keep_best_run(tmp_path, monkeypatch, AT_THE_FLOOR, 0.28)
    assert step == 160  # not step 23, whose 0.28 is the floor's own score
    assert [m["eval_tell/exact_match"] for m in logged] == [v for _, v in AT_THE_FLOOR]  # the metric logs unchanged
    assert kept["metric"] == "eval_tell/exact_match" and kept["value"] == 0.14 and kept["is_final_step"]
    assert kept["floor"] == {"answer": "unknown", "score": 0.28, "margin": pytest.approx(0.0635, abs=1e-4)} and kept["above_floor"] is False


def test_an_evaluation_above_the_floor_is_kept_over_the_later_ones(tmp_path, monkeypatch):
    # sports_understanding 30 rows, seed 0: a balanced binary task, floor 0.5
    curve = [(22, 0.5), (44, 0.48), (66, 0.54), (88, 0.54), (110, 0.6), (132, 0.54), (148, 0.54)]
    step, _, kept = _keep_best_run(tmp_path, monkeypatch, curve, 0.5)
    assert step == 110 and kept["value"] == 0.6 and kept["above_floor"] is True
    step, _, _ = _keep_best_run(tmp_path, monkeypatch, [(10, 0.6), (20, 0.7), (30, 0.7), (40, 0.2)], 0.5)
    assert step == 30  # a tie above the floor still goes to the later step


# the recorded validation curve of the benchmark's sports_understanding 30-row tell_best run, seed 2
# (leverage_cpu.json): step 44 scored 0.52 against the floor's 0.50, one row of 50 above it; that checkpoint answered
# "implausible" on 99 of 100 test rows (0.50) where the end point scored 0.59
ONE_ROW_ABOVE = [(22, 0.5), (44, 0.52), (66, 0.48), (88, 0.44), (110, 0.44), (132, 0.48), (148, 0.48)]


def test_one_row_above_the_floor_is_noise_and_keeps_the_end_point(tmp_path, monkeypatch):
    step, logged, kept = _keep_best_run(tmp_path, monkeypatch, ONE_ROW_ABOVE, 0.5)
    assert step == 148  # not step 44: 0.52 is inside one standard error (0.071 on 50 rows) of the floor's 0.50
    assert kept["floor"] == {"answer": "unknown", "score": 0.5, "margin": pytest.approx(0.0707, abs=1e-4)}
    assert kept["above_floor"] is False and kept["is_final_step"]
    assert [m["eval_tell/keep_best"] for m in logged][:2] == [pytest.approx(0.5707, abs=1e-4)] * 2  # tied, raised


def test_the_floor_margin_is_one_standard_error_of_the_floor_on_the_eval_rows():
    from axolotl_tell.keep_best import choice_value, floor_margin

    assert floor_margin(0.5, 50) == pytest.approx(0.070711, abs=1e-6)
    assert floor_margin(0.28, 50) == pytest.approx(0.063498, abs=1e-6)
    assert floor_margin(0.0, 50) == floor_margin(1.0, 50) == floor_margin(0.5, None) == 0.0  # no noise / unknown n
    assert choice_value(0.52, 0.5, 0.0707) == pytest.approx(0.5707) and choice_value(0.58, 0.5, 0.0707) == 0.58
    assert choice_value(0.52, 0.5) == 0.52  # no margin: the floor rule as it was


def test_a_metric_the_user_named_is_compared_as_it_is(tmp_path, monkeypatch):
    step, logged, kept = _keep_best_run(tmp_path, monkeypatch, AT_THE_FLOOR, 0.28,
                                        metric_for_best_model="tell/exact_match")
    assert step == 23 and "eval_tell/keep_best" not in logged[0] and "floor" not in kept


def test_the_floor_is_the_best_one_answer_score_for_built_in_metrics_only():
    from axolotl_tell.evaluate import _floor
    from axolotl_tell.keep_best import choice_value
    from axolotl_tell.metrics import constant_answer

    refs = ["unknown", "Paris", "unknown", "1912", "unknown"]
    assert constant_answer("exact_match", refs) == {"answer": "unknown", "score": 0.6}
    assert _floor("exact_match", refs) == {"constant_answer": "unknown", "constant_answer_score": 0.6}
    assert _floor("tiny.scripted_metric", refs) == {}  # a custom function is not called again for a floor
    assert choice_value(0.2, 0.6) == 0.6 and choice_value(0.6, 0.6) == 0.6 and choice_value(0.8, 0.6) == 0.8
    assert choice_value(0.2, None) == 0.2


def test_kept_section_reads_the_step_from_the_folder_when_transformers_keeps_none():
    kept = kept_section("/out/checkpoint-12", 0.75, None, "eval_tell/exact_match", [], 30)
    assert kept["step"] == 12 and kept["value"] == 0.75 and kept["is_final_step"] is False
    assert kept_section(None, None, None, "eval_loss", [], 30) is None


def _adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.e2e
def test_train_keeps_the_checkpoint_with_the_best_task_metric(tiny_model, tmp_path):
    """Four evaluations score 0.2, 0.9, 0.9, 0.1 (a scripted metric): the third step's checkpoint (the later of the
    tie) must become the saved adapter, and tell_report.json / tell.json / the plot must name it."""
    import subprocess

    import torch

    cfg_path, cfg = make_workspace(tmp_path, tiny_model, tell_task_eval_rows=2,
                                   tell_eval_generate="tiny.scripted_metric", tell_eval_max_new_tokens=2,
                                   metric_for_best_model="tell/score", tell_keep_best=True, evals_per_epoch=4,
                                   save_strategy=None, save_total_limit=6)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "TELL_TEST_METRIC_SCRIPT": "0.2,0.9,0.9,0.1"}
    proc = subprocess.run([str(bin_dir / "axolotl"), "train", str(cfg_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    out = Path(cfg["output_dir"])
    evals = [json.loads(line) for line in (out / "tell_eval_steps.jsonl").read_text().splitlines()]
    assert [e["score"] for e in evals] == [0.2, 0.9, 0.9, 0.1], evals
    report = json.loads((out / "tell_report.json").read_text())
    steps = report["trained"]["steps"]
    assert evals[-1]["step"] == steps  # the end point was a candidate
    best = evals[2]["step"]
    kept = report["trained"]["kept"]
    assert kept["step"] == best and kept["value"] == 0.9 and kept["metric"] == "eval_tell/score"
    assert kept["is_final_step"] is False and report["trained"]["complete"] is True
    assert [e["value"] for e in kept["evaluations"]] == [0.2, 0.9, 0.9, 0.1]
    assert json.loads((out / "tell.json").read_text())["kept"] == {"step": best, "metric": "eval_tell/score",
                                                                   "value": 0.9}
    saved, chosen, last = (_adapter_weights(p) for p in (out, out / f"checkpoint-{best}", out / f"checkpoint-{steps}"))
    assert saved.keys() == chosen.keys()
    assert all(torch.equal(saved[k], chosen[k]) for k in saved)
    assert any(not torch.equal(saved[k], last[k]) for k in saved)
    assert (out / "tell_timeline.png").is_file()


@pytest.mark.e2e
def test_two_ranks_packed_keep_the_same_best_checkpoint(tiny_model, tmp_path, monkeypatch):
    """2 gloo ranks, packed: each rank generates its share of the 3 eval rows (2 + 1), the gathered metric reaches
    both ranks' evaluation metrics (a rank without it would fail in the trainer's best-metric check), and the one
    adapter saved is the chosen checkpoint's."""
    import torch
    from test_distributed_cpu import _train

    monkeypatch.setenv("TELL_TEST_METRIC_SCRIPT", "0.2,0.9,0.1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    cfg_path, cfg = make_workspace(tmp_path, tiny_model, task="chat_template", sample_packing=True,
                                   tell_task_eval_rows=3, tell_eval_generate="tiny.scripted_metric",
                                   tell_eval_max_new_tokens=2, metric_for_best_model="tell/score",
                                   tell_keep_best=True, evals_per_epoch=3, save_strategy=None, save_total_limit=5,
                                   micro_batch_size=1, eval_batch_size=1)
    log = _train(cfg_path, "ddp", timeout=400)
    out = Path(cfg["output_dir"])
    assert "training engine: DDP, world size 2" in log
    evals = [json.loads(line) for line in (out / "tell_eval_steps.jsonl").read_text().splitlines()]
    assert [e["score"] for e in evals] == [0.2, 0.9, 0.1] and all(e["n"] == 3 for e in evals), evals
    report = json.loads((out / "tell_report.json").read_text())
    kept = report["trained"]["kept"]
    assert kept["step"] == evals[1]["step"] and kept["value"] == 0.9
    assert evals[-1]["step"] == report["trained"]["steps"]
    saved, chosen = _adapter_weights(out), _adapter_weights(out / f"checkpoint-{kept['step']}")
    assert all(torch.equal(saved[k], chosen[k]) for k in saved)


@pytest.mark.parametrize("extra,sharded,tp", [
    ({}, False, 1),
    ({"deepspeed": {"zero_optimization": {"stage": 2}}}, False, 1),
    ({"deepspeed": {"zero_optimization": {"stage": 3}}}, True, 1),
    ({"deepspeed": {"zero_optimization": {"stage": 2}, "tensor_parallel": {"autotp_size": 4}}}, True, 4),
    ({"tensor_parallel_size": 2}, True, 2),
    ({"expert_parallel_size": 8}, True, 1),
    ({"fsdp_config": {"fsdp_version": 2}}, True, 1),
])
def test_sharding_is_read_from_every_key_that_shards(tmp_path, extra, sharded, tp):
    """DeepSpeed AutoTP and expert parallelism shard the parameters too: generation on one rank would run their
    collectives alone (a hang); AutoTP ranks see the same tokens (per-source counts divided by the TP degree)."""
    import json

    from axolotl_tell.args import config_shards_parameters, tensor_parallel_degree

    assert config_shards_parameters(extra) is sharded and tensor_parallel_degree(extra) == tp
    if "deepspeed" in extra:  # a JSON file reads the same as the inline dict
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(extra["deepspeed"]))
        assert config_shards_parameters({"deepspeed": str(path)}) is sharded
        assert tensor_parallel_degree({"deepspeed": str(path)}) == tp


def test_the_timeline_says_why_a_step_was_kept():
    from axolotl_tell.run_end import _kept_why

    floor = {"answer": "unknown", "score": 0.28}
    assert _kept_why({"above_floor": False, "floor": floor}) == "no step beat answering 'unknown': the latest kept"
    assert _kept_why({"above_floor": True, "floor": floor}) == _kept_why(None) == "best task metric"


def test_a_late_marker_label_is_written_leftwards_inside_the_plot():
    from axolotl_tell.plots import label_side

    assert label_side(160, 160) == "right" and label_side(23, 160) == "left" and label_side(80, 160) == "left"


def test_the_floor_rule_replayed_on_the_recorded_benchmark_runs():
    """The numbers README and ``choice_value`` quote: the benchmark's recorded ``tell_best`` validation curves, replayed
    through the rule. Runs recorded before it (no ``chosen_floor``) change on exactly two cells; runs recorded with it
    kept what the rule says."""
    from axolotl_tell.keep_best import choice_value

    runs = json.loads((Path(__file__).parent.parent / "bench/results/leverage_cpu.json").read_text())["runs"]
    before, changed = 0, set()
    for run in (r for r in runs if r["method"] == "tell_best"):
        floor = (run.get("chosen_floor") or run["val_constant_answer"])["score"]
        margin = (run.get("chosen_floor") or {}).get("margin", 0.0)  # runs recorded before the margin: none
        compared = [choice_value(e["value"], floor, margin) for e in run["val_curve"]]
        step = max(e["step"] for e, c in zip(run["val_curve"], compared) if c == max(compared))
        if run.get("chosen_floor"):
            assert run["chosen_step"] == step, run["key"]
        else:
            before += 1
            if step != run["chosen_step"]:
                changed.add((run["task"], run["task_rows"], run["seed"]))
    assert before == 21 and changed == {("disfl_qa", 10, 0), ("disfl_qa", 30, 0)}
