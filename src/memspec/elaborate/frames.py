"""Where the ops being elaborated belong, and the note an error gets on leaving a call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from memspec.errors import MemspecError
from memspec.source import Span

__all__ = ["Frame", "Hint", "expanding"]

T = TypeVar("T")

# What the statement being elaborated calls its result: an assignment's target, an
# unpacking's targets, "" for a `return`, None inside an expression.
Hint = str | tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Frame:
    """One body being elaborated: the instance path and region its ops get, the call stack."""

    path: str
    region: int | None
    calls: tuple[str, ...]
    result_name: str | None = None  # the caller's name for what this call returns

    def member(self, name: str) -> str:
        """`name` under this frame's path (`layers.attn` and `q` give `layers.attn.q`)."""
        return ".".join(p for p in (self.path, name) if p)


def expanding(run: Callable[[], T], name: str, path: str, span: Span | None) -> T:
    """`run()`, noting the call site on an error that points into another file (`std`)."""
    try:
        return run()
    except MemspecError as err:
        if err.span is not None and span is not None and err.span.source != span.source:
            raise err.with_note(f"while expanding {name} ({path})", span) from None
        raise
