"""tell_report.json under several writers at once: each node's local rank 0 writes it, and nodes may share
an ``output_dir`` (issue 26)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

from axolotl_tell.report import write_json

ROUNDS, PAYLOAD = 100, 20_000


def _writer(path: str, writer: int, n: int, start) -> None:
    real_replace = os.replace

    def slow_replace(src, dst):  # a shared (network) filesystem: time passes between a write and its rename
        time.sleep(0.002)
        real_replace(src, dst)

    os.replace = slow_replace  # this child process only
    for i in range(n):
        start.wait()  # both writers start each round together: their writes overlap on any scheduler
        write_json(Path(path), {"writer": writer, "i": i, "payload": "x" * PAYLOAD})


def test_two_processes_writing_one_report_never_fail_and_leave_valid_json(tmp_path):
    out = tmp_path / "out" / "tell_report.json"
    ctx = mp.get_context("fork")
    start = ctx.Barrier(2, timeout=5)  # a writer that died leaves the other waiting: not for long
    procs = [ctx.Process(target=_writer, args=(str(out), w, ROUNDS, start)) for w in range(2)]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):  # a reader meanwhile: never a half-written file
        if out.is_file():
            data = json.loads(out.read_text())
            assert data["payload"] == "x" * PAYLOAD
            seen += 1
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]  # today: one writer's `replace` finds no temp file and raises
    assert json.loads(out.read_text())["i"] == ROUNDS - 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["tell_report.json"]  # no temp file left behind
