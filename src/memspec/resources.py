"""Locates the files memspec ships (the grammar, the standard library and the zoo) and
the folder where it keeps caches.

In an installed wheel they live inside the package (`memspec/grammar`, `memspec/specs`);
in a source checkout (editable install, tests) they live at the repository top level.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "grammar_path", "keep_in_cache", "std_dir", "zoo_dir"]

_PACKAGE = Path(__file__).resolve().parent
_REPO = _PACKAGE.parent.parent


def _first_existing(*candidates: Path) -> Path:
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"memspec is installed without its data files: {candidates[0]}")


def grammar_path() -> Path:
    """The path of `memspec.lark`."""
    return _first_existing(
        _PACKAGE / "grammar" / "memspec.lark", _REPO / "grammar" / "memspec.lark"
    )


def std_dir() -> Path:
    """The folder of the standard library's `.mspec` files."""
    return _first_existing(_PACKAGE / "specs" / "std", _REPO / "specs" / "std")


def zoo_dir() -> Path:
    """The folder of the bundled model specs (`llama.mspec`, ...)."""
    return _first_existing(_PACKAGE / "specs", _REPO / "specs")


def cache_dir() -> Path | None:
    """`$MEMSPEC_CACHE_DIR`, else the platform's user cache dir + `memspec` (None: off)."""
    chosen = os.environ.get("MEMSPEC_CACHE_DIR")
    if chosen is not None:
        return Path(chosen) if chosen else None
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return Path(base) / "memspec" / "Cache" if base else None
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "memspec"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memspec"


def keep_in_cache(path: Path, data: bytes, keep: int) -> None:
    """Write a cache entry atomically (a temporary file renamed: a reader never sees half
    of one), then remove the oldest entries of its kind past `keep`. A folder that cannot
    be written is no cache, not an error: nothing is raised, nothing is left behind."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except OSError:
            Path(temporary).unlink(missing_ok=True)
            raise
        entries = sorted(folder.glob(f"*{path.suffix}"), key=lambda p: p.stat().st_mtime_ns)
        for old in entries[:-keep]:
            old.unlink(missing_ok=True)
    except OSError:
        return
