"""Known noise on a CPU demo run, dropped by exact message so a new user sees the steps and the result.

Each entry is a (logger, text in the message) pair; a record is dropped only when both match, so every other
warning and every error of those libraries still shows. Call :func:`quiet_known_noise` before importing torch.
* torchao: its CUDA-only kernels (``_C_mxfp8*.so``, ``_C_cutlass_90a*.so``) cannot load without a GPU; nothing on
  the CPU uses them;
* torch ``_pytree``: torchao still registers Enums as pytree constants, which torch now deprecates;
* bitsandbytes: its optional CPU 4-bit kernel is fetched from the Hub, which the offline demo never reaches (4-bit
  is not used);
* DeepSpeed: "Setting accelerator to CPU" (imported by transformers; the demo is a CPU run by design).
"""

from __future__ import annotations

import logging
import os
import warnings

NOISE = (
    ("torchao", "Failed to load /"),
    ("torch.utils._pytree", "is an Enum subclass and is now natively supported by torch.compile"),
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("kernels.hf_hub", "Skipping publisher trust check for 'kernels-community/"),  # newer `kernels`: a log record
    ("DeepSpeed", "Setting accelerator to CPU"),
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_known_noise() -> None:
    for name, text in NOISE:
        logging.getLogger(name).addFilter(_DropMessage(text))
    warnings.filterwarnings("ignore", message="Skipping publisher trust check for 'kernels-community/",
                            category=UserWarning)  # older `kernels`: a warning
    # progress bars of sub-second loads and conversions, in transformers and the Hub client
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
