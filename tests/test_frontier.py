"""The frontier report's reading of runs: which TELL run is "at the defaults" (bench/tellbench/frontier.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from tellbench.frontier import gap_noise, goal, is_default_tell, tell_label  # noqa: E402


@pytest.fixture(autouse=True)
def defaults_at_ratio_3_weight_3(monkeypatch):
    """The reading is judged against the plugin's defaults (read from axolotl_tell at run time); these tests pin
    them so they test the reading, not today's default values."""
    import tellbench.frontier as frontier

    monkeypatch.setattr(frontier, "plugin_defaults", lambda: {
        "tell_general_ratio": 3.0, "tell_task_repeats": "auto", "tell_task_loss_weight": 3.0, "tell_spread": "even",
        "tell_task_loss_share": "off"})


def test_the_reading_follows_the_plugins_defaults(monkeypatch):
    import tellbench.frontier as frontier

    monkeypatch.undo()
    from axolotl_tell.args import DEFAULT_GENERAL_RATIO, DEFAULT_TASK_LOSS_WEIGHT

    run = tell_run(10, 20, ratio=float(DEFAULT_GENERAL_RATIO), weight=float(DEFAULT_TASK_LOSS_WEIGHT))
    assert frontier.is_default_tell(run)
    assert not frontier.is_default_tell({**run, "task_loss_weight": DEFAULT_TASK_LOSS_WEIGHT + 1})
    assert not frontier.is_default_tell({**run, "tell_keys": {**run["tell_keys"], "tell_spread": "random"}})


def tell_run(rows: int, repeats: int, requested="auto", ratio=3.0, weight=3.0, precision="bf16",
             spread="even") -> dict:
    keys = {"tell_general_ratio": ratio, "tell_task_repeats": requested, "tell_task_loss_weight": weight,
            "tell_spread": spread}
    return {"method": "tell", "task_rows": rows, "general_ratio": ratio, "task_repeats_requested": requested,
            "task_repeats": float(repeats), "task_loss_weight": weight, "tell_keys": keys, "precision": precision}


@pytest.mark.parametrize(
    "run, default, label",
    [
        (tell_run(10, 20), True, "TELL g3 w3"),
        # 30 rows: the earlier `auto` (200 occurrences) ran 7 repeats; today's auto gives 20
        (tell_run(30, 7), False, "TELL g3 r7 w3"),
        (tell_run(30, 20, requested=20), True, "TELL g3 w3"),
        (tell_run(10, 40, requested=40), False, "TELL g3 r40 w3"),
        (tell_run(10, 20, weight=1.0), False, "TELL g3"),
        (tell_run(10, 20, ratio=10.0), False, "TELL g10 w3"),
        (tell_run(10, 20, precision="fp32"), False, "TELL g3 w3 fp32"),
        # the spread lever (frontier_gpu's `random` variant) is not the default even spread
        (tell_run(10, 20, spread="random"), False, "TELL g3 w3 random"),
    ],
)
def test_default_tell_is_judged_by_the_repeats_it_ran_with(run, default, label):
    assert is_default_tell(run) is default
    assert tell_label(run) == label


def test_sft_is_never_default_tell():
    assert not is_default_tell({**tell_run(10, 20), "method": "sft_best"})


def point(hits_by_seed: dict) -> dict:
    """A frontier point as ``points`` builds it, from each seed's row hits."""
    seeds = sorted(hits_by_seed)
    hits = [hits_by_seed[s] for s in seeds]
    return {"seed": seeds, "hits": hits, "n": [len(h) for h in hits],
            "score": [h.count("1") / len(h) for h in hits], "delta": [0.0] * len(seeds)}


def test_gap_noise_pairs_rows_where_both_sides_kept_them():
    # 100 rows; the two agree on 90 of them: the paired error is far below the binomial one
    tell = point({0: "1" * 60 + "0" * 40})
    best = point({0: "1" * 55 + "0" * 5 + "1" * 5 + "0" * 35})
    paired, how = gap_noise(tell, best)
    assert how == "paired"
    diffs = [0] * 55 + [1] * 5 + [-1] * 5 + [0] * 35
    assert paired == pytest.approx((sum(d * d for d in diffs) / 99) ** 0.5 / 10)
    unpaired, how = gap_noise({**tell, "hits": [None]}, best)
    assert how == "binomial"
    p = 61 / 102  # (60 + 1) / (100 + 2)
    assert unpaired == pytest.approx((2 * p * (1 - p) / 100) ** 0.5)
    assert paired < unpaired / 2


def test_gap_noise_needs_the_same_seeds_on_both_sides_to_pair():
    tell = point({0: "1" * 60 + "0" * 40, 1: "1" * 50 + "0" * 50})
    best = point({0: "1" * 60 + "0" * 40})
    assert gap_noise(tell, best)[1] == "binomial"
    assert gap_noise({**tell, "n": [100, None]}, best) == (None, "unknown")
    # a perfect score still has sampling error
    perfect = point({0: "1" * 100})
    assert gap_noise({**perfect, "hits": [None]}, perfect)[0] > 0.01


def run(task, method, seed, score, loss, hits=None, **extra):
    return {"task": task, "task_rows": 10, "method": method, "seed": seed, "score": score, "general_loss": loss,
            "test_rows": 100, "row_hits": hits, **extra}


def kept(task, seed, score, loss, **extra):
    """A ``tell_best`` run whose training was TELL at the defaults, as the bench records it."""
    return {**tell_run(10, 20), **run(task, "tell_best", seed, score, loss, **extra)}


def test_goal_says_when_a_miss_is_inside_the_test_sets_noise():
    base = run("t", "zero_shot", 0, 0.0, 1.6)
    tell = {**tell_run(10, 20), **run("t", "tell", 0, 0.60, 1.59, "1" * 60 + "0" * 40)}
    close = run("t", "sft_best", 0, 0.63, 2.5, "1" * 60 + "0" * 37 + "1" * 3, frontier=[])
    far = run("t", "sft_best", 0, 0.90, 2.5, "1" * 90 + "0" * 10, frontier=[])
    line = goal([base, tell, close]).splitlines()[-1]
    assert "missed (-0.030), inside 2 SE" in line and "(paired)" in line
    line = goal([base, tell, far]).splitlines()[-1]
    assert "missed (-0.300)" in line and "inside" not in line


def test_goal_reads_tell_best_against_sft_best_plus_two_points():
    base = run("t", "zero_shot", 0, 0.0, 1.6)
    tell = {**tell_run(10, 20), **run("t", "tell", 0, 0.60, 1.59)}
    best = run("t", "sft_best", 0, 0.60, 2.5, frontier=[])
    line = goal([base, tell, best, kept("t", 0, 0.63, 1.60)]).splitlines()[-1]
    assert line.endswith("| 0.630 (n=1) | +0.030 (met) |")
    line = goal([base, tell, best, kept("t", 0, 0.61, 1.60)]).splitlines()[-1]
    assert line.endswith("+0.010 (missed) |")
    line = goal([base, tell, best, kept("t", 0, 0.70, 1.70)]).splitlines()[-1]  # forgot: +0.1 nats
    assert line.endswith("+0.100 (missed; general loss +0.100 over the base) |")
    assert goal([base, tell, best]).splitlines()[-1].endswith("| – | – |")
    # at the ceiling no checkpoint can clear sft_best by 2 points: the miss says so
    top = run("t", "sft_best", 0, 0.99, 2.5, frontier=[])
    line = goal([base, tell, top, kept("t", 0, 1.0, 1.60)]).splitlines()[-1]
    assert line.endswith("+0.010 (missed; unreachable: sft_best at 0.990, the ceiling) |")


def test_gap_noise_pairs_the_seeds_that_kept_row_hits_and_counts_the_rest_as_binomial():
    a, b = "1" * 60 + "0" * 40, "1" * 55 + "0" * 5 + "1" * 5 + "0" * 35
    tell = point({0: a, 1: a})
    best = point({0: b, 1: b})
    tell["hits"][0] = None  # seed 0 recorded before row_hits existed
    se, how = gap_noise(tell, best)
    assert how == "paired on 1 of 2 seeds"
    paired_var = (10 / 99) / 100
    p = 61 / 102
    assert se == pytest.approx(((paired_var + 2 * p * (1 - p) / 100) ** 0.5) / 2)


def test_report_table_keeps_tell_runs_of_different_repeats_apart():
    from tellbench.report import table

    def tell(seed, repeats, score):
        return {"task": "t", "task_rows": 30, "method": "tell", "task_repeats_requested": "auto", "general_ratio": 3.0,
                "variant": "eq", "seed": seed, "task_repeats": repeats, "score": score, "general_loss": 1.6,
                "metric": "accuracy", "steps": 10, "train_tokens": 100, "wall_s": 1.0}

    lines = [line for line in table([tell(0, 7, 0.56), tell(1, 20, 0.68), tell(2, 20, 0.70)]).splitlines()
             if line.startswith("| t |")]
    assert len(lines) == 2
    assert "auto → 7 " in lines[0] and "0.560" in lines[0] and lines[0].endswith("| 1 |")
    assert "auto → 20 " in lines[1] and "0.690" in lines[1] and lines[1].endswith("| 2 |")


def weighted(task, rows, seed, weight, val, score, loss, **extra) -> dict:
    run = {**tell_run(rows, 20, weight=weight), "task": task, "seed": seed, "score": score, "general_loss": loss}
    if val is not None:
        run["val_score"] = val
    return {**run, **extra}


def test_lever_choice_weight_pairs_each_weight_with_the_default_on_validation_rows():
    from tellbench.validation import lever_choice

    qf = "question_formation"
    base = {"method": "zero_shot", "task": qf, "task_rows": 10, "seed": 0, "score": 0.0, "general_loss": 1.6}
    runs = [base,
            weighted(qf, 10, 0, 3.0, 0.80, 0.90, 1.5), weighted(qf, 10, 0, 10.0, 0.90, 0.92, 1.55),
            weighted(qf, 10, 1, 3.0, 0.70, 0.80, 1.5), weighted(qf, 10, 1, 10.0, 0.60, 0.86, 1.61),
            # no validation score on one side: not paired
            weighted(qf, 30, 0, 3.0, None, 1.0, 1.5), weighted(qf, 30, 0, 10.0, 1.0, 1.0, 1.5),
            # another lever as well: not a weight-only comparison
            weighted(qf, 10, 2, 3.0, 0.5, 0.5, 1.5),
            {**weighted(qf, 10, 2, 10.0, 0.9, 0.9, 1.5), "general_ratio": 10.0}]
    text = lever_choice(runs, "tell_task_loss_weight")
    row = [line for line in text.splitlines() if line.startswith("| 10 |")]
    assert len(row) == 1, text
    cells = [c.strip() for c in row[0].split("|")[1:-1]]
    assert cells[1] == "2"  # seeds 0 and 1 of qf/10 only
    assert cells[2].startswith("+0.000 ")  # +0.10 and -0.10
    assert "QF10/s0 +0.10" in cells[2] and "QF10/s1 -0.10" in cells[2]
    assert cells[3] == "–"  # no run kept its validation rows' hits
    assert cells[4] == "+0.040"
    assert cells[5] == "+0.010 / -0.100"  # the worst run at weight 10 (1.61 vs the base 1.6), and at 3


def test_lever_choice_weight_counts_validation_rows_won_and_lost_with_a_sign_test():
    from tellbench.validation import lever_choice, sign_test

    runs = [weighted("question_formation", 10, 0, 3.0, 0.5, 0.9, 1.5, val_row_hits="1100"),
            weighted("question_formation", 10, 0, 10.0, 0.75, 0.9, 1.5, val_row_hits="1011")]
    row = [line for line in lever_choice(runs, "tell_task_loss_weight").splitlines() if line.startswith("| 10 |")][0]
    assert "+2 / −1 (p = 1)" in row
    assert sign_test(6, 0) == pytest.approx(2 / 64)  # the seed-1 pair quoted in BENCHMARKS: p ≈ 0.03
    assert sign_test(10, 1) == pytest.approx(2 * 12 / 2048)
    assert sign_test(0, 0) == 1.0


def test_lever_choice_weight_is_empty_without_validation_scores():
    from tellbench.validation import lever_choice

    assert lever_choice([weighted("question_formation", 10, 0, 3.0, None, 0.9, 1.5),
                          weighted("question_formation", 10, 0, 10.0, None, 0.9, 1.5)], "tell_task_loss_weight") == ""


def test_lever_choice_pairs_ratio_and_spread_runs_with_the_defaults_and_shows_their_cost():
    from tellbench.validation import lever_choice

    os_ = "opinion_sentiment"

    def run(seed, val, score, steps, ratio=3.0, spread="even"):
        r = {**weighted(os_, 10, seed, 3.0, val, score, 1.6, steps=steps), "general_ratio": ratio}
        r["tell_keys"] = {**r["tell_keys"], "tell_general_ratio": ratio, "tell_spread": spread}
        return r

    runs = [run(0, 0.50, 0.66, 40), run(0, 0.56, 0.68, 230, ratio=50.0), run(0, 0.52, 0.68, 40, spread="random"),
            run(1, 0.60, 0.68, 42), run(1, 0.54, 0.72, 240, ratio=50.0),
            # two levers at once: in neither table
            run(2, 0.50, 0.60, 40), run(2, 0.90, 0.90, 240, ratio=50.0, spread="random")]
    ratio = [line for line in lever_choice(runs, "tell_general_ratio").splitlines() if line.startswith("| 50 |")]
    assert len(ratio) == 1
    cells = [c.strip() for c in ratio[0].split("|")[1:-1]]
    assert cells[1] == "2" and cells[2].startswith("+0.000 ") and "OS10/s0 +0.06" in cells[2]
    assert cells[4] == "+0.030" and cells[6] == "235 / 41"
    spread = [line for line in lever_choice(runs, "tell_spread").splitlines() if line.startswith("| random |")]
    assert len(spread) == 1 and "| 1 | +0.020 " in spread[0]
    assert "spread vs even" in lever_choice(runs, "tell_spread")


def test_compare_devices_lines_up_the_seeds_both_machines_ran(tmp_path):
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from compare_devices import compare

    def results(name, tell_score, best_score, seeds):
        runs = [{"method": "zero_shot", "task": "qf", "task_rows": 10, "seed": 0, "score": 0.0, "general_loss": 1.6}]
        for s in seeds:
            runs += [{**weighted("qf", 10, s, 3.0, 0.5, tell_score, 1.5)},
                     {"method": "sft_best", "task": "qf", "task_rows": 10, "seed": s, "score": best_score,
                      "general_loss": 2.6},
                     weighted("qf", 10, s, 1.0, 0.5, 0.1, 1.5)]  # not at the defaults: left out
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"runs": runs}))
        return path

    text = compare(results("cpu", 0.9, 0.8, [0, 1]), results("gpu", 0.95, 0.85, [1, 2]))
    rows = [line for line in text.splitlines() if line.startswith("| qf |")]
    assert rows[:2] == ["| qf | 10 | TELL (defaults) | 1 | 0.90 | 0.95 | -0.100 | -0.100 |",
                        "| qf | 10 | sft_best | 1 | 0.80 | 0.85 | +1.000 | +1.000 |"]
    assert "| qf | 10 | TELL (defaults) | 1 | 0.900 | 0.950 |" in rows


def test_a_task_loss_share_run_is_one_lever_paired_with_the_default_weight_run():
    """A share run's weight resolves to 1: it differs from the defaults by the share alone (the share replaces the
    weight), so it pairs with the default run, and it is neither a default run nor a weight-lever run."""
    from tellbench.frontier import at_defaults_but
    from tellbench.validation import lever_choice

    qf = "question_formation"
    default = weighted(qf, 10, 0, 3.0, 0.80, 0.90, 1.5)
    share = {**weighted(qf, 10, 0, 1.0, 0.85, 0.95, 1.52), "task_loss_share": 0.75,
             "tell_keys": {**default["tell_keys"], "tell_task_loss_share": 0.75}}
    assert tell_label(share) == "TELL g3 share0.75" and not is_default_tell(share)
    assert at_defaults_but(share, "tell_task_loss_share") and not at_defaults_but(share, "tell_task_loss_weight")
    assert lever_choice([default, share], "tell_task_loss_weight") == ""
    row = [line for line in lever_choice([default, share], "tell_task_loss_share").splitlines()
           if line.startswith("| 0.75 |")]
    assert len(row) == 1 and "QF10/s0 +0.05" in row[0]


def test_data_efficiency_sets_tell_at_n_rows_against_sft_best_at_three_times_as_many():
    from tellbench.frontier import data_efficiency

    base = run("t", "zero_shot", 0, 0.0, 1.6)
    tell10 = {**tell_run(10, 20), **run("t", "tell", 0, 0.55, 1.59)}
    kept10 = kept("t", 0, 0.70, 1.60)
    sft30 = [{**run("t", "sft_best", s, score, 2.5), "task_rows": 30} for s, score in ((0, 0.60), (1, 0.80))]
    sft10 = run("t", "sft_best", 0, 0.50, 2.5)
    text = data_efficiency([base, tell10, kept10, sft10, *sft30])
    assert text.splitlines()[-1] == ("| t | 10 | 0.550 (n=1) (-0.150) | 0.700 (n=1) (+0.000) | 30 | "
                                     "0.700 ± 0.141 (n=2) |")
    # no sft_best at 3N or more: no line (10 rows of SFT are not 3 x 10)
    assert data_efficiency([base, tell10, kept10, sft10]) == ""


def test_peers_are_read_against_tell_on_both_axes():
    from tellbench.frontier import peers

    base = run("t", "zero_shot", 0, 0.0, 1.6)
    tell = {**tell_run(10, 20), **run("t", "tell", 0, 0.60, 1.59)}
    lines = peers([base, tell, run("t", "sft_scaled", 0, 0.595, 1.61),
                   run("t", "tell_no_anchor", 0, 0.50, 1.70)]).splitlines()
    assert lines[2].startswith("| t | 10 | sft_scaled | 0.595 (n=1) | +0.010 |")
    assert lines[2].endswith("| matches TELL on both axes |")
    assert lines[3].endswith("| task -0.100 vs TELL; general loss +0.100 over the base |")
    assert peers([base, tell]) == ""


def test_peers_show_the_gap_to_tell_seed_by_seed_on_the_seeds_both_ran():
    from tellbench.frontier import peers

    runs = [run("t", "zero_shot", 0, 0.0, 1.6)]
    for seed, tell in enumerate([0.60, 0.70, 0.50]):
        runs.append({**tell_run(10, 20), **run("t", "tell", seed, tell, 1.59)})
    runs += [run("t", "tell_no_anchor", 0, 0.65, 1.58), run("t", "tell_no_anchor", 2, 0.40, 1.58)]
    lines = peers(runs).splitlines()
    assert "peer − TELL by seed" in lines[0]
    # seeds 0 and 2 only (seed 1 has no peer run); the paired mean is over those two, not TELL's three seeds
    assert "| s0 +0.05 s2 -0.10 (paired mean -0.025) |" in lines[2]


def test_constant_answer_is_the_best_single_answer_among_the_most_common_references():
    from tellbench.scoring import answer_mix, constant_answer

    assert constant_answer("accuracy", ["yes", "no", "yes", "maybe"]) == {"answer": "yes", "score": 0.5}
    assert constant_answer("accuracy", ["no", "yes"])["answer"] == "no"  # a tie: the first of the most common
    assert constant_answer("exact_match", []) is None
    assert answer_mix([" yes", "yes ", "no", "yes"]) == [["yes", 3], ["no", 1]]


def test_a_cell_where_no_method_clears_the_constant_answer_ranks_no_method():
    from tellbench.frontier import floors

    floor = {"answer": "plausible", "score": 0.51}
    base = run("t", "zero_shot", 0, 0.0, 1.6)
    tell = {**tell_run(10, 20), **run("t", "tell", 0, 0.38, 1.59), "constant_answer": floor, "test_rows": 100}
    best = {**run("t", "sft_best", 0, 0.52, 2.5, frontier=[]), "constant_answer": floor, "test_rows": 100}
    text = floors([base, tell, best])
    assert text.splitlines()[-1] == ("| t | 10 | `plausible` | 0.510 | 0.000 (-0.510) | 0.520 (+0.010) | "
                                     "0.380 (-0.130) | – | – / – / – | no method clears it by 2 SE: this cell ranks "
                                     "no method |")
    assert "no method clears the constant answer" in goal([base, tell, best]).splitlines()[-1]
    # 0.51 + 2 SE (0.05 at n=100) is ~0.61: a method at 0.70 shows skill, and the goal line says nothing more
    best["score"] = 0.70
    assert floors([base, tell, best]).splitlines()[-1].endswith("| some method clears it by 2 SE |")
    assert "constant answer" not in goal([base, tell, best]).splitlines()[-1]
    assert floors([base, {k: v for k, v in tell.items() if k != "constant_answer"},
                   {k: v for k, v in best.items() if k != "constant_answer"}]) == ""


def test_lever_choice_leaves_out_pairs_where_both_runs_sit_at_the_validation_floor():
    from tellbench.validation import lever_choice

    floor = {"val_constant_answer": {"answer": "plausible", "score": 0.5}, "val_rows": 50}
    st, qf = "sports_understanding", "question_formation"
    runs = [{**weighted(st, 30, 0, 3.0, 0.52, 0.4, 1.5), **floor},
            {**weighted(st, 30, 0, 10.0, 0.56, 0.5, 1.5), **floor},
            # one side clears the floor (0.5 + 2 SE at 50 rows is ~0.64): the pair counts
            {**weighted(st, 30, 1, 3.0, 0.50, 0.4, 1.5), **floor},
            {**weighted(st, 30, 1, 10.0, 0.70, 0.7, 1.5), **floor},
            weighted(qf, 10, 0, 3.0, 0.80, 0.90, 1.5), weighted(qf, 10, 0, 10.0, 0.90, 0.92, 1.5)]
    row = [line for line in lever_choice(runs, "tell_task_loss_weight").splitlines() if line.startswith("| 10 |")][0]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "2 (+1 at the floor, not counted)"
    assert "SU30/s1 +0.20" in cells[2] and "QF10/s0 +0.10" in cells[2] and "SU30/s0" not in cells[2]
    only_floor = lever_choice(runs[:2], "tell_task_loss_weight")
    assert "| 10 | 0 (+1 at the floor, not counted) | – |" in only_floor


def test_val_peaks_places_each_tell_best_peak_and_counts_late_ones_above_the_floor():
    from tellbench.validation import val_peaks

    def kept(seed, values, steps=70, score=0.40, **extra):
        curve = [{"step": 10 * (i + 1), "value": v} for i, v in enumerate(values)]
        keys = {**tell_run(10, 20)["tell_keys"], "tell_keep_best": True, "tell_eval_generate": "exact_match"}
        return {**tell_run(10, 20), **run("t", "tell_best", seed, score, 1.59), "tell_keys": keys, "steps": steps,
                "val_curve": curve, "val_rows": 50, "val_constant_answer": {"answer": "4", "score": 0.10}, **extra}

    late = kept(0, [0.1, 0.2, 0.3, 0.3, 0.4, 0.6, 0.5])  # first maximum at step 60 of 70: late
    early = kept(1, [0.2, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3], score=0.45)  # step 20 of 70: early, then down 0.2
    end = {**tell_run(10, 20), **run("t", "tell", 1, 0.35, 1.59)}
    floor = kept(2, [0.10, 0.12, 0.10, 0.14, 0.10, 0.10, 0.10])  # within 2 SE of answering "4" everywhere
    flat = kept(3, [1.0] * 7)  # a ceiling from the first evaluation: no peak to place
    lines = val_peaks([late, early, end, floor, flat]).splitlines()
    assert lines[2] == "| t | 10 | 0 | 70 | 0.10 0.20 0.30 0.30 0.40 0.60 0.50 | 60 (86%) late | -0.10 | – | counted |"
    assert lines[3] == ("| t | 10 | 1 | 70 | 0.20 0.50 0.30 0.30 0.30 0.30 0.30 | 20 (29%) | -0.20 | "
                        "0.45 vs 0.35 (+0.10) | counted |")
    assert lines[4].endswith("| at the floor, not counted |") and lines[5].endswith("| flat, not counted |")
    assert lines[-1] == "Peaked at or after 67% of the run (counted runs): 10 rows: 1 of 2."
    # a tell_best that trained off the defaults (another ratio) is not read, nor is a run without a curve
    assert val_peaks([{**late, "general_ratio": 10.0}, {**early, "val_curve": None}]) == ""


def test_lever_choice_pairs_repeats_by_the_repeats_each_run_trained_with():
    from tellbench.validation import lever_choice

    oc = "object_counting"

    def run(seed, repeats, val, score, steps, requested="auto", weight=3.0):
        r = {**weighted(oc, 30, seed, weight, val, score, 1.6, steps=steps), "task_repeats": float(repeats)}
        r["tell_keys"] = {**r["tell_keys"], "tell_task_repeats": requested}
        return r

    # today's auto at 30 rows is 20; a run that asked for 20 is the default, one that asked for auto under the old
    # rule (7) is the value 7; a run at 40 that also moved the weight is in neither table
    runs = [run(1, 20, 0.16, 0.19, 117), run(1, 40, 0.22, 0.25, 234, requested=40),
            run(2, 20, 0.18, 0.22, 116, requested=20), run(2, 40, 0.28, 0.17, 235, requested=40),
            run(3, 20, 0.10, 0.10, 117), run(3, 7, 0.30, 0.30, 41),
            run(4, 20, 0.10, 0.10, 117), run(4, 40, 0.90, 0.90, 234, requested=40, weight=10.0)]
    text = lever_choice(runs, "tell_task_repeats")
    assert "repeats vs auto" in text
    forty = [c.strip() for c in [x for x in text.splitlines() if x.startswith("| 40 |")][0].split("|")[1:-1]]
    assert forty[1] == "2" and forty[2] == "+0.080 (OC30/s1 +0.06, OC30/s2 +0.10)"
    assert forty[4] == "+0.005" and forty[6] == "234 / 116"
    seven = [x for x in text.splitlines() if x.startswith("| 7 |")][0]
    assert "| 1 | +0.200 (OC30/s3 +0.20) |" in seven
    # the default is judged the same way: auto's run is default TELL, the 40-repeat run is not
    assert is_default_tell(runs[0]) and is_default_tell(runs[2]) and not is_default_tell(runs[1])


def test_off_constant_splits_hits_on_the_rows_the_constant_answer_misses():
    from tellbench.frontier import floors
    from tellbench.scoring import constant_answer, off_constant

    refs = ["unknown", "Paris", "unknown", "4 August", "unknown"]
    const = constant_answer("exact_match", refs)
    assert const == {"answer": "unknown", "score": 0.6}
    # a run that answers "unknown" everywhere and one that answers the spans: the same score, other skills
    assert off_constant("exact_match", refs, "10101", const) == {"rows": 2, "hits": 0}
    assert off_constant("exact_match", refs, "11010", const) == {"rows": 2, "hits": 2}
    assert off_constant("exact_match", refs, "1101", const) is None and off_constant("exact_match", refs, "1", None) is None

    floor = {"answer": "unknown", "score": 0.28}
    base = run("t", "zero_shot", 0, 0.0, 1.6)
    tell = [{**tell_run(10, 20), **run("t", "tell", s, 0.28, 1.59), "constant_answer": floor,
             "off_constant": {"rows": 72, "hits": h}} for s, h in ((0, 15), (1, 5))]
    best = {**run("t", "sft_best", 0, 0.26, 2.0, frontier=[]), "constant_answer": floor,
            "off_constant": {"rows": 72, "hits": 1}}
    line = floors([base, *tell, best]).splitlines()[-1]
    assert "| 1/72 / 20/144 / – |" in line  # summed over seeds; tell_best did not run


def test_the_learning_rate_is_a_lever_read_from_the_record_and_old_runs_trained_at_the_base_rate():
    from tellbench.frontier import bench_learning_rate, levers_off_default
    from tellbench.validation import lever_choice

    base = bench_learning_rate()
    assert base == 5e-4  # grids.yaml `training`: the rate every record without `learning_rate` trained at
    old = tell_run(100, 6)  # recorded before runs carried their rate
    assert is_default_tell(old) and is_default_tell({**old, "learning_rate": base})
    slow = {**old, "learning_rate": 2e-4}
    assert levers_off_default(slow) == {"learning_rate"} and not is_default_tell(slow)
    assert tell_label(slow) == "TELL g3 w3 lr0.0002" and tell_label(old) == "TELL g3 w3"
    # two levers at once (rate and weight): in neither table
    both = {**slow, "task_loss_weight": 10.0, "tell_keys": {**slow["tell_keys"], "tell_task_loss_weight": 10.0}}
    assert levers_off_default(both) == {"learning_rate", "tell_task_loss_weight"}

    oc = "object_counting"  # 10 rows: `weighted` trains 20 repeats, auto's at 10 rows
    runs = [weighted(oc, 10, 0, 3.0, 0.46, 0.39, 1.6, steps=116),
            {**weighted(oc, 10, 0, 3.0, 0.50, 0.41, 1.6, steps=116), "learning_rate": 2e-4},
            {**weighted(oc, 10, 1, 3.0, 0.30, 0.39, 1.6, steps=116), "learning_rate": base},
            {**weighted(oc, 10, 1, 3.0, 0.26, 0.35, 1.6, steps=116), "learning_rate": 2e-4},
            {**weighted(oc, 10, 2, 3.0, 0.9, 0.9, 1.6, steps=116), "learning_rate": 2e-4, "general_ratio": 10.0}]
    text = lever_choice(runs, "learning_rate")
    assert "learning rate vs 0.0005" in text
    row = [c.strip() for c in [x for x in text.splitlines() if x.startswith("| 0.0002 |")][0].split("|")[1:-1]]
    assert row[1] == "2" and row[2] == "+0.000 (OC10/s0 +0.04, OC10/s1 -0.04)" and row[4] == "-0.010"


def test_seed_spread_shows_each_method_by_seed_and_whose_range_is_wider():
    from tellbench.frontier import seed_spread

    base = run("t", "zero_shot", 0, 0.0, 1.6)
    floor = {"answer": "4", "score": 0.14}

    def seeded(method, seed, score):
        r = {**run("t", method, seed, score, 1.6, frontier=[]), "constant_answer": floor}
        return {**tell_run(10, 20), **r} if method in ("tell", "tell_best") else r

    runs = [base, seeded("sft_best", 0, 0.22), seeded("sft_best", 1, 0.30), seeded("sft_best", 2, 0.23),
            seeded("tell", 0, 0.24), seeded("tell", 1, 0.19), seeded("tell", 2, 0.22),
            seeded("tell", 2, 0.24),  # seed 2 trained twice: it counts once, at its mean 0.23
            seeded("tell_best", 0, 0.24)]
    text = seed_spread(runs)
    row = text.splitlines()[2]
    assert row == ("| t | 10 | s0 0.22 s1 0.30 s2 0.23 (range 0.08) | s0 0.24 s1 0.19 s2 0.23 (range 0.05) | "
                   "s0 0.24 | s0 +0.02 s1 -0.11 s2 +0.00 | no |")
    assert text.endswith("wider than `sft_best`'s in 0 of 1 cells above the constant answer and in 0 of 0 at it.")
    # a single seed per method: nothing to spread
    assert seed_spread([base, seeded("sft_best", 0, 0.22), seeded("tell", 0, 0.24)]) == ""


def test_goal_summary_counts_the_cells_with_three_seeds_and_which_half_of_the_goal_each_meets():
    from tellbench.frontier import goal_summary

    base = run("t", "zero_shot", 0, 0.0, 1.6)

    def seeded(task, method, seed, score, loss=1.55):
        r = {**run(task, method, seed, score, loss, frontier=[])}
        return {**tell_run(10, 20), **r} if method in ("tell", "tell_best") else r

    runs = [base, {**base, "task": "u"}]
    for seed in range(3):  # t: TELL within a point of sft_best, tell_best +3 points; u: TELL 5 under, 2 seeds only
        runs += [seeded("t", "sft_best", seed, 0.60, 2.5), seeded("t", "tell", seed, 0.595),
                 seeded("t", "tell_best", seed, 0.63)]
    for seed in range(2):
        runs += [seeded("u", "sft_best", seed, 0.60, 2.5), seeded("u", "tell", seed, 0.55)]
    text = goal_summary(runs)
    assert text.startswith("Cells with 3+ seeds of `sft_best` and TELL: 1 of 2 (t 10); TELL's goal (score and "
                           "general loss) met on 1 (t 10);")
    assert "its goal met on 1 (t 10), unreachable on 0" in text
    # TELL's general loss over the base + 0.02 fails its half even at the same score
    runs = [r if r["method"] != "tell" or r["task"] != "t" else {**r, "general_loss": 1.65} for r in runs]
    assert "TELL's goal (score and general loss) met on 0;" in goal_summary(runs)


def test_a_gap_of_exactly_one_point_over_seeds_meets_the_goal_despite_float_rounding():
    from tellbench.frontier import goal_summary

    base = run("t", "zero_shot", 0, 0.0, 1.6)
    runs = [base]
    # object_counting 10 rows, twelfth session: means 0.11666… and 0.12666…, a gap of -0.0100000000000000x in floats
    for seed, (best, tell) in enumerate([(0.07, 0.09), (0.18, 0.15), (0.13, 0.11)]):
        runs += [run("t", "sft_best", seed, best, 2.5, frontier=[]),
                 {**tell_run(10, 20), **run("t", "tell", seed, tell, 1.59)}]
    assert "task met" in goal(runs).splitlines()[-1]
    assert "TELL's goal (score and general loss) met on 1 (t 10)" in goal_summary(runs)


@pytest.mark.parametrize("name", ["leverage_cpu", "frontier_cpu", "keep_best_general_cpu"])
def test_the_committed_report_is_what_its_results_file_renders(monkeypatch, tmp_path, name):
    """The tables README and BENCHMARKS quote come from these files: rendering the committed JSON again must give the
    committed .md, so a change of the reading (e.g. the goal's rounding) cannot leave a stale table behind."""
    import shutil

    from tellbench import report

    monkeypatch.undo()  # the real plugin defaults, as the committed reports were rendered with
    results = Path(__file__).resolve().parent.parent / "bench" / "results"
    shutil.copy(results / f"{name}.json", tmp_path / f"{name}.json")
    report.write(tmp_path / f"{name}.json")
    assert (tmp_path / f"{name}.md").read_text(encoding="utf-8") == (results / f"{name}.md").read_text(encoding="utf-8")


def test_a_peer_exactly_one_point_under_tell_over_seeds_matches_it_despite_float_rounding():
    from tellbench.frontier import peers

    runs = [run("t", "zero_shot", 0, 0.0, 1.6)]
    for seed, (tell, peer) in enumerate([(0.07, 0.09), (0.18, 0.15), (0.13, 0.11)]):
        runs += [{**tell_run(10, 20), **run("t", "tell", seed, tell, 1.59)},
                 run("t", "tell_no_anchor", seed, peer, 1.59)]
    assert peers(runs).splitlines()[-1].endswith("| matches TELL on both axes |")


def test_floor_margin_replay_moves_only_choices_inside_one_standard_error_of_the_floor_to_the_end_point():
    from tellbench.validation import floor_margin_replay, floor_margin_table

    def kept(seed, values, chosen, score, loss):
        curve = [{"step": 10 * (i + 1), "value": v} for i, v in enumerate(values)]
        keys = {**tell_run(10, 20)["tell_keys"], "tell_keep_best": True, "tell_eval_generate": "accuracy"}
        return {**tell_run(10, 20), **run("t", "tell_best", seed, score, loss), "key": f"t|tell_best|{seed}",
                "tell_keys": keys, "steps": 70, "val_curve": curve, "val_rows": 50, "chosen_step": chosen,
                "chosen_floor": {"answer": "yes", "score": 0.5}}

    def end(seed, score, loss, twin=True):
        return {**tell_run(10, 20), **run("t", "tell", seed, score, loss),
                **({"end_point_of": f"t|tell_best|{seed}"} if twin else {})}

    one_row = kept(0, [0.50, 0.52, 0.48, 0.44, 0.44, 0.48, 0.48], 20, 0.50, 1.585)  # 0.52: one row of 50 over 0.50
    clear = kept(1, [0.50, 0.70, 0.60, 0.60, 0.60, 0.60, 0.60], 20, 0.66, 1.60)  # 0.70 clears 0.5 + 0.071
    separate = kept(2, [0.50, 0.50, 0.54, 0.50, 0.50, 0.50, 0.50], 30, 0.48, 1.62)
    mismatch = kept(3, [0.50, 0.80, 0.60, 0.60, 0.60, 0.60, 0.60], 30, 0.70, 1.60)  # recorded step isn't the rule's
    runs = [one_row, end(0, 0.59, 1.530), clear, end(1, 0.55, 1.55), separate, end(2, 0.52, 1.60, twin=False),
            mismatch, end(3, 0.60, 1.58)]
    replay = floor_margin_replay(runs)
    rows = {x["run"]: x for x in replay["rows"]}
    assert set(rows) == {"t 10, seed 0", "t 10, seed 1", "t 10, seed 2"}
    assert (rows["t 10, seed 0"]["step_now"], rows["t 10, seed 0"]["step_margin"]) == (20, 70)
    assert rows["t 10, seed 0"]["exact"] and not rows["t 10, seed 2"]["exact"]
    assert rows["t 10, seed 1"]["step_now"] == rows["t 10, seed 1"]["step_margin"] == 20  # unchanged
    assert replay["skipped"] == ["t 10, seed 3: a replayed choice (step 20 or 20) is neither the kept step nor the end"]
    s = replay["summary"]
    assert (s["runs"], s["changed"], s["exact"]) == (3, 2, 2)
    assert s["mean_score_change"] == pytest.approx((0.09 + 0.04) / 3)
    assert s["mean_general_change"] == pytest.approx((-0.055 - 0.02) / 3) and s["ship"] is True
    assert s["exact_mean_score_change"] == pytest.approx(0.09 / 2)  # seeds 0 (changed) and 1 (not)
    table = floor_margin_table(runs).splitlines()
    assert table[2] == ("| t 10, seed 0 | 0.50 (+0.071) | 0.52 | 20 → 70 (70) | 0.50 → 0.59 | 1.585 → 1.530 | "
                        "this run's |")
    assert len([line for line in table if line.startswith("| t ")]) == 2  # the unchanged run is not listed
    assert "Verdict of the rule written before the replay: ship" in table[-2]
    worse = floor_margin_replay([one_row, end(0, 0.40, 1.530)])["summary"]
    assert worse["ship"] is False and floor_margin_table([one_row, end(0, 0.40, 1.53)]).count("the mean test score falls")
    assert floor_margin_table([end(0, 0.59, 1.53)]) == ""
    with_margin = {**one_row, "chosen_floor": {"answer": "yes", "score": 0.5, "margin": 0.0707}, "chosen_step": 70}
    assert floor_margin_replay([with_margin, end(0, 0.59, 1.53)])["skipped"] == ["t 10, seed 0: recorded with the margin"]


def test_a_lever_run_is_its_own_retention_bar_and_curve_row_not_averaged_into_its_default():
    """keep_best_general_cpu.json (fifteenth session): the weight-1 rerun of object_counting 10 rows seed 2 beside the
    default's; the retention plot once averaged the two into one `tell_best` bar (1.688), hiding the lever."""
    from tellbench.report import general_curves, retention_bars

    def kept(loss, curve, variant=""):
        return {"task": "t", "task_rows": 10, "seed": 2, "method": "tell_best", "variant": variant,
                "general_loss": loss, "gen_check": {"ok": 0.75}, "chosen_step": 42,
                "val_general_curve": [{"step": s, "general_loss": v} for s, v in curve]}

    runs = [kept(1.716, [(6, 1.753), (12, 1.799), (42, 1.760)]), kept(1.660, [(6, 1.698), (12, 1.710)], "w1"),
            {"task": "t", "task_rows": 10, "seed": 2, "method": "zero_shot", "variant": "", "general_loss": 1.662}]
    assert retention_bars(runs, "t") == [("zero_shot", 1.662, 0), ("tell_best", 1.716, 0.75),
                                         ("tell_best (w1)", 1.66, 0.75)]
    rows = general_curves(runs).splitlines()[2:]
    assert rows == ["| t | 10 | 2 | tell_best | 6: 1.753, 12: 1.799, 42: 1.760 | 1.799 (12) | 1.716 (42) |",
                    "| t | 10 | 2 | tell_best (w1) | 6: 1.698, 12: 1.710 | 1.710 (12) | 1.660 (42) |"]


def kept_run(seed, repeats, val, score, steps, requested="auto", **keys) -> dict:
    """A ``tell_best`` run at 100 rows (today's auto there: 6 repeats) with its keep-best keys."""
    r = {**tell_run(100, repeats, requested=requested), "method": "tell_best", "task": "object_counting",
         "seed": seed, "val_score": val, "score": score, "general_loss": 1.6, "steps": steps, "test_rows": 100}
    r["tell_keys"] = {**r["tell_keys"], "tell_keep_best": True, "tell_eval_generate": "exact_match",
                      "tell_task_test_datasets": [{"path": "val.jsonl"}], **keys}
    return r


def test_a_longer_tell_best_plan_is_its_own_point_and_never_in_the_goals_tell_best(monkeypatch):
    """Rule 4's fifth lever (eighteenth session): `tell_best` at 12 repeats beside `tell_best` at auto. The goal's
    `tell_best` column read every tell_best run, so a lever run would have been averaged into the default's mean;
    a run that moved a key the bench does not read as a lever (a weight warm-up) was taken for the defaults."""
    import tellbench.frontier as frontier

    monkeypatch.setattr(frontier, "default_repeats", lambda run: 6)
    zero = {"task": "object_counting", "task_rows": 100, "seed": 0, "method": "zero_shot", "score": 0.0,
            "general_loss": 1.66, "test_rows": 100}
    auto, longer = kept_run(0, 6, 0.44, 0.44, 116), kept_run(0, 12, 0.50, 0.40, 232, requested=12)
    warm = kept_run(0, 6, 0.40, 0.30, 116, tell_task_loss_weight_warmup_ratio=0.5)
    assert frontier.is_default_tell_best(auto) and not frontier.is_default_tell_best(longer)
    assert not frontier.is_default_tell_best(warm)
    assert frontier.tell_best_label(longer) == "tell_best (TELL g3 r12 w3)"
    assert frontier.tell_best_label({**warm, "variant": "warm50"}) == "tell_best (warm50)"
    cell = frontier.points([zero, auto, longer, warm])[("object_counting", 100)]
    assert cell["tell_best"]["score"] == [0.44]
    assert cell["tell_best (TELL g3 r12 w3)"]["score"] == [0.40]


def test_lever_choice_pairs_tell_best_runs_by_repeats_and_leaves_tell_runs_out(monkeypatch):
    import tellbench.frontier as frontier
    from tellbench.validation import lever_choice

    monkeypatch.setattr(frontier, "default_repeats", lambda run: 6)
    runs = [kept_run(0, 6, 0.44, 0.44, 116), kept_run(0, 12, 0.50, 0.40, 232, requested=12),
            kept_run(1, 6, 0.30, 0.39, 117), kept_run(1, 12, 0.26, 0.41, 233, requested=12),
            # a tell run at 12 repeats on seed 2 has no tell_best twin: not in the tell_best table
            {**kept_run(2, 12, 0.90, 0.90, 232, requested=12), "method": "tell",
             "tell_keys": tell_run(100, 12, requested=12)["tell_keys"]},
            {**kept_run(2, 6, 0.10, 0.10, 116), "method": "tell", "tell_keys": tell_run(100, 6)["tell_keys"]}]
    text = lever_choice(runs, "tell_task_repeats", method="tell_best")
    row = [c.strip() for c in [x for x in text.splitlines() if x.startswith("| 12 |")][0].split("|")[1:-1]]
    assert row[1] == "2" and row[2] == "+0.010 (OC100/s0 +0.06, OC100/s1 -0.04)"
    assert row[4] == "-0.010" and row[6] == "232 / 116"
    tell_only = lever_choice(runs, "tell_task_repeats")
    assert "| 1 | +0.800 (OC100/s2 +0.80) |" in tell_only
