"""Rebuild the demo data in example_configs/data/ from ../shared/data (provenance: see PROVENANCE.md there).

usage: python scripts/bundle_demo_data.py [--shared ../shared/data]

Both sources are turned into chat messages (user / assistant) so the chat model
(SmolLM2-135M-Instruct) sees task and general data through its own template.
"""

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "example_configs" / "data"


def read(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write(name, rows):
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / name, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{OUT / name}: {len(rows)} rows")


def chat(user, assistant):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    a = ap.parse_args()
    rng = random.Random(0)
    qf = Path(a.shared) / "tasks" / "question_formation"
    train = rng.sample(read(qf / "train.jsonl"), 10)
    write("question_formation_train10.jsonl", [chat(r["input"], r["output"]) for r in train])
    test = rng.sample(read(qf / "test.jsonl"), 100)
    write("question_formation_test100.jsonl", [chat(r["input"], r["output"]) for r in test])
    # short rows only (<= 600 characters): the demo must train on 2 CPU cores in minutes
    alpaca = [r for r in read(Path(a.shared) / "general" / "alpaca_en_demo.jsonl")
              if len(r["instruction"]) + len(r.get("input", "")) + len(r["output"]) <= 600]
    rng.shuffle(alpaca)
    def user(r):
        return r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
    write("general_alpaca400.jsonl", [chat(user(r), r["output"]) for r in alpaca[:400]])
    write("general_alpaca_heldout50.jsonl", [chat(user(r), r["output"]) for r in alpaca[400:450]])


if __name__ == "__main__":
    main()
