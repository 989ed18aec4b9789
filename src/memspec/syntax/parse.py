"""Text -> AST, and the one place lark's exceptions become `SpecSyntaxError` in words.

Users never see a lark class name: terminal names are translated with `_TOKENS` (after
cairo-lang's table), the expected list is sorted and capped.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from memspec.errors import SpecSyntaxError
from memspec.source import SourceFile, Span
from memspec.syntax.cache import cached_module
from memspec.syntax.decls import Module

if TYPE_CHECKING:
    from lark.exceptions import UnexpectedInput

__all__ = ["parse"]

_TOKENS = {
    "NAME": "identifier",
    "INT": "integer",
    "FLOAT": "number",
    "STRING": "string",
    "COMPARE": "comparison",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "COLON": "':'",
    "SEMICOLON": "';'",
    "EQUAL": "'='",
    "DOT": "'.'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "PERCENT": "'%'",
    "__ANON_0": "'->'",
    "$END": "end of file",
    "expression": "expression",
}
_MAX_EXPECTED = 8


def _word(terminal: str) -> str:
    if terminal in _TOKENS:
        return _TOKENS[terminal]
    if terminal.startswith("__ANON") or terminal.isupper():
        # Keywords and anonymous punctuation: lark names them after their text.
        from memspec.syntax.grammar import parser

        pattern = parser().get_terminal(terminal).pattern
        return f"'{pattern.value}'" if pattern.type == "str" else terminal.lower()
    return terminal.lower()


# Terminals that can start an expression; when all are expected, say "expression".
_EXPRESSION_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "MINUS"}


# Binary operators (as words); when an expression may go on, say "operator" once.
_OPERATORS = {
    "'+'",
    "'-'",
    "'*'",
    "'/'",
    "'%'",
    "'**'",
    "'//'",
    "'.'",
    "'and'",
    "'or'",
    "comparison",
    "'('",
}


def _expected(terminals: set[str]) -> str:
    if terminals >= _EXPRESSION_START:
        terminals = (terminals - _EXPRESSION_START - {"TRUE", "FALSE", "NOT"}) | {"expression"}
    words = {_word(t) for t in terminals}
    if words >= {"'+'", "'*'", "'/'"}:
        words = (words - _OPERATORS) | {"operator"}
    words = sorted(words)
    if len(words) > _MAX_EXPECTED:
        words = [*words[:_MAX_EXPECTED], "..."]
    return ", ".join(words)


def _describe(err: UnexpectedInput) -> str:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    if isinstance(err, UnexpectedCharacters):
        return f"unexpected character {err.char!r}"
    if isinstance(err, UnexpectedEOF):
        return f"unexpected end of file; expected {_expected(set(err.expected))}"
    if isinstance(err, UnexpectedToken):
        token = err.token
        found = _word(token.type)
        if token.type in ("NAME", "INT", "FLOAT", "STRING"):
            found = f"{found} {str(token)!r}"
        return f"unexpected {found}; expected {_expected(set(err.expected))}"
    return str(err)


def parse(text: str, source: SourceFile | str | None = None) -> Module:
    """Parse spec text into a `Module`, raising `SpecSyntaxError` with a located message;
    `source` is the file (or the name) the text is reported under."""
    if not isinstance(source, SourceFile):
        source = SourceFile(source or "<spec>", text)
    return _parse(text, source)


@lru_cache(maxsize=64)
def _parse(text: str, source: SourceFile) -> Module:
    # Memoized, and kept across processes (syntax/cache.py): every compile loads the
    # same standard library, and a Module is immutable (frozen nodes, spans naming
    # their source).
    return cached_module(text, source, _parse_text)


def _parse_text(text: str, source: SourceFile) -> Module:
    # lark is imported here: a file the cache holds needs no parser (syntax/cache.py)
    from lark.exceptions import UnexpectedEOF, UnexpectedInput, UnexpectedToken

    from memspec.syntax.grammar import parse_module

    try:
        return parse_module(text, source)
    except UnexpectedInput as err:
        line = err.line if err.line and err.line > 0 else max(1, text.count("\n") + 1)
        col = err.column if err.column and err.column > 0 else 1
        if isinstance(err, UnexpectedEOF) or getattr(err, "token", None) == "":
            line, col = _end_position(text)
        width = len(str(err.token)) if isinstance(err, UnexpectedToken) else 1
        span = Span(source, line, col, line, col + max(1, width))
        raise SpecSyntaxError(_describe(err), span) from None


def _end_position(text: str) -> tuple[int, int]:
    """Where end-of-file errors point: just after the last non-blank character."""
    stripped = text.rstrip()
    line = stripped.count("\n") + 1
    return line, len(stripped) - (stripped.rfind("\n") + 1) + 1
