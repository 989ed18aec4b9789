"""Parsed spec files kept across processes, in the user's cache dir, keyed by content.

Every compile loads the standard library: six files that take lark about 0.15 s to parse
and turn into the AST, in every process. A parsed `Module` is immutable, so it is
pickled once and loaded afterwards in about a hundredth of that. The key is a sha256 of
memspec's version, the grammar's text, the source of the modules that turn text into
the AST, and the file's name and text: any change to one of them is another key, never a
stale hit. An entry that cannot be read back as a `Module` (truncated, corrupt, from
another Python) is parsed again and rewritten; a cache dir that cannot be written means
no cache. Entries are written to a temporary file and renamed, so a reader never sees
half of one. `MEMSPEC_CACHE_DIR` moves the cache; set to an empty string it turns it off.
lark's own cache of the grammar's parse tables lives beside the entries.

Only files up to `MAX_CACHED_CHARS` are kept. Pickling an AST costs about half its parse
and loading it back a third (15,000 generated layers: parse 1.7 s, pickle 0.9 s, load
0.8 s), so a large file, which is usually generated or being edited, would pay half as
much again on every first load for a saving only on the next identical one; the
standard library (40 KB in all) and hand-written specs are far below the limit.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

from memspec.resources import cache_dir, grammar_path, keep_in_cache
from memspec.source import SourceFile
from memspec.syntax.decls import Module

__all__ = ["MAX_CACHED_CHARS", "MAX_ENTRIES", "cached_module", "grammar_cache"]

MAX_ENTRIES = 512  # parsed files kept; past it the oldest are removed
MAX_CACHED_CHARS = 64 * 1024  # larger files are parsed each time (see above)
_FORMAT = b"memspec-parsed-module-1"


@functools.cache
def _code() -> bytes:
    """What a parse depends on besides the text: the grammar and the AST's code."""
    from memspec.version import __version__

    digest = hashlib.sha256(_FORMAT + __version__.encode())
    here = Path(__file__).resolve().parent
    sources = [grammar_path(), here.parent / "source.py", *sorted(here.glob("*.py"))]
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.digest()


def _key(text: str, source: SourceFile) -> str:
    digest = hashlib.sha256(_code())
    digest.update(source.name.encode() + b"\0" + text.encode())
    return digest.hexdigest()


def _read(path: Path, source: SourceFile) -> Module | None:
    try:
        module = pickle.loads(path.read_bytes())
    except Exception:  # missing, truncated, corrupt or unpicklable here: parse again
        return None
    if not isinstance(module, Module) or not all(
        getattr(decl, "span", None) is None or decl.span.source == source for decl in module.decls
    ):
        return None
    return module


def cached_module(
    text: str, source: SourceFile, parse: Callable[[str, SourceFile], Module]
) -> Module:
    """`parse(text, source)`, or the module an earlier process parsed from the same text."""
    base = cache_dir()
    if base is None or len(text) > MAX_CACHED_CHARS:
        return parse(text, source)
    path = base / "parsed" / f"{_key(text, source)}.module"
    module = _read(path, source)
    if module is None:
        module = parse(text, source)
        try:
            data = pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, RecursionError):
            return module  # not picklable here: no cache entry, not an error
        keep_in_cache(path, data, MAX_ENTRIES)
    return module


def grammar_cache() -> str | bool:
    """Where lark keeps the grammar's parse tables (it checks their hash itself)."""
    folder = cache_dir()
    if folder is None:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return True  # lark's default: a file in the temporary dir
    return str(folder / "grammar.lark-cache")
