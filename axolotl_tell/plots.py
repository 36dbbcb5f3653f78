"""Plots a person can read (matplotlib, headless): where task rows fall over training, and per-source loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TIMELINE_FILE = "tell_timeline.png"
LOSS_FILE = "tell_loss.png"


class PlotError(RuntimeError):
    """A plot cannot be drawn here (matplotlib missing): the CLI says so in one line; a run logs it and goes on."""


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # a dependency of this package: missing only where it was installed without them
        raise PlotError("[axolotl_tell] plots need matplotlib, which is not installed here. Fix: `pip install "
                        "matplotlib` (a dependency of axolotl-tell; installing the plugin with `pip install -e .` "
                        "brings it)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_side(step: int, steps: int) -> str:
    """Where a marker's label goes: right of a line in the first half, left of it in the second, so a late step's
    label stays inside the axes (a label running off them squeezes the whole figure)."""
    return "left" if step <= steps / 2 else "right"


def task_rows_per_step(task_positions: np.ndarray, total_rows: int, rows_per_step: float) -> np.ndarray:
    """How many task occurrences each optimizer step sees.

    ``rows_per_step`` is exact unpacked (micro x accumulation x ranks) and the mean for packed runs, whose steps
    hold a varying number of rows (the run passes planned rows / measured steps).
    """
    rows_per_step = max(float(rows_per_step), 1e-9)
    steps = max(1, int(np.ceil(total_rows / rows_per_step - 1e-9)))
    index = np.minimum((np.asarray(task_positions) / rows_per_step).astype(np.int64), steps - 1)
    return np.bincount(index, minlength=steps)[:steps]


def plot_timeline(path, task_positions, total_rows: int, rows_per_step: float, title: str = "",
                  stopped_at: int | None = None, kept_at: int | None = None, kept_why: str = "best task metric"
                  ) -> Path:
    """Task occurrences per optimizer step, and their cumulative share of the run.

    ``stopped_at``: the step where training stopped before the end of the plan (``max_steps``), marked.
    ``kept_at``: the step whose checkpoint became the saved adapter (``tell_keep_best``), marked with ``kept_why``.
    """
    plt = _pyplot()
    per_step = task_rows_per_step(task_positions, total_rows, rows_per_step)
    steps = np.arange(per_step.size)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, height_ratios=[2, 1])
    top.bar(steps, per_step, width=1.0, color="tab:orange", label="task rows in the step")
    top.axhline(per_step.mean(), color="gray", lw=1, ls="--", label=f"mean {per_step.mean():.2f} / step")
    top.set_ylabel("task rows")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title or f"Where the {len(task_positions)} task occurrences fall ({total_rows} rows, "
                  f"{rows_per_step:.4g} rows/step)")
    if stopped_at is not None:
        trained = int(per_step[:stopped_at].sum())
        for axis in (top, bottom):
            axis.axvline(stopped_at - 0.5, color="tab:red", lw=1.5)
        top.text(stopped_at - 0.5, (per_step.max() if per_step.size else 1) * 0.6, f" training stopped (max_steps): "
                 f"{trained} of {int(per_step.sum())} task occurrences trained ", color="tab:red", fontsize=8, va="top",
                 ha=label_side(stopped_at, per_step.size), bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
    if kept_at is not None:  # steps count from 1, bars from 0: step k ends after bar k - 1
        for axis in (top, bottom):
            axis.axvline(kept_at - 0.5, color="tab:green", lw=1.5, ls="--")
        top.text(kept_at - 0.5, (per_step.max() if per_step.size else 1) * 0.8, f" kept: checkpoint of step "
                 f"{kept_at} ({kept_why}) ", color="tab:green", fontsize=8, va="top", ha=label_side(kept_at, per_step.size),
                 bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
    bottom.plot(steps, np.cumsum(per_step) / max(per_step.sum(), 1), color="tab:blue")
    bottom.plot(steps, (steps + 1) / per_step.size, color="gray", lw=1, ls=":", label="ideal (uniform)")
    bottom.set_ylabel("cumulative share")
    bottom.set_xlabel("optimizer step")
    bottom.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_losses(path, history: list[dict]) -> Path | None:
    """Overall, task and general loss against step, from the trainer's log history."""
    series = {key: [(h["step"], h[key]) for h in history if key in h and "step" in h]
              for key in ("loss", "tell/task_loss", "tell/general_loss", "eval_tell/task_loss")}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for key, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=key, marker="." if len(xs) < 40 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (token-weighted mean)")
    ax.set_title("Training loss by source")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
