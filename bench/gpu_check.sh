#!/usr/bin/env bash
# The GPU paths of issue 10 on the lent GPU machine: one PASS / FAIL / SKIP line per check (about 5-8 min).
#
#   1. stage the kit (shared/gpu/README.md: `bash shared/gpu/make_kit.sh`, then the calls in .gpu/calls.txt);
#   2. in the last call, after `. /root/kit/env.sh`:   bash bench/gpu_check.sh 2>&1 | tee $OUT/gpu_check.log
#
# Checks (bench/gpu_checks.py): bf16 LoRA with sdpa, unpacked and packed in the varlen geometry (every planned
# row trained, GA > 1); the per-source loss against a reference computation on one bf16 batch; DeepSpeed ZeRO-2
# and ZeRO-3 and FSDP2 (SKIP where the package is missing on the machine); generation stopping at the model's
# own end-of-turn token. Logs and reports land in $OUT (or /root/run/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" AXOLOTL_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python bench/gpu_checks.py --out "${OUT:-/root/run/gpu_check}" --model "${KIT_MODEL:-/root/models/smollm2-135m-instruct}" "$@"
