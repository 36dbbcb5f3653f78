"""Every bad `tell_*` setting fails while the YAML loads (before data or model), naming key and fix."""

from __future__ import annotations

import re

import pytest
import yaml
from tiny import make_workspace

CASES = [
    ("no task data", {"tell_task_datasets": []}, "tell_task_datasets"),
    ("task entry without path", {"tell_task_datasets": [{"type": "alpaca"}]}, r"tell_task_datasets\[0\]"),
    ("task entry without type", {"tell_task_datasets": [{"path": "x.jsonl"}]}, r"tell_task_datasets\[0\]\.type"),
    ("empty anchor", {"tell_anchor": "   "}, "tell_anchor"),
    ("no anchor", {"tell_anchor": None}, "tell_anchor"),
    ("anchor and file", {"tell_anchor_file": "anchor.txt"}, "tell_anchor"),
    ("missing anchor file", {"tell_anchor": None, "tell_anchor_file": "/nope/anchor.txt"}, "tell_anchor_file"),
    ("ratio zero", {"tell_general_ratio": 0}, "tell_general_ratio"),
    ("ratio negative", {"tell_general_ratio": -3}, "tell_general_ratio"),
    ("ratio not a number", {"tell_general_ratio": "lots"}, "tell_general_ratio"),
    ("both budgets", {"tell_general_tokens": 1000}, "tell_general_tokens"),
    ("tokens zero", {"tell_general_ratio": None, "tell_general_tokens": 0}, "tell_general_tokens"),
    ("repeats zero", {"tell_task_repeats": 0}, "tell_task_repeats"),
    ("repeats word", {"tell_task_repeats": "many"}, "tell_task_repeats"),
    ("unknown placement", {"tell_anchor_placement": "middle"}, "tell_anchor_placement"),
    ("unknown spread", {"tell_spread": "clustered"}, "tell_spread"),
    ("unknown shortfall", {"tell_general_shortfall": "ignore"}, "tell_general_shortfall"),
    ("dedup with repeats", {"dataset_exact_deduplication": True}, "dataset_exact_deduplication"),
    ("val_set_size", {"val_set_size": 0.1}, "val_set_size"),
    ("epochs", {"num_epochs": 3}, "num_epochs"),
    ("curriculum off", {"curriculum_sampling": False}, "curriculum_sampling"),
    ("packing reorder", {"sample_packing": True, "sample_packing_sequentially": False}, "sample_packing_sequentially"),
    ("streaming", {"streaming": True}, "streaming"),
    ("group_by_length", {"group_by_length": True}, "group_by_length"),
    # training paths that would undo the plan or break the per-source loss (issue 10)
    ("balance_labels", {"balance_labels": True}, "balance_labels"),
    ("context parallel", {"context_parallel_size": 2}, "context_parallel_size"),
    ("metric typo", {"tell_task_eval_rows": 2, "tell_eval_generate": "tiny.lenght_metric"}, "tell_eval_generate"),
    ("metric module missing", {"tell_task_eval_rows": 2, "tell_eval_generate": "no_such_pkg.score"},
     "tell_eval_generate"),
    ("generation batch", {"tell_eval_batch_size": 0}, "tell_eval_batch_size"),
    # tell_task_loss_weight (issue 13)
    ("loss weight zero", {"tell_task_loss_weight": 0}, "tell_task_loss_weight"),
    ("loss weight word", {"tell_task_loss_weight": "high"}, "tell_task_loss_weight"),
    ("loss weight huge", {"tell_task_loss_weight": 1e6}, "tell_task_loss_weight"),
    ("loss weight without metrics", {"tell_task_loss_weight": 4, "tell_source_metrics": False},
     "tell_task_loss_weight"),
    ("loss weight with chunked CE", {"tell_task_loss_weight": 4, "chunked_cross_entropy": True},
     "chunked_cross_entropy"),
    ("loss weight with EAFT", {"tell_task_loss_weight": 4, "use_eaft": True}, "use_eaft"),
    ("loss share one", {"tell_task_loss_share": 1}, "tell_task_loss_share"),
    ("loss share word", {"tell_task_loss_share": "most"}, "tell_task_loss_share"),
    ("loss share and weight", {"tell_task_loss_share": 0.75, "tell_task_loss_weight": 4}, "tell_task_loss_share"),
    ("loss share without metrics", {"tell_task_loss_share": 0.75, "tell_source_metrics": False},
     "tell_task_loss_share"),
    ("loss share with chunked CE", {"tell_task_loss_share": 0.75, "chunked_cross_entropy": True},
     "chunked_cross_entropy"),
    ("weight warm-up zero", {"tell_task_loss_weight_warmup_ratio": 0}, "tell_task_loss_weight_warmup_ratio"),
    ("weight warm-up over one", {"tell_task_loss_weight_warmup_ratio": 1.5}, "tell_task_loss_weight_warmup_ratio"),
    ("weight warm-up word", {"tell_task_loss_weight_warmup_ratio": "half"}, "tell_task_loss_weight_warmup_ratio"),
    ("weight warm-up with a share", {"tell_task_loss_weight_warmup_ratio": 0.5, "tell_task_loss_share": 0.75},
     "tell_task_loss_weight_warmup_ratio"),
    ("weight warm-up of weight one", {"tell_task_loss_weight_warmup_ratio": 0.5, "tell_task_loss_weight": 1},
     "tell_task_loss_weight_warmup_ratio"),
    ("weight warm-up without metrics", {"tell_task_loss_weight_warmup_ratio": 0.5, "tell_source_metrics": False},
     "tell_task_loss_weight_warmup_ratio"),
    ("weight warm-up with chunked CE", {"tell_task_loss_weight_warmup_ratio": 0.5, "chunked_cross_entropy": True},
     "chunked_cross_entropy"),
]


@pytest.fixture(scope="module")
def load_cfg():
    from axolotl.cli.config import load_cfg

    return load_cfg


@pytest.mark.parametrize("name,overrides,key", CASES, ids=[c[0] for c in CASES])
def test_bad_config_fails_fast_naming_key_and_fix(load_cfg, tiny_model, tmp_path, name, overrides, key):
    path, cfg = make_workspace(tmp_path, tiny_model)
    (tmp_path / "anchor.txt").write_text("An anchor from a file.")
    for k, v in overrides.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v if k != "tell_anchor_file" or v.startswith("/") else str(tmp_path / v)
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(Exception) as info:
        load_cfg(str(path))
    message = str(info.value)
    assert re.search(key, message), message
    assert "Fix:" in message
    # nothing was prepared: the error came before any data was touched
    assert not (tmp_path / "prepared").exists()


def test_unknown_key_in_a_task_entry_is_named(load_cfg, tiny_model, tmp_path):
    from axolotl_tell import compat
    from axolotl_tell.prepare import prepare_tell_datasets

    path, cfg = make_workspace(tmp_path, tiny_model)
    cfg["tell_task_datasets"][0]["feild_messages"] = "msgs"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_cfg(str(path))
    with pytest.raises(ValueError, match="feild_messages"):
        prepare_tell_datasets(loaded, compat.load_tokenizer(loaded))


def test_anchor_file_is_read(load_cfg, tiny_model, tmp_path):
    from axolotl_tell.anchor_config import resolve_anchor

    path, cfg = make_workspace(tmp_path, tiny_model)
    (tmp_path / "anchor.txt").write_text("  Anchor from a file.\n")
    cfg.pop("tell_anchor")
    cfg["tell_anchor_file"] = str(tmp_path / "anchor.txt")
    path.write_text(yaml.safe_dump(cfg))
    anchor = resolve_anchor(load_cfg(str(path)))
    assert (anchor.text, anchor.source) == ("Anchor from a file.", "file")


def test_a_metric_next_to_the_config_is_imported_when_the_config_loads(load_cfg, tiny_model, tmp_path, monkeypatch):
    """A dotted metric in a module beside the config works under `axolotl` (not on sys.path by itself)."""
    import sys

    (tmp_path / "my_task_metric.py").write_text("def score(predictions, references):\n    return {'n': len(predictions)}\n")
    path, cfg = make_workspace(tmp_path, tiny_model, tell_task_eval_rows=2,
                               tell_eval_generate="my_task_metric.score")
    monkeypatch.chdir("/")
    monkeypatch.setattr(sys, "path", list(sys.path))
    loaded = load_cfg(str(path))
    from axolotl_tell.evaluate import resolve_metric

    assert resolve_metric(loaded.tell_eval_generate)(["a"], ["b"]) == {"n": 1}
