"""Run ``axolotl.cli.train CONFIG`` in one CPU process under DeepSpeed (tests only; on GPUs use ``axolotl train``).

Axolotl's single-process DeepSpeed path initialises the process group with NCCL, a GPU-only backend.
DeepSpeed keeps a process group that already exists, so this launcher creates it on gloo first; every
other step (ZeRO engine, optimizer wrapping, saving) is Axolotl's and DeepSpeed's own code.
Environment: ``DS_ACCELERATOR=cpu`` and ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK``.
"""

import deepspeed.comm as dist

dist.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, dist_init_required=True)

import fire  # noqa: E402
from axolotl.cli.train import do_cli  # noqa: E402

fire.Fire(do_cli)
