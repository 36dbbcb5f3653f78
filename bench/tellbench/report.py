"""A results file -> ``<name>.md`` (table, mean ± sd over seeds) and ``<name>_*.png`` (plots), next to it."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from tellbench.spec import METHODS

GROUP = ("task", "task_rows", "method", "task_repeats_requested", "general_ratio", "variant")


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(mean, sd, digits=3):
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if not sd else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _gen_ok(run):
    return (run.get("gen_check") or {}).get("ok")


def groups(runs: list[dict]) -> dict:
    """Runs of one configuration: the ``GROUP`` keys, plus the repeats a TELL run trained with (its plan: runs that
    asked for `auto` under an earlier rule trained with other repeats; sft_best's differ by chosen epoch)."""
    out = defaultdict(list)
    for run in runs:
        used = run.get("task_repeats") if str(run["method"]).startswith("tell") else None
        out[(*(run.get(k) for k in GROUP), used)].append(run)
    return out


def _sort_key(key):
    task, rows, method, repeats, ratio, variant, used = key
    repeats = -1 if repeats == "auto" else int(repeats)
    return (task, rows, repeats, ratio or 0, METHODS.index(method) if method in METHODS else 99, variant or "",
            used or 0)


def table(runs: list[dict]) -> str:
    lines = ["| task | rows | method | repeats (req → used) | ratio | score (metric) | held-out general loss | "
             "general answers ok | steps | train tokens | train s | seeds |",
             "|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for key, rs in sorted(groups(runs).items(), key=lambda kv: _sort_key(kv[0])):
        task, rows, method, repeats, ratio, variant, _ = key
        method = method_label({"method": method, "variant": variant})
        score = _mean_sd([r["score"] for r in rs])
        loss = _mean_sd([r["general_loss"] for r in rs])
        ok = _mean_sd([_gen_ok(r) for r in rs])
        used = _mean_sd([r.get("task_repeats") for r in rs])[0]
        steps = _mean_sd([r.get("steps") for r in rs])[0]
        tokens = _mean_sd([r.get("train_tokens") for r in rs])[0]
        wall = _mean_sd([r.get("wall_s") for r in rs])[0]
        lines.append(
            f"| {task} | {rows} | {method} | {repeats} → {used:g} | {ratio:g} | {_fmt(*score)} ({rs[0]['metric']}) | "
            f"{_fmt(*loss)} | {_fmt(*ok, digits=2)} | {steps:.0f} | {tokens:,.0f} | {wall:.0f} | {len(rs)} |")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _line_plot(path: Path, series: dict, xlabel: str, title: str, logx: bool = False) -> Path:
    """series: {panel title: {line label: [(x, [y...]), ...]}}"""
    plt = _pyplot()
    panels = sorted(series)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, points in sorted(series[panel].items(), key=lambda kv: str(kv[0])):
            points = sorted(points)
            xs = [x for x, _ in points]
            means = [statistics.mean(ys) for _, ys in points]
            sds = [statistics.stdev(ys) if len(ys) > 1 else 0.0 for _, ys in points]
            ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=str(label))
        if logx:
            ax.set_xscale("log")
            ticks = sorted({x for pts in series[panel].values() for x, _ in pts})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("task score")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def method_label(run: dict) -> str:
    """The method, with its block's variant: a lever run is its own bar or row, never averaged into its default."""
    return f"{run['method']} ({run['variant']})" if run.get("variant") else run["method"]


def retention_bars(runs: list[dict], task: str) -> list[tuple[str, float, float]]:
    """(label, mean held-out general loss, mean generation-check ok) per method and variant of one task."""
    rs = [r for r in runs if r["task"] == task]
    order = {m: i for i, m in enumerate(METHODS)}
    labels = sorted({method_label(r) for r in rs}, key=lambda lab: (order.get(lab.split(" (")[0], 99), lab))

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.mean(values) if values else 0

    return [(lab, mean(r.get("general_loss") for r in rs if method_label(r) == lab),
             mean(_gen_ok(r) for r in rs if method_label(r) == lab)) for lab in labels]


def general_curves(runs: list[dict]) -> str:
    """Runs trained with --general-eval-curve: the held-out general loss at each keep-best evaluation, as the trainer
    measures it (Axolotl's chat template and tokens), beside the kept checkpoint's in the bench's own measure."""
    rows = sorted((r for r in runs if r.get("val_general_curve")),
                  key=lambda r: (r["task"], r["task_rows"], r["seed"], method_label(r)))
    if not rows:
        return ""
    lines = ["| task | rows | seed | method | trainer's held-out general loss at each evaluation (step: loss) | "
             "highest (step) | kept checkpoint (step), bench's measure |", "|---|---:|---:|---|---|---|---:|"]
    for r in rows:
        curve = r["val_general_curve"]
        top = max(curve, key=lambda p: p["general_loss"])
        points = ", ".join(f"{p['step']}: {p['general_loss']:.3f}" for p in curve)
        lines.append(f"| {r['task']} | {r['task_rows']} | {r['seed']} | {method_label(r)} | {points} | "
                     f"{top['general_loss']:.3f} ({top['step']}) | {r['general_loss']:.3f} ({r.get('chosen_step', '?')}) |")
    return "\n".join(lines)


def _bar_plot(path: Path, runs: list[dict], title: str) -> Path:
    """Held-out general loss and the generation check, per task, method and variant (mean over cells)."""
    plt = _pyplot()
    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 5.6), squeeze=False)
    for col, task in enumerate(tasks):
        bars = retention_bars(runs, task)
        methods = [lab for lab, _, _ in bars]
        for row, label in enumerate(("held-out general loss", "general answers ok")):
            means = [b[1 + row] for b in bars]
            ax = axes[row][col]
            ax.bar(range(len(methods)), means, color="tab:blue" if row == 0 else "tab:green")
            ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
            ax.set_ylabel(label, fontsize=8)
            if row == 0:
                ax.set_title(task, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(runs: list[dict], stem: Path) -> list[Path]:
    made = []
    # 1. score vs task rows, per method, at each auto-repeats setting that has 2+ methods and 2+ sizes (main grid)
    by_setting = defaultdict(list)
    for r in runs:
        if r["task_repeats_requested"] == "auto":
            by_setting[(r["task_repeats_requested"], r["general_ratio"])].append(r)
    for (repeats, ratio), rs in sorted(by_setting.items(), key=lambda kv: str(kv[0])):
        series = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        for r in rs:
            series[r["task"]][r["method"]][r["task_rows"]].append(r["score"])
        if any(len(s) > 1 and len({x for m in s.values() for x in m}) > 1 for s in series.values()):
            data = {t: {m: list(pts.items()) for m, pts in s.items()} for t, s in series.items()}
            made.append(_line_plot(Path(f"{stem}_score_r{repeats}_g{ratio:g}.png"), data, "task rows",
                                   f"task score vs task rows (repeats {repeats}, ratio {ratio:g}); mean ± sd over seeds",
                                   logx=True))
    # 2. task repeats sweep (numeric repeats), per task and size
    series = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in runs:
        if r["task_repeats_requested"] != "auto" and r["method"] != "zero_shot":
            series[f"{r['task']} n={r['task_rows']}"][f"{r['method']} g={r['general_ratio']:g}"][
                int(r["task_repeats_requested"])].append(r["score"])
    if any(len(pts) > 1 for s in series.values() for pts in s.values()):
        data = {t: {m: list(pts.items()) for m, pts in s.items()} for t, s in series.items()}
        made.append(_line_plot(Path(f"{stem}_repeats.png"), data, "task repeats (sft: epochs)",
                               "task score vs task repeats; mean ± sd over seeds"))
    # 3. general ratio sweep (TELL)
    series = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in runs:
        if r["method"] == "tell" and r["task_repeats_requested"] == "auto":
            variant = f" ({r['variant']})" if r.get("variant") else ""
            series[f"{r['task']} n={r['task_rows']}"][f"repeats {r['task_repeats_requested']}{variant}"][
                r["general_ratio"]].append(r["score"])
    if any(len(pts) > 1 for s in series.values() for pts in s.values()):
        data = {t: {m: list(pts.items()) for m, pts in s.items()} for t, s in series.items()}
        made.append(_line_plot(Path(f"{stem}_ratio.png"), data, "general:task supervised-token ratio",
                               "TELL task score vs general ratio; mean ± sd over seeds", logx=True))
    made.append(_bar_plot(Path(f"{stem}_general.png"), runs, "general-skill retention (mean over cells)"))
    return made


def anchors(runs: list[dict]) -> str:
    """The anchor text each TELL run trained with (the self-generated ones differ per task and seed)."""
    rows = sorted((r["task"], r["task_rows"], r["seed"], r["method"], r.get("anchor_source") or "", r["anchor"])
                  for r in runs if r.get("anchor"))
    if not rows:
        return ""
    lines = ["| task | rows | seed | method | source | anchor |", "|---|---:|---:|---|---|---|"]
    lines += [f"| {t} | {n} | {s} | {m} | {src} | {a.replace('|', '/')} |" for t, n, s, m, src, a in rows]
    return "\n".join(lines)


def write(results_path: Path) -> str:
    """Write ``<name>.md`` and the plots; returns the table."""
    results_path = Path(results_path)
    results = json.loads(results_path.read_text(encoding="utf-8"))
    runs = results["runs"]
    stem = results_path.with_suffix("")
    meta = results.get("meta", {})
    text = table(runs)
    try:
        made = plots(runs, stem) if runs else []
    except ImportError as err:  # e.g. no matplotlib on the GPU image: rerun --report-only where it is
        print(f"[bench] plots skipped ({err}); run `python bench/run.py --report-only --out {results_path}`")
        made = []
    header = (f"# {results_path.name}\n\ngrid `{meta.get('grid')}`, model `{meta.get('model')}`, device "
              f"`{meta.get('device')}`; {len(runs)} runs. Generated by `bench/run.py` from the JSON next to this "
              "file.\n\n")
    pics = "".join(f"![{p.name}]({p.name})\n" for p in made)
    frontier_part = ""
    if any(r.get("frontier") or r["method"] == "sft_best" for r in runs):  # sft_curve: false runs carry no curve
        from tellbench import frontier, validation

        try:
            picture = frontier.plot(runs, Path(f"{stem}_frontier.png"))
        except ImportError:
            picture = None
        frontier_part = ("## Frontier\n\nSFT's curve (each saved epoch) and TELL's points; Δ = held-out general "
                         "loss minus the base model's.\n\n" + frontier.table(runs) + "\n\n## Goal per cell\n\n"
                         "TELL at the plugin's current defaults vs `sft_best` (mean over seeds): within "
                         f"{frontier.SCORE_TOLERANCE:g} of its score, general loss within "
                         f"{frontier.LOSS_TOLERANCE:g} nats of the base model's.\n\n" + frontier.goal(runs) + "\n\n"
                         + frontier.goal_summary(runs) + "\n\n"
                         + (f"![frontier]({picture.name})\n\n" if picture else ""))
        peer_table = frontier.peers(runs)
        if peer_table:
            frontier_part += ("## Peers\n\nWhat a user would do instead to keep general skill, against TELL at the "
                              "defaults: `sft_scaled` (the `sft_best` adapter scaled down, the scale chosen on "
                              "validation rows; no training) and `tell_no_anchor` (the same mix in the same order "
                              "trained by plain Axolotl: without the anchor and without the task loss weight, i.e. "
                              "plain dataset mixing). The reading compares means over each method's own seeds; the "
                              "column before it pairs the seeds both ran.\n\n" + peer_table + "\n\n")
        floor_table = frontier.floors(runs)
        if floor_table:
            frontier_part += ("## Constant answer\n\nThe best score one fixed answer gets on each cell's test rows "
                              "(the most common references tried), against each method (in brackets: its mean "
                              f"minus that floor). A cell where no trained method clears it by {frontier.FLOOR_SE} "
                              "standard errors measures the answers' distribution, not the task: its gaps rank no "
                              "method.\n\n" + floor_table + "\n\n")
        efficiency = frontier.data_efficiency(runs)
        if efficiency:
            frontier_part += ("## Data efficiency\n\nTELL at N task rows against `sft_best` trained on at least "
                              f"{frontier.EFFICIENCY}N rows of the same task (means over seeds; in brackets: TELL "
                              "minus `sft_best`).\n\n" + efficiency + "\n\n")
        spread = frontier.seed_spread(runs)
        if spread:
            frontier_part += ("## Seed spread\n\nEach method's test score by seed (each seed draws other task "
                              "rows, validation rows and general mix) and its range; the last column pairs TELL with "
                              "`sft_best` on the same seed.\n\n" + spread + "\n\n")
        peaks = validation.val_peaks(runs)
        if peaks:
            frontier_part += ("## Where TELL's validation peaks\n\nEach `tell_best` run (TELL at the defaults, "
                              "evaluated on the validation rows 7 times and at its last step): a peak late in the run "
                              "says it could have trained longer, an early one that it went past its best.\n\n"
                              + peaks + "\n\n")
        margin = validation.floor_margin_table(runs)
        if margin:
            frontier_part += ("## The one-answer floor with a margin, replayed\n\nEach default `tell_best` run's "
                              "kept step re-decided from its recorded validation curve under the floor as it was "
                              "(strict `>`) and with `tell_keep_best`'s margin of one standard error of the floor on "
                              "the eval rows; a choice that moves goes to the run's end point, whose test score its "
                              "TELL twin records (no training). Runs whose choice moves:\n\n" + margin + "\n\n")
        for lever, title in (("tell_task_loss_weight", "Task loss weight"), ("tell_general_ratio", "General ratio"),
                             ("tell_spread", "Spread"),
                             ("tell_task_loss_share", "Task loss share (instead of the weight)"),
                             ("tell_task_repeats", "Task repeats"), ("learning_rate", "Learning rate")):
            choice = validation.lever_choice(runs, lever)
            if choice:  # a default is chosen on validation rows, as sft_best's epoch is
                frontier_part += (f"## {title}, chosen on validation rows\n\nEach value against the current "
                                  "default on the same task, rows and seed (everything else at the defaults); the "
                                  "validation rows are never trained on nor reported as the test score."
                                  + (" `off` = no share: the default task loss weight applies."
                                     if lever == "tell_task_loss_share" else "") + "\n\n"
                                  + choice + "\n\n")
        kept = validation.lever_choice(runs, "tell_task_repeats", method="tell_best")
        if kept:  # the longer plan with keep-best choosing the step (BENCHMARKS rule 4, its fifth lever)
            frontier_part += ("## Task repeats for `tell_best`, chosen on validation rows\n\n`tell_best` runs at "
                              "another repeat count against `tell_best` at `auto` on the same task, rows and seed "
                              "(everything else at the defaults): a longer plan whose best step keep-best picks. "
                              "Validation is the kept checkpoint's score on the rows that chose it, on both sides; "
                              "the test gain is not chosen on.\n\n" + kept + "\n\n")
    curves = general_curves(runs)
    if curves:
        frontier_part += ("## Held-out general loss during training\n\n`tell_best` runs with `--general-eval-curve`: "
                          "the trainer's loss on the held-out general rows at each keep-best evaluation (Axolotl's "
                          "own tokens, so not the bench's end-point number to the digit).\n\n" + curves + "\n\n")
    anchor_table = anchors(runs)
    anchor_part = f"Anchors the TELL runs trained with:\n\n{anchor_table}\n\n" if anchor_table else ""
    results_path.with_suffix(".md").write_text(header + text + "\n\n" + frontier_part + anchor_part + pics,
                                               encoding="utf-8")
    return text
