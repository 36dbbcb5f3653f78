"""`tell_task_loss_weight`, its warm-up and `tell_task_loss_share` resolution (pure; the loss itself:
tests/test_source_metrics.py)."""

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


def test_the_weight_warms_up_linearly_from_1_and_then_holds():
    """1 at the first step, the target when the warm-up ends and after, linear between; no warm-up: the target."""
    from axolotl_tell.weight_warmup import task_weight_at, warmup_steps

    assert warmup_steps(42, 0.5) == 21 and warmup_steps(43, 0.5) == 22 and warmup_steps(10, 1) == 10
    assert [task_weight_at(s, 10, 3) for s in range(5)] == [1.0, 4.0, 7.0, 10.0, 10.0]
    assert task_weight_at(0, 10, 0) == 10.0 and task_weight_at(7, 0.5, 0) == 0.5
    assert task_weight_at(1, 0.5, 2) == 0.75  # a weight under 1 is reached from above


def test_the_weight_warm_up_resolves_to_its_ratio_or_off():
    from axolotl_tell import args

    assert args.resolved_task_loss_weight_warmup({}) is None
    assert args.resolved_task_loss_weight_warmup({"tell_task_loss_weight_warmup_ratio": 1}) == 1.0
