"""Run ``axolotl.cli.train CONFIG`` on CPUs: one process under DeepSpeed, or several (torchrun) under DDP. Tests only.

Axolotl assumes a GPU in a few places a CPU run reaches; this launcher supplies the CPU choice and leaves every
other step (sampler, sharding, ZeRO engine, all-reduce, saving) to Axolotl, accelerate and DeepSpeed:

* the process group: Axolotl's one-process DeepSpeed path creates it with NCCL. It is created here first, on
  gloo (``env://``: torchrun's variables, or ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` set by the
  caller), and DeepSpeed's comm wraps it when ``ACCELERATE_USE_DEEPSPEED=true``;
* the model's device: with ``WORLD_SIZE > 1`` Axolotl maps rank r to device r (a GPU); here, to the CPU (and
  its GPU peer-to-peer probe, which a CUDA build of torch without a driver fails, is skipped);
* accelerate picks its multi-CPU mode only with ``ACCELERATE_USE_CPU=true``, which the caller sets.

Two test knobs: ``TELL_TEST_PG_TIMEOUT_S`` (the process group's timeout: a rank waiting longer in a collective
fails) and ``TELL_TEST_GENERATE_DELAY_S`` (each prompt generated while the process group is up takes that many
seconds longer: what a large model's generation costs, on the tiny one).
"""

import datetime
import os
import time

import torch.distributed as dist

_timeout = os.environ.get("TELL_TEST_PG_TIMEOUT_S")
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=float(_timeout)) if _timeout else None)
if os.environ.get("TELL_TEST_GENERATE_DELAY_S"):
    import axolotl_tell.evaluate as tell_evaluate

    _generate, _delay = tell_evaluate.generate, float(os.environ["TELL_TEST_GENERATE_DELAY_S"])

    def _slow_generate(model, tokenizer, prompts, **kwargs):
        if dist.is_initialized():  # during training; the end-of-run eval runs after Axolotl's process group is gone
            time.sleep(_delay * len(prompts))
        return _generate(model, tokenizer, prompts, **kwargs)

    tell_evaluate.generate = _slow_generate
if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
    import deepspeed.comm as ds_comm

    ds_comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)

if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    import axolotl.cli.config as cli_config
    import axolotl.utils.environment as axolotl_environment

    # GPU peer-to-peer probe: a CUDA build of torch without a driver raises instead of answering
    axolotl_environment.check_cuda_p2p_support = lambda: True

    _normalize = cli_config.normalize_config

    def _normalize_on_cpu(cfg):
        _normalize(cfg)
        if cfg.device_map is not None:
            cfg.device_map = {"": "cpu"}

    cli_config.normalize_config = _normalize_on_cpu

import fire  # noqa: E402
from axolotl.cli.train import do_cli  # noqa: E402

fire.Fire(do_cli)
