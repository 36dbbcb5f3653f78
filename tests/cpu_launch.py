"""Run ``axolotl.cli.train CONFIG`` on CPUs: one process under DeepSpeed, or several (torchrun) under DDP. Tests only.

Axolotl assumes a GPU in a few places a CPU run reaches; this launcher supplies the CPU choice and leaves every
other step (sampler, sharding, ZeRO engine, all-reduce, saving) to Axolotl, accelerate and DeepSpeed:

* the process group: Axolotl's one-process DeepSpeed path creates it with NCCL. It is created here first, on
  gloo (``env://``: torchrun's variables, or ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` set by the
  caller), and DeepSpeed's comm wraps it when ``ACCELERATE_USE_DEEPSPEED=true``;
* the model's device: with ``WORLD_SIZE > 1`` Axolotl maps rank r to device r (a GPU); here, to the CPU (and
  its GPU peer-to-peer probe, which a CUDA build of torch without a driver fails, is skipped);
* accelerate picks its multi-CPU mode only with ``ACCELERATE_USE_CPU=true``, which the caller sets.
"""

import os

import torch.distributed as dist

dist.init_process_group("gloo")
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
