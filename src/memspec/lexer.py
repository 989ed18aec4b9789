"""A Pygments lexer for `.mspec` files, so that docs and notebooks highlight specs.

Registered as the `pygments.lexers` entry point `mspec` (pyproject.toml); Pygments is
imported only when it loads the lexer (it comes with pytest and Jupyter, and memspec does
not depend on it). The keywords are the grammar's (grammar/memspec.lark); a test keeps
them equal.
"""

from __future__ import annotations

from typing import ClassVar

from pygments.lexer import RegexLexer, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text

__all__ = ["KEYWORDS", "MspecLexer"]

# every quoted word of the grammar but the literals
KEYWORDS = (
    "and", "as", "assume", "at", "aten", "blocks", "buffer", "call", "checkpoint",
    "convention", "count", "dim", "each", "else", "expect", "flops", "fn", "forward",
    "frozen", "generate", "gram", "hf_config", "if", "kind", "layer", "let", "like", "model",
    "not", "of", "optimizer", "or", "over", "param", "params", "per", "precision", "preset",
    "recompute", "reduced", "repeat", "replicated", "require", "return", "save", "scalar",
    "scaler", "state", "temp", "torch", "tp_plan", "train", "use", "variant",
)  # fmt: skip
DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")


class MspecLexer(RegexLexer):
    """memspec's spec language."""

    name = "memspec"
    aliases: ClassVar[list[str]] = ["mspec", "memspec"]
    filenames: ClassVar[list[str]] = ["*.mspec"]

    tokens: ClassVar[dict] = {
        "root": [
            (r"\s+", Text),
            (r"#[^\n]*", Comment.Single),
            (r'"[^"\\\n]*"', String.Double),
            (words(("true", "false"), suffix=r"\b"), Keyword.Constant),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(DTYPES, suffix=r"\b"), Keyword.Type),
            (r"[0-9](_?[0-9])*\.[0-9](_?[0-9])*([eE][-+]?[0-9]+)?", Number.Float),
            (r"[0-9](_?[0-9])*", Number.Integer),
            (r"[A-Za-z_][A-Za-z0-9_]*", Name),
            (r"\*\*|//|==|!=|<=|>=|->|[-+*/%<>=]", Operator),
            (r"\.\.\.|[()\[\]{},;:.]", Punctuation),
        ]
    }
