"""The shipped example configs are valid TELL configs, and their local files exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from axolotl_tell.args import validate_tell_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "example_configs").glob("*.yml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_passes_tell_validation(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = yaml.safe_load(path.read_text())
    assert "axolotl_tell.TellPlugin" in cfg["plugins"]
    validate_tell_config(cfg)
    if cfg.get("deepspeed"):
        assert json.loads((ROOT / cfg["deepspeed"]).read_text())["zero_optimization"]["stage"] == 2


def test_demo_data_is_bundled():
    cfg = yaml.safe_load((ROOT / "example_configs/demo.yml").read_text())
    for entry in cfg["datasets"] + cfg["tell_task_datasets"]:
        rows = (ROOT / entry["path"]).read_text().splitlines()
        assert rows and all(json.loads(r)["messages"][-1]["role"] == "assistant" for r in rows)
    assert (ROOT / "example_configs/data/PROVENANCE.md").is_file()
