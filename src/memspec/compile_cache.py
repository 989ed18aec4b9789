"""`memspec compile`'s outputs kept across processes: a command run again answers at once.

A compile is deterministic: the same memspec, the same libraries, the same options and
the same files give byte-identical output. So the command line keeps each output in the
user's cache dir (`syntax/cache.py`'s), under a key of everything it depends on: a
fingerprint of memspec's own files (path, size, modification time) and of the versions of
Python, sympy, lark and jinja2; the working directory; and the options as parsed. The
files the compile read (the spec, every file it `use`s, a `--hf-config`) are stored in
the entry with a sha256 of their bytes as read, and a hit needs every one of them
unchanged. Anything else (a missing, unreadable, corrupt or foreign entry) is a miss: the
spec is compiled and the entry rewritten, atomically. Only successful compiles are kept;
errors are always reported afresh. This module imports nothing heavy, so that a hit
costs the interpreter's start-up and a few file reads, not sympy's import.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from memspec.resources import cache_dir, grammar_path, keep_in_cache

__all__ = ["MAX_ENTRIES", "lookup", "note_read", "recording", "store"]

MAX_ENTRIES = 256  # outputs kept; past it the oldest are removed
_FORMAT = "memspec-compile-output-1"
_READS: ContextVar[list[tuple[str, str]] | None] = ContextVar("compile_reads", default=None)
_LIBRARIES = ("sympy", "lark", "jinja2", "numpy")


@contextmanager
def recording() -> Iterator[list[tuple[str, str]]]:
    """Collects (absolute path, sha256) of every input file read inside the block."""
    reads: list[tuple[str, str]] = []
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def note_read(path: Path, data: bytes) -> None:
    """An input file's bytes as the compile read them (no-op unless recording)."""
    reads = _READS.get()
    if reads is not None:
        reads.append((str(Path(path).resolve()), hashlib.sha256(data).hexdigest()))


def _folder() -> Path | None:
    base = cache_dir()
    return None if base is None else base / "outputs"


@functools.cache
def _fingerprint() -> str:
    """memspec's code and the libraries it prints with: any change is another key. A
    library is known by its package's `__init__.py` (found, not imported: an upgrade
    rewrites it)."""
    from importlib.util import find_spec

    from memspec.version import __version__

    digest = hashlib.sha256(f"{_FORMAT}\0{__version__}\0{sys.version}".encode())
    package = Path(__file__).resolve().parent
    files = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    libraries = [find_spec(name) for name in _LIBRARIES]
    files += [Path(s.origin) for s in libraries if s is not None and s.origin]
    for path in sorted({*files, grammar_path()}):
        stat = path.stat()
        digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _key(options: dict[str, object]) -> str:
    text = json.dumps(sorted(options.items()), default=str)
    digest = hashlib.sha256(f"{_fingerprint()}\0{os.getcwd()}\0{text}".encode())
    return digest.hexdigest()


def _unchanged(path: str, sha: str) -> bool:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
    except OSError:
        return False


def lookup(options: dict[str, object]) -> str | None:
    """The output an earlier process wrote for these options, if every file it read is
    unchanged; None otherwise."""
    folder = _folder()
    if folder is None:
        return None
    try:
        entry = json.loads((folder / f"{_key(options)}.json").read_text(encoding="utf-8"))
        if entry["format"] != _FORMAT or not isinstance(entry["output"], str):
            return None
        reads = [(str(p), str(s)) for p, s in entry["reads"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not reads or not all(_unchanged(p, s) for p, s in reads):
        return None
    return entry["output"]


def store(options: dict[str, object], reads: list[tuple[str, str]], output: str) -> None:
    """Keep `output` for these options; a cache that cannot be written is no cache."""
    folder = _folder()
    if folder is None or not reads:
        return
    entry = {"format": _FORMAT, "reads": sorted(set(reads)), "output": output}
    data = json.dumps(entry).encode("utf-8")
    keep_in_cache(folder / f"{_key(options)}.json", data, MAX_ENTRIES)
