"""`tell_task_loss_weight` and `tell_task_loss_share` resolution (pure; the loss itself: tests/test_source_metrics.py)."""

from __future__ import annotations


def test_the_default_task_loss_weight_steps_aside_for_a_fused_loss(monkeypatch):
    """An unset `tell_task_loss_weight` never turns a chunked / Liger / EAFT run into an error; a set one does
    (tests/test_config_errors.py)."""
    from axolotl_tell import args

    monkeypatch.setattr(args, "DEFAULT_TASK_LOSS_WEIGHT", 3.0)
    assert args.resolved_task_loss_weight({}) == 3.0
    assert args.resolved_task_loss_weight({"tell_task_loss_weight": 2}) == 2.0
    for key in ("chunked_cross_entropy", "liger_fused_linear_cross_entropy", "cut_cross_entropy", "use_eaft"):
        assert args.resolved_task_loss_weight({key: True}) == 1.0, key
    assert args.resolved_task_loss_weight({"tell_source_metrics": False}) == 1.0


def test_a_task_loss_share_replaces_the_default_weight():
    """With a share the weight resolves to 1 (the share alone reweights the loss); without one the share is off."""
    from axolotl_tell import args

    assert args.resolved_task_loss_weight({"tell_task_loss_share": 0.75}) == 1.0
    assert args.resolved_task_loss_share({"tell_task_loss_share": 0.75}) == 0.75
    assert args.resolved_task_loss_share({}) is None
