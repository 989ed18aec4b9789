"""The Pygments lexer: every spec in the repository lexes without an error token, the
keywords are the grammar's, and Pygments finds it by name and file name."""

from __future__ import annotations

import re

import pytest
from pygments.token import Error, Keyword

from memspec.lexer import KEYWORDS, MspecLexer
from memspec.resources import grammar_path
from tests.conftest import ROOT

SPECS = sorted((ROOT / "specs").rglob("*.mspec"))


def test_the_keywords_are_the_grammars():
    quoted = set(re.findall(r'"([a-z_]+)"', grammar_path().read_text(encoding="utf-8")))
    assert set(KEYWORDS) == quoted - {"true", "false"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_spec_lexes(path):
    tokens = list(MspecLexer().get_tokens(path.read_text(encoding="utf-8")))
    assert not [value for kind, value in tokens if kind in Error]
    assert any(kind in Keyword for kind, _ in tokens)


def test_pygments_finds_it():
    """Through the `pygments.lexers` entry point of the installed package."""
    from pygments.lexers import find_lexer_class_for_filename, get_lexer_by_name

    assert isinstance(get_lexer_by_name("mspec"), MspecLexer)
    assert find_lexer_class_for_filename("llama.mspec") is MspecLexer
