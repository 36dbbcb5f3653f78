"""The benchmark's smoke grid: `bench/run.py` end to end on the tiny model (tell, sft; zero_shot, sft_best's curve and a
lever variant), then resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from axolotl_tell.keep_best import choice_value

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ("task", "method", "task_rows", "seed", "score", "metric", "general_loss", "model", "task_repeats",
            "general_tokens", "task_tokens", "train_tokens", "steps", "wall_s", "device")


def bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "tasks").is_dir(), reason="needs ../shared/data")
def test_smoke_grid_writes_results_and_resumes(tiny_model, tmp_path):
    out = tmp_path / "results" / "smoke.json"
    args = ("--grid", "smoke", "--model", str(tiny_model), "--out", str(out), "--work", str(tmp_path / "work"),
            "--device", "cpu")
    start = time.perf_counter()
    bench(*args)
    first = time.perf_counter() - start
    all_runs = json.loads(out.read_text())["runs"]
    runs = [r for r in all_runs if not r.get("variant")]
    assert sorted(r["method"] for r in runs) == ["sft", "tell", "tell_best"]
    for run in all_runs:
        if run["method"] == "zero_shot":
            continue
        missing = [k for k in REQUIRED if k not in run]
        assert not missing, (run["method"], missing)
        assert run["task"] == "question_formation" and run["task_rows"] == 10 and run["metric"] == "exact_match"
        assert 0.0 <= run["score"] <= 1.0 and run["general_loss"] > 0 and run["steps"] > 0
        assert run["train_tokens"] == run["general_tokens"] + run["task_tokens"] > 0
        assert 0.0 <= run["gen_check"]["ok"] <= 1.0
        # each test row's hit, so two runs can be compared row by row; it adds up to the score
        assert len(run["row_hits"]) == run["test_rows"] and set(run["row_hits"]) <= {"0", "1"}
        assert run["row_hits"].count("1") == round(run["score"] * run["test_rows"])
        # the floor a score is read against (one answer on every row) and what the run answered, by count
        assert 0.0 <= run["constant_answer"]["score"] <= 1.0 and run["constant_answer"]["answer"]
        assert sum(n for _, n in run["answer_mix"]) <= run["test_rows"]
        # the rate it trained at (rule 4's learning-rate lever reads it): the grid's, as no smoke block sets one
        assert run["learning_rate"] == 5e-4 and run["lr_scheduler"] == "cosine"
    tell = next(r for r in runs if r["method"] == "tell")
    sft = next(r for r in runs if r["method"] == "sft")
    assert tell["prompt"] == "anchored" and sft["prompt"] == "plain"
    assert tell["general_tokens"] > 0 and tell["task_repeats"] == 2 and sft["general_tokens"] == 0
    assert sft["task_repeats"] == 2 and sft["steps"] == 4  # 2 whole passes over 10 rows at batch 8
    assert out.with_suffix(".md").is_file() and list(out.parent.glob("smoke_*.png"))
    # every run records the tell_* keys it ran with; a lever variant is its own cell (issue 13)
    assert tell["tell_keys"]["tell_general_ratio"] == 2 and "tell_task_loss_weight" not in tell["tell_keys"]
    assert sft["tell_keys"] is None
    lever = next(r for r in all_runs if r["method"] == "tell" and r.get("variant") == "w3")
    assert lever["tell_keys"]["tell_task_loss_weight"] == 3 and lever["key"].endswith("|v=w3")
    # sft_best carries SFT's whole curve: every saved candidate epoch scored on test and general loss
    best = next(r for r in all_runs if r["method"] == "sft_best")
    assert [p["epochs"] for p in best["frontier"]] == [1, 2, 3, 5, 10, 20, 30]
    assert all(0 <= p["score"] <= 1 and p["general_loss"] > 0 for p in best["frontier"])
    chosen = next(p for p in best["frontier"] if p["epochs"] == best["chosen_epochs"])
    assert chosen["score"] == best["score"]  # the kept adapter is the curve's point at that epoch
    # sft_curve: false scores validation rows at every epoch and the test rows at the chosen one only
    lean = next(r for r in all_runs if r["method"] == "sft_best" and r.get("variant") == "nocurve")
    assert "frontier" not in lean and set(lean["val_scores"]) == {str(p["epochs"]) for p in best["frontier"]}
    scores = {int(e): s for e, s in lean["val_scores"].items()}
    assert lean["chosen_epochs"] == max(scores, key=lambda e: (scores[e], -e))  # the earliest best on validation
    assert 0 <= lean["score"] <= 1 and lean["general_loss"] > 0
    # sft_scaled trains nothing: lean's chosen adapter, its LoRA delta scaled, the scale chosen on validation rows
    scaled = next(r for r in all_runs if r["method"] == "sft_scaled")
    assert scaled["wall_s"] == 0 and scaled["scaled_from"] == lean["key"] and scaled["prompt"] == "plain"
    assert all(scaled[k] == lean[k] for k in ("steps", "task_tokens", "chosen_epochs", "task_repeats"))
    vals = {float(s): v for s, v in scaled["val_scores"].items()}
    assert sorted(vals) == [0.25, 0.5, 0.75, 1.0] and vals[1.0] == lean["val_scores"][str(lean["chosen_epochs"])]
    assert scaled["chosen_scale"] == max(vals, key=lambda s: (vals[s], -s))  # ties: nearer the base model
    assert scaled["chosen_scale"] != 1.0 or scaled["score"] == lean["score"]
    # tell_best: the plugin kept the checkpoint best on the validation rows; the bench scores that adapter
    kept = next(r for r in runs if r["method"] == "tell_best")
    assert kept["tell_keys"]["tell_keep_best"] is True and kept["prompt"] == "anchored"
    assert kept["val_curve"] and kept["val_curve"][-1]["step"] == kept["steps"]  # the end point was a candidate
    assert kept["chosen_step"] in [e["step"] for e in kept["val_curve"]]
    # the latest of the best, each evaluation raised to the validation rows' one-answer floor (tell_keep_best)
    floor = kept["chosen_floor"]["score"]
    compared = [choice_value(e["value"], floor) for e in kept["val_curve"]]
    assert kept["chosen_step"] == max(e["step"] for e, c in zip(kept["val_curve"], compared) if c == max(compared))
    assert kept["val_score"] == kept["chosen_val_score"]  # the bench's own scoring of the kept adapter agrees
    md = out.with_suffix(".md").read_text()
    assert "## Frontier" in md and "## Goal per cell" in md and (out.parent / "smoke_frontier.png").is_file()

    again = bench(*args)  # resumable: every cell is already in the results file
    assert "0 to run" in again.stdout
    assert json.loads(out.read_text())["runs"] == all_runs

    # TELL runs score the validation rows too (a lever's default is chosen on them, not on the test rows);
    # --rescore-val adds that score to a run recorded without it, from the adapter on disk, identically
    tells = [r for r in all_runs if r["method"] == "tell"]
    for run in tells:
        assert run["val_rows"] == 4 and len(run["val_row_hits"]) == 4
        assert run["val_row_hits"].count("1") == round(run["val_score"] * 4)
    stripped = json.loads(out.read_text())
    for run in stripped["runs"]:
        if run["method"] == "tell":
            for key in ("val_score", "val_rows", "val_row_hits"):
                del run[key]
    out.write_text(json.dumps(stripped))
    rescored = bench(*args, "--rescore-val")
    assert f"{len(tells)} recorded TELL run(s) without a validation score" in rescored.stdout
    assert json.loads(out.read_text())["runs"] == all_runs

    # --constant-answers gives a run recorded before runs kept it the same floor (and the hits off it), from the task
    # data alone
    stripped = json.loads(out.read_text())
    for run in stripped["runs"]:
        del run["constant_answer"]
        del run["off_constant"]  # and the split of its hits on the rows that answer misses
        if run.get("val_rows"):  # every run that scored validation rows keeps their floor too
            del run["val_constant_answer"]
    out.write_text(json.dumps(stripped))
    backfilled = bench("--out", str(out), "--constant-answers")
    assert f"added to {len(all_runs)} run(s)" in backfilled.stdout
    assert json.loads(out.read_text())["runs"] == all_runs
    print(f"smoke grid: {first:.0f}s for {len(all_runs)} cells")


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "tasks").is_dir(), reason="needs ../shared/data")
def test_anchor_variants_configs(tiny_model, tmp_path):
    """tell_auto_anchor = the TELL config with `tell_anchor: auto` in its own cell; tell_no_anchor reuses TELL's plan."""
    import yaml

    sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
    import run as bench_run
    from tellbench.spec import expand

    cells = {(c.task, c.seed, c.method): c for c in expand("anchors_cpu")}
    assert {m for (t, s, m) in cells if t == "question_formation" and s == 0} == {
        "zero_shot", "tell", "tell_auto_anchor", "tell_no_anchor"}
    b = bench_run.Bench(bench_run.parse_args(["--grid", "anchors_cpu", "--out", str(tmp_path / "r.json"),
                                              "--model", str(tiny_model), "--work", str(tmp_path / "w"),
                                              "--device", "cpu"]))
    hand = yaml.safe_load(b.tell_config_path(cells["question_formation", 0, "tell"]).read_text())
    auto_path = b.tell_config_path(cells["question_formation", 0, "tell_auto_anchor"])
    auto = yaml.safe_load(auto_path.read_text())
    assert auto_path.parent.name.startswith("question_formation-tell_auto_anchor-")
    assert auto["tell_anchor"] == "auto" and hand["tell_anchor"].startswith("Grammar tool")
    assert {k: v for k, v in auto.items() if k not in ("tell_anchor", "output_dir")} == \
        {k: v for k, v in hand.items() if k not in ("tell_anchor", "output_dir")}
    no_anchor_twin = b.tell_config_path(cells["question_formation", 0, "tell_no_anchor"])
    assert no_anchor_twin.parent.name.startswith("question_formation-tell-")


def test_a_task_given_as_a_path_to_its_yaml_gets_a_cell_folder_inside_the_work_folder(tmp_path):
    """`load_task` takes a path; the cell folder and data file are named by the task, not by that path."""
    sys.path.insert(0, str(ROOT / "bench"))
    from tellbench.spec import Cell

    for task in (str(ROOT / "bench" / "tasks" / "question_formation.yaml"), "bench/tasks/question_formation.yaml",
                 "question_formation"):
        cell = Cell(task, "tell", 10, 0, "auto", 50.0)
        assert cell.task_name == "question_formation" and "/" not in cell.slug
        work = tmp_path / "work"
        (work / "cells" / cell.slug).relative_to(work)  # what the runner does with every cell folder


@pytest.mark.parametrize("native", ["1", "0"])
def test_the_cpu_profile_trains_bf16_only_where_the_cpu_has_it_and_names_the_cpu(tiny_model, tmp_path, native,
                                                                                 monkeypatch):
    """`bf16: auto` in the cpu profile is resolved by the detection the plugin uses: configs, the record's
    `precision` and the plain cells' plugin listing follow it; the device names the CPU and its bf16."""
    from axolotl_tell.cpu_precision import ENV

    monkeypatch.setenv(ENV, native)
    sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
    import run as bench_run
    from tellbench.spec import expand

    b = bench_run.Bench(bench_run.parse_args(["--grid", "smoke", "--out", str(tmp_path / "r.json"),
                                              "--model", str(tiny_model), "--work", str(tmp_path / "w"),
                                              "--device", "cpu"]))
    assert bench_run.load_grids(b.args.grids)["profiles"]["cpu"]["bf16"] == "auto"
    settings = b.settings(expand("smoke")[0])
    assert settings["bf16"] is (native == "1") and b.cpu_bf16(settings) is (native == "1")
    assert b.cpu.cpu in b.device_name
    assert b.device_name.endswith(f"{'' if native == '1' else 'no '}native bf16)")


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "tasks").is_dir(), reason="needs ../shared/data")
def test_tell_end_from_best_reads_tell_from_the_tell_best_runs_last_checkpoint(tiny_model, tmp_path):
    """`--tell-end-from-best`: one training serves both cells; `tell` is scored from tell_best's last checkpoint."""
    sys.path.insert(0, str(ROOT / "bench"))
    from tellbench.configs import KEEP_BEST_KEYS

    out = tmp_path / "results" / "smoke.json"
    proc = bench("--grid", "smoke", "--model", str(tiny_model), "--out", str(out), "--work", str(tmp_path / "work"),
                 "--device", "cpu", "--methods", "tell", "tell_best", "--variants", "-", "--tell-end-from-best")
    runs = {r["method"]: r for r in json.loads(out.read_text())["runs"]}
    assert sorted(runs) == ["tell", "tell_best"]
    tell, best = runs["tell"], runs["tell_best"]
    # tell_best ran first (the grid lists tell first) and trained; the tell cell holds its config and nothing trained
    assert proc.stdout.index(f"{best['key']} ...") < proc.stdout.index(f"{tell['key']} ... (the end point of")
    cells = tmp_path / "work" / "cells"
    assert (cells / "question_formation-tell-n10-s0-r2-g2" / "config.yml").is_file()
    assert not (cells / "question_formation-tell-n10-s0-r2-g2" / "train.log").exists()
    assert tell["end_point_of"] == best["key"] and tell["wall_s"] == best["wall_s"]
    assert tell["steps"] == best["steps"] and tell["plan_sha256"] == best["plan_sha256"]
    # the checkpoint scored is the last step's: the bench's validation score of it is the plugin's last evaluation
    assert best["val_curve"][-1]["step"] == tell["steps"] and tell["val_score"] == best["val_curve"][-1]["value"]
    # the twin records its own keys (TELL at the defaults), not the keep-best ones, and counts as that cell
    assert tell["tell_keys"] == {k: v for k, v in best["tell_keys"].items() if k not in KEEP_BEST_KEYS}
    assert "tell_keep_best" not in tell["tell_keys"] and tell["prompt"] == "anchored"
    assert not list((cells / "question_formation-tell_best-n10-s0-r2-g2" / "out").glob("checkpoint-*"))


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "tasks").is_dir(), reason="needs ../shared/data")
def test_general_eval_curve_adds_the_held_out_general_rows_to_tell_best_and_reads_their_loss_back(tiny_model,
                                                                                                 tmp_path):
    """--general-eval-curve: a tell_best config evaluates the held-out general rows (Axolotl's `test_datasets`) and
    the run records `eval_tell/general_loss` per evaluation from the last checkpoint's log; off, nothing changes."""
    import yaml

    sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
    import run as bench_run
    from tellbench import axo
    from tellbench.spec import expand

    cell = next(c for c in expand("leverage_cpu") if c.method == "tell_best" and c.task_name == "object_counting"
                and c.task_rows == 10 and c.seed == 2)
    configs = {}
    for flag in ([], ["--general-eval-curve"]):
        b = bench_run.Bench(bench_run.parse_args(["--grid", "leverage_cpu", "--out", str(tmp_path / "r.json"),
                                                  "--model", str(tiny_model), "--work", str(tmp_path / "w"),
                                                  "--device", "cpu", *flag]))
        configs[bool(flag)] = yaml.safe_load(b.tell_config_path(cell).read_text())
    assert "test_datasets" not in configs[False]
    assert configs[True]["test_datasets"] == [{"path": b.general(cell)["heldout"], "ds_type": "json",
                                               "type": "chat_template"}]
    assert {k: v for k, v in configs[True].items() if k != "test_datasets"} == configs[False]

    out = tmp_path / "out"
    for step, history in ((20, [{"step": 20, "eval_tell/general_loss": 1.70}]),
                          (42, [{"step": 20, "eval_tell/general_loss": 1.70}, {"step": 30, "loss": 2.0},
                                {"step": 42, "eval_tell/general_loss": 1.75, "eval_loss": 1.1}])):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    assert axo.eval_general_curve(out) == [{"step": 20, "general_loss": 1.70}, {"step": 42, "general_loss": 1.75}]
    assert axo.eval_general_curve(tmp_path / "none") == []


def test_the_end_point_check_lets_only_evaluation_keys_differ():
    """--tell-end-from-best reads a tell cell from its tell_best twin only when both trained the same run: keep-best
    keys and an eval set (`test_datasets`, --general-eval-curve) only read the model; a training key must match."""
    sys.path.insert(0, str(ROOT / "bench"))
    from tellbench.configs import same_training

    tell = {"learning_rate": 5e-4, "seed": 2, "output_dir": "a"}
    best = {**tell, "output_dir": "b", "tell_keep_best": True, "tell_eval_generate": "exact_match",
            "test_datasets": [{"path": "general_heldout.jsonl", "ds_type": "json", "type": "chat_template"}]}
    assert same_training(tell, best)
    assert not same_training(tell, {**best, "learning_rate": 2e-4})


def test_the_seed_steps_run_only_the_default_cells():
    """`bench/leverage_cpu.sh s30/s100` (seeds_at) add seeds to sft_best, TELL and tell_best at the defaults; at 100
    rows the lever blocks (12 repeats, weight 3, learning rate 2e-4, ratio 10) also hold `tell` cells on every seed, and the
    step once selected them too: three unplanned lever runs per task and seed."""
    import re
    import shlex

    sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
    import run as bench_run

    script = (ROOT / "bench" / "leverage_cpu.sh").read_text()
    body = script[script.index("\nseeds_at() {"):script.index("\nstep_s30()")]
    call = re.search(r'cells (--tasks "\$t" .*?); done', re.sub(r"\\\n\s*", " ", body), re.S).group(1)
    argv = [a.replace("$t", "opinion_sentiment").replace("$n", "100").replace("$s", "1") for a in shlex.split(call)]
    args = bench_run.parse_args(["--grid", "leverage_cpu", "--out", "unused.json", *argv])
    chosen = bench_run.select(bench_run.expand("leverage_cpu", bench_run.load_grids(args.grids)), args)
    assert sorted(c.key for c in chosen) == sorted(
        f"opinion_sentiment|{m}|n=100|seed=1|r=auto|g={g}" for m, g in (("sft_best", 0), ("tell", 3), ("tell_best", 3)))


def _leverage_step_selection(step: str, task: str):
    """What one `bench/leverage_cpu.sh` step's `cells` call asks `bench/run.py` for, on ``task``: (args, cells)."""
    import re
    import shlex

    sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
    import run as bench_run

    script = re.sub(r"\\\n\s*", " ", (ROOT / "bench" / "leverage_cpu.sh").read_text())
    body = re.search(rf"\nstep_{step}\(\)\s+\{{(.*?done; \}})", script, re.S).group(1)
    call = re.search(r'cells (--tasks "\$t" .*?); done', body, re.S).group(1)
    argv = [a.replace("$t", task) for a in shlex.split(call)]
    args = bench_run.parse_args(["--grid", "leverage_cpu", "--out", "unused.json", *argv])
    return args, bench_run.select(bench_run.expand("leverage_cpu", bench_run.load_grids(args.grids)), args)


def test_the_tell_best_repeats_step_runs_the_12_repeat_pair_and_nothing_else():
    """`bench/leverage_cpu.sh tb12_100` (rule 6's lever, eighteenth session): `tell_best` over 12 repeats and the
    12-repeat `tell` it can record from the same run, never a default cell nor another lever's (weight 3, rate
    2e-4), whose blocks also hold `tell` cells at 100 rows."""
    args, chosen = _leverage_step_selection("tb12_100", "fact_verification")
    assert args.tell_end_from_best
    assert sorted(c.key for c in chosen) == sorted(f"fact_verification|{m}|n=100|seed=0|r=12|g=3"
                                                   for m in ("tell", "tell_best"))


def test_the_ratio_step_runs_one_ratio_10_tell_cell_and_nothing_else():
    """`bench/leverage_cpu.sh g10_100` (rule 4's last lever, nineteenth session): one `tell` cell at ratio 10, seed 0,
    read as the ratio lever against the default. (The block holds `tell` cells on every seed at 100 rows: the seed
    steps' test above checks they never pick them up.)"""
    sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
    from tellbench.frontier import levers_off_default

    _, chosen = _leverage_step_selection("g10_100", "question_formation")
    assert [(c.key, c.general_ratio) for c in chosen] == [("question_formation|tell|n=100|seed=0|r=auto|g=10|v=g10",
                                                           10.0)]
    recorded = {"method": "tell", "task_rows": 100, "task_repeats": 6, "task_loss_weight": 10.0, "tell_keys": {}}
    assert levers_off_default({**recorded, "general_ratio": 3.0}) == set()
    assert levers_off_default({**recorded, "general_ratio": 10.0}) == {"tell_general_ratio"}


def test_the_30_row_repeats_step_runs_40_repeat_tell_cells_on_every_seed_and_nothing_else():
    """`bench/leverage_cpu.sh r40_30` (rule 4's first lever at 30 rows, on all six tasks since the twentieth session):
    the 40-repeat `tell` cell on seeds 0-2, never the default cell beside it (same method, rows and seeds)."""
    _, chosen = _leverage_step_selection("r40_30", "opinion_sentiment")
    assert sorted(c.key for c in chosen) == [f"opinion_sentiment|tell|n=30|seed={s}|r=40|g=3" for s in (0, 1, 2)]


def test_the_plain_mixing_step_runs_tell_no_anchor_at_10_rows_on_every_seed_and_nothing_else():
    """`bench/leverage_cpu.sh na10` (twenty-third session): the peer `tell_no_anchor` on seeds 0-2 at 10 rows, the
    seeds TELL has there; never a TELL cell (it reads TELL's plan through the plugin, it does not record one)."""
    _, chosen = _leverage_step_selection("na10", "question_formation")
    assert sorted(c.key for c in chosen) == [f"question_formation|tell_no_anchor|n=10|seed={s}|r=auto|g=3"
                                             for s in (0, 1, 2)]


def test_the_recorded_30_row_steps_still_select_only_their_default_cells():
    """The 40-repeat block covers every task at 30 rows, so the steps that recorded the default 30-row cells
    (new30, dev30, os30, new30b) say `--repeats auto`; without it a rerun would add a 40-repeat lever run. (os30
    names its one task instead of looping over `$t`, which the helper reads, so it is not checked here.)"""
    for step, task in (("new30", "sports_understanding"), ("dev30", "opinion_sentiment"),
                       ("new30b", "fact_verification")):
        _, chosen = _leverage_step_selection(step, task)
        assert chosen and all(c.task_repeats == "auto" for c in chosen), (step, [c.key for c in chosen])
