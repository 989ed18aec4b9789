"""One process per simulated rank: torch initialises a process group once per process,
so each rank of a fake-process-group run is a child process of its own."""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["in_processes", "run_child"]


def in_processes(module: str, payloads: list[tuple], what: str) -> list:
    """`python -m module OUT` for each payload at once: each child reads its pickled
    arguments on stdin and pickles its answer to OUT (`run_child`); the answers in
    order. `what` names a child in a failure's message."""
    source = str(Path(__file__).resolve().parents[2])  # this copy of memspec, not another
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as where:
        children = []
        for k, payload in enumerate(payloads):
            out = Path(where) / f"child{k}.pickle"
            child = subprocess.Popen(
                [sys.executable, "-m", module, str(out)],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            child.stdin.write(pickle.dumps(payload))
            child.stdin.close()
            children.append((child, out))
        answers = []
        for child, out in children:
            error = child.stderr.read().decode()
            if child.wait() != 0:
                raise RuntimeError(f"the {what} process failed:\n{error}")
            answers.append(pickle.loads(out.read_bytes()))
    return answers


def run_child(module: str, function: str) -> None:
    """A child's side: `module.function(*arguments)` on the pickled arguments from
    stdin, printing to stderr, its answer pickled to argv[1]. The module is imported
    by name (the child runs as __main__): what it returns must pickle as the
    importable module's classes."""
    measure = getattr(importlib.import_module(module), function)
    arguments = pickle.loads(sys.stdin.buffer.read())
    with contextlib.redirect_stdout(sys.stderr):
        answer = measure(*arguments)
    Path(sys.argv[1]).write_bytes(pickle.dumps(answer))
