"""Start a few local ranks of a ``torch.distributed`` gloo group, each a child process, with a hard deadline.

``run_ranks("module:function", world, tmp_path)`` starts ``world`` Python processes; rank ``r`` calls
``function(rank=r, world=world, out=Path)`` of ``module`` (a module of ``tests/``) inside a gloo group
whose rendezvous is a file under ``tmp_path``, and writes what it returns with ``torch.save`` to
``out / f"rank{r}.pt"``. Two timeouts keep a hung rank from hanging the suite: the group's own
(every collective raises after ``collective_timeout`` seconds) and the parent's deadline, after
which every child still running is killed and the test fails with the children's output. As
``torchrun`` does, a rank that fails ends the run: the others are killed a few seconds later.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

TESTS_DIR = Path(__file__).resolve().parent
#: Seconds the other ranks get to finish (their collectives to raise) once one rank has failed.
_GRACE = 5.0

_CHILD = """
import datetime, sys, torch, torch.distributed as dist
from pathlib import Path
torch.set_num_threads(1)
module_name, function_name, rank, world, init_file, out, timeout = sys.argv[1:8]
rank, world = int(rank), int(world)
dist.init_process_group(
    "gloo", init_method="file://" + init_file, rank=rank, world_size=world,
    timeout=datetime.timedelta(seconds=float(timeout)),
)
import importlib
function = getattr(importlib.import_module(module_name), function_name)
try:
    result = function(rank=rank, world=world, out=Path(out))
    torch.save(result, Path(out) / f"rank{rank}.pt")
finally:
    dist.destroy_process_group()
"""


def run_ranks(
    target: str, world: int, tmp_path: Path, *, deadline: float = 180.0, collective_timeout: float = 60.0
) -> list:
    """The results of ``world`` ranks running ``target`` ("module:function"), in rank order."""
    module_name, function_name = target.split(":")
    out = tmp_path / f"ranks-{function_name}-{world}"
    out.mkdir()
    init_file = out / "rendezvous"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    # Every freed buffer of 64 KiB or more goes back to the kernel, so peak-RSS measurements see no
    # allocator cache (as tests/test_linear_ce_memory.py's children).
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    logs = [open(out / f"rank{r}.log", "w+") for r in range(world)]
    args = [module_name, function_name, "", str(world), str(init_file), str(out), str(collective_timeout)]
    children = []
    try:
        for rank in range(world):
            args[2] = str(rank)
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", _CHILD, *args], env=env, stdout=logs[rank], stderr=subprocess.STDOUT
                )
            )
        end = time.monotonic() + deadline
        while any(c.poll() is None for c in children) and time.monotonic() < end:
            if any(c.poll() not in (None, 0) for c in children):  # as torchrun: one rank failed, stop the rest
                end = min(end, time.monotonic() + _GRACE)
            time.sleep(0.05)
        hung = [r for r, c in enumerate(children) if c.poll() is None]
        for r in hung:
            children[r].kill()
        for c in children:
            c.wait()
        failed = [r for r, c in enumerate(children) if c.returncode != 0]
        if hung or failed:
            text = []
            for r, log in enumerate(logs):
                log.seek(0)
                text.append(f"--- rank {r} (rc {children[r].returncode}) ---\n{log.read()[-3000:]}")
            what = f"ranks {hung} still running after {deadline} s (killed)" if hung else f"ranks {failed} failed"
            raise RankFailure(f"{what}\n" + "\n".join(text), hung=hung, failed=failed)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
        for log in logs:
            log.close()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


class RankFailure(AssertionError):
    def __init__(self, message: str, *, hung: list[int], failed: list[int]):
        super().__init__(message)
        self.hung, self.failed = hung, failed
