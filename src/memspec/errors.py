"""Diagnostics: one error class per phase, each carrying the span it points at.

The CLI is the only place that turns these into exit codes: a `MemspecError` is a problem
with the user's input (exit 2); anything else is a bug in memspec (exit 1).
"""

from __future__ import annotations

from memspec.source import Span

__all__ = [
    "ExpectError",
    "MemspecError",
    "NameResolutionError",
    "ShapeError",
    "SpecImportError",
    "SpecSyntaxError",
    "SpecValueError",
    "UsageError",
]


class MemspecError(Exception):
    """A problem with the user's input, located at `span` (None for command-line input)."""

    def __init__(
        self, message: str, span: Span | None = None, notes: tuple[tuple[str, Span], ...] = ()
    ):
        super().__init__(message)
        self.message = message
        self.span = span
        self.notes = notes

    def with_note(self, message: str, span: Span | None) -> MemspecError:
        """Add a 'while expanding ...' note pointing at a call site."""
        if span is not None:
            self.notes = (*self.notes, (message, span))
        return self

    def render(self) -> str:
        """The full diagnostic text, as printed on stderr."""
        head = self.span.render(self.message) if self.span else f"memspec: error: {self.message}"
        notes = [span.render(msg, kind="note") for msg, span in self.notes]
        return "\n".join([head, *notes])


class SpecSyntaxError(MemspecError):
    """The text does not parse."""


class NameResolutionError(MemspecError):
    """A name is unknown, defined twice, or used as the wrong kind of thing."""


class ShapeError(MemspecError):
    """Tensor shapes do not agree, or an annotation does not hold."""


class SpecValueError(MemspecError):
    """A value is out of range: division by zero, bad argument count, bad dtype."""


class SpecImportError(MemspecError):
    """A `use` cannot be resolved, or `use`s form a cycle."""


class ExpectError(MemspecError):
    """An `expect` in the spec does not hold."""


class UsageError(MemspecError):
    """Bad command-line input (`--set`, `--preset`, unknown policy names)."""
