"""Turn {prompt, response}-style JSONL rows into chat `messages` rows for `type: chat_template`.

usage: python scripts/to_messages.py IN.jsonl OUT.jsonl [--user prompt] [--assistant response]
                                     [--json-field hallucination]

--json-field F wraps the answer as a JSON object {"F": answer} (e.g. the TELL paper's Halu-CoT-JSON format,
whose label-only data has no "thought").
"""

import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--user", default="prompt")
    ap.add_argument("--assistant", default="response")
    ap.add_argument("--json-field")
    a = ap.parse_args()
    n = 0
    with open(a.src, encoding="utf-8") as src, open(a.dst, "w", encoding="utf-8") as dst:
        for line in src:
            if not line.strip():
                continue
            row = json.loads(line)
            answer = row[a.assistant]
            if a.json_field:
                answer = json.dumps({a.json_field: answer})
            dst.write(json.dumps({"messages": [{"role": "user", "content": row[a.user]},
                                               {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
            n += 1
    print(f"{a.dst}: {n} rows")


if __name__ == "__main__":
    main()
