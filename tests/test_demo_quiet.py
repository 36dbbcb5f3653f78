"""The demo's first screen: known library noise is dropped by exact message, every other warning and error stays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import logging, sys
sys.path.insert(0, {scripts!r})
from quiet import quiet_known_noise
quiet_known_noise()
try:
    import torchao  # noqa: F401  (its CUDA-only kernels fail to load on a CPU machine)
except ImportError:
    pass
import peft  # noqa: F401  (pulls in bitsandbytes' CPU backend)
logging.getLogger("torchao").warning("Failed to load /x/_C_mxfp8.so: Could not load this library")
logging.getLogger("torchao").warning("a real torchao warning")
logging.getLogger("torch.utils._pytree").error("a real pytree error")
"""


def test_known_noise_is_dropped_and_other_messages_stay():
    proc = subprocess.run([sys.executable, "-c", PROBE.format(scripts=str(ROOT / "scripts"))], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Failed to load" not in out and "is an Enum subclass" not in out, out[-3000:]
    assert "Skipping publisher trust check" not in out
    assert "a real torchao warning" in out and "a real pytree error" in out
