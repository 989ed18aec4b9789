"""memspec: a declarative model-spec compiler for training memory.

A spec file states a model's symbolic dims, layers and parameters; memspec parses it
(`syntax/`), elaborates it into an IR graph (`elaborate/`, `ir/`), runs memory passes
(`passes/`) and renders a derivation report (`report/`). For notebooks and tools:

    >>> import memspec
    >>> result = memspec.compile_spec("specs/cs336_lm.mspec", set={"B": 4})
    >>> result.to_json()  # also to_markdown(), to_latex(); notebooks show the report
"""

from __future__ import annotations

from memspec.compile import compile_spec
from memspec.errors import MemspecError
from memspec.result import CompileResult

__all__ = ["CompileResult", "MemspecError", "compile_spec"]
__version__ = "0.1.0"
