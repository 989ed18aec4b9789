"""einops-style patterns: `"B L (H K) -> B H L K"`, `"... q d, ... k d -> ... q k"`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Pattern", "parse_pattern"]

_TOKEN = re.compile(r"\s*(\.\.\.|[A-Za-z_][A-Za-z0-9_]*|\(|\)|,|1)")


@dataclass(frozen=True, slots=True)
class Pattern:
    """Operands and output as tuples of groups; a group is a tuple of axis names."""

    inputs: tuple[tuple[str, ...], ...]
    output: tuple[str, ...]
    input_groups: tuple[tuple[tuple[str, ...], ...], ...]
    output_groups: tuple[tuple[str, ...], ...]
    ones: frozenset[str] = frozenset()  # anonymous size-1 axes, written `1`


def _side(text: str, fail: Callable[[str], Exception], ones: list[str]) -> list[tuple[str, ...]]:
    groups: list[tuple[str, ...]] = []
    current: list[str] | None = None
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise fail(f"bad pattern text {text[pos:]!r}")
        token = match.group(1)
        pos = match.end()
        if token == "1":  # each `1` is its own anonymous axis of size 1
            token = f"1#{len(ones)}"
            ones.append(token)
        if token == "(":
            if current is not None:
                raise fail("nested parentheses in pattern")
            current = []
        elif token == ")":
            if current is None:
                raise fail("unbalanced ')' in pattern")
            groups.append(tuple(current))
            current = None
        elif token == ",":
            raise fail("unexpected ',' in pattern")
        elif current is not None:
            current.append(token)
        else:
            groups.append((token,))
    if current is not None:
        raise fail("unbalanced '(' in pattern")
    return groups


def parse_pattern(text: str, fail: Callable[[str], Exception]) -> Pattern:
    """Parse an einops pattern; `fail(message)` builds the exception to raise."""
    if text.count("->") != 1:
        raise fail(f"pattern {text!r} needs exactly one '->'")
    left, right = text.split("->")
    ones: list[str] = []
    operands = [_side(part, fail, ones) for part in left.split(",")]
    output = _side(right, fail, ones)
    names = [a for groups in [*operands, output] for g in groups for a in g]
    if not names and not text.strip():
        raise fail("empty pattern")
    for groups in [*operands, output]:
        flat = [a for g in groups for a in g]
        if len(set(flat)) != len(flat):
            raise fail(f"an axis is repeated within one side of {text!r}")
    return Pattern(
        inputs=tuple(tuple(a for g in groups for a in g) for groups in operands),
        output=tuple(a for g in output for a in g),
        input_groups=tuple(tuple(groups) for groups in operands),
        output_groups=tuple(output),
        ones=frozenset(ones),
    )
