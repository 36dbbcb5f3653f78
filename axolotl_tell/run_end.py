"""The end of a training run, after Axolotl saved the model: record, task eval, plots, bake.

Runs once, on the main process of each node, after the final adapter and tokenizer are on disk. Each step is
guarded: a failure here (out of memory while generating, a metric's bug, a plot) is logged with the folder
where the trained model already is, and never fails the run.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from axolotl_tell.args import resolved_task_loss_share, resolved_task_loss_weight, resolved_task_loss_weight_warmup
from axolotl_tell.cpu_precision import trainer_precision
from axolotl_tell.report import INFERENCE_FILE, REPORT_FILE, trained_section, write_json

LOG = logging.getLogger("axolotl.tell")
EVAL_PREDICTIONS_FILE = "tell_eval.jsonl"
EVAL_METRICS_FILE = "tell_eval.json"


def finish_run(plugin, cfg, model, main: bool = True) -> None:
    out = Path(cfg.output_dir)
    report = dict(plugin.prepared.report)
    report["trained"] = trained_section(report, plugin.trained, plugin.steps_planned, cfg.get("max_steps"))
    report["trained"]["task_loss_weight"] = resolved_task_loss_weight(cfg)
    report["trained"]["task_loss_share"] = resolved_task_loss_share(cfg)
    report["trained"]["task_loss_weight_warmup_ratio"] = resolved_task_loss_weight_warmup(cfg)
    if plugin.trainer is not None:  # what really ran (bf16: auto resolves per machine)
        report["trained"]["precision"] = trainer_precision(plugin.trainer)
    spec = plugin.spec
    if plugin.kept is not None:  # the saved adapter is this checkpoint, not the last step (load_best_model_at_end)
        report["trained"]["kept"] = plugin.kept
        spec = {**spec, "kept": {k: plugin.kept[k] for k in ("step", "metric", "value")}}
    _guarded("the run's record (tell_report.json, tell.json)", out, lambda: _write_record(out, report, spec))
    if not main:  # another node's main process: its output_dir gets the record, the work below is rank 0's
        return
    if cfg.get("tell_eval_generate") and plugin.prepared.eval_raw:
        from axolotl_tell.training import sharded_parameters

        if sharded_parameters(cfg, plugin.trainer):
            LOG.warning("[axolotl_tell] tell_eval_generate skipped: with ZeRO-3/FSDP/tensor or expert parallelism "
                        "the parameters are sharded. "
                        "Run `axolotl-tell infer` on the saved adapter.")
        else:
            _guarded("the task generation eval", out, lambda: _generation_eval(plugin, cfg, model, out))
    _guarded("the plots", out, lambda: _plots(plugin, report, out))
    if cfg.get("tell_bake_anchor"):
        _guarded("baking the anchor into the chat template", out, lambda: bake_into(out))


def _guarded(what: str, out: Path, step) -> None:
    try:
        step()
    except Exception as err:  # noqa: BLE001 - the trained model is saved; say so and go on
        LOG.error("[axolotl_tell] %s failed after training: %s: %s. The trained model is saved in %s; this "
                  "step can be redone without training (see README, Troubleshooting).\n%s", what,
                  type(err).__name__, err, out, traceback.format_exc())


def _write_record(out: Path, report: dict, spec: dict) -> None:
    write_json(out / REPORT_FILE, report)
    write_json(out / INFERENCE_FILE, spec)  # written next to the saved adapter, describing it


def _generation_eval(plugin, cfg, model, out: Path) -> None:
    from axolotl_tell.evaluate import generation_eval
    from axolotl_tell.generate import write_predictions
    from axolotl_tell.training import generation_batch_size

    from axolotl_tell.training import run_tokenizer

    _free_accelerator_memory()
    metrics, records = generation_eval(model, run_tokenizer(plugin, cfg), plugin.spec, plugin.prepared.eval_raw,
                                       cfg.tell_eval_generate, max_new_tokens=cfg.get("tell_eval_max_new_tokens") or 64,
                                       batch_size=generation_batch_size(cfg))
    write_predictions(out / EVAL_PREDICTIONS_FILE, records)
    write_json(out / EVAL_METRICS_FILE, metrics)
    LOG.info("[axolotl_tell] task eval (%s, %d rows): %s", cfg.tell_eval_generate, len(records),
             {k: v for k, v in metrics.items() if isinstance(v, (int, float))})


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _plots(plugin, report: dict, out: Path) -> None:
    import numpy as np

    from axolotl_tell.plots import LOSS_FILE, TIMELINE_FILE, plot_losses, plot_timeline

    order = np.load(plugin.prepared.path / "plan_order.npy")
    general_rows = report["general"].get("rows_candidates", report["general"]["rows_available"])
    trained = report["trained"]
    steps = trained.get("steps_planned") or 1
    # rows per optimizer step, measured on this run's dataloader (packed steps hold a varying number of rows)
    plot_timeline(out / TIMELINE_FILE, np.flatnonzero(order >= general_rows), order.size, order.size / steps,
                  stopped_at=trained["steps"] if not trained["complete"] else None,
                  kept_at=(trained.get("kept") or {}).get("step"), kept_why=_kept_why(trained.get("kept")))
    if plugin.trainer is not None:
        plot_losses(out / LOSS_FILE, plugin.trainer.state.log_history)


def bake_into(folder: Path, spec_dir: Path | None = None) -> None:
    from axolotl_tell.bake import bake_anchor
    from axolotl_tell.prompting import load_spec

    bake_anchor(folder, load_spec(spec_dir or folder))
    LOG.info("[axolotl_tell] anchor baked into the chat template saved in %s", folder)


def _kept_why(kept: dict | None) -> str:
    """The timeline's label for the kept step: the best metric, or the floor no evaluation beat."""
    if kept and kept.get("above_floor") is False:
        return f"no step beat answering {kept['floor']['answer']!r}: the latest kept"
    return "best task metric"
