"""memspec: a declarative model-spec compiler for training memory.

A spec file states a model's symbolic dims, layers and parameters; memspec parses it
(`syntax/`), elaborates it into an IR graph (`elaborate/`, `ir/`), runs memory passes
(`passes/`) and renders a derivation report (`report/`). For notebooks and tools:

    >>> import memspec
    >>> result = memspec.compile_spec("specs/cs336_lm.mspec", set={"B": 4})
    >>> result.to_json()  # also to_markdown(), to_latex(); notebooks show the report
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memspec.version import __version__

__all__ = ["CompileResult", "MemspecError", "__version__", "compile_spec"]

if TYPE_CHECKING:
    from memspec.compile import compile_spec
    from memspec.errors import MemspecError
    from memspec.result import CompileResult

_LAZY = {
    "compile_spec": "memspec.compile",
    "MemspecError": "memspec.errors",
    "CompileResult": "memspec.result",
}


def __getattr__(name: str) -> object:
    # Imported when first used: `memspec --version` and a cached compile need no sympy.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memspec' has no attribute {name!r}")
