"""Locates the files memspec ships: the grammar, the standard library and the zoo.

In an installed wheel they live inside the package (`memspec/grammar`, `memspec/specs`);
in a source checkout (editable install, tests) they live at the repository top level.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["grammar_path", "std_dir", "zoo_dir"]

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
