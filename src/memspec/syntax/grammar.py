"""Builds the LALR parser from the packaged grammar, once per process."""

from __future__ import annotations

import functools

from lark import Lark

from memspec.resources import grammar_path
from memspec.syntax.cache import grammar_cache

__all__ = ["parser"]


@functools.cache
def parser(strict: bool = False) -> Lark:
    """The memspec parser. `strict=True` (tests only) fails on any grammar conflict."""
    path = grammar_path()
    return Lark(
        path.read_text(encoding="utf-8"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        # lark's cache is keyed on the grammar text and options (in the user cache dir:
        # syntax/cache.py); strict mode needs none.
        cache=False if strict else grammar_cache(),
        strict=strict,
    )
