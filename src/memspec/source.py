"""Source files and spans: where every diagnostic points.

A `Span` is the location of a piece of spec text. `Span.render(message)` prints the one
error format memspec uses everywhere (`FILE:LINE:COL: error: MESSAGE`, the source line,
and carets under the span), in the manner of cairo-lang's location marks.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SourceFile", "Span", "newlines"]


def newlines(text: str) -> str:
    """Windows ("\r\n") and old Mac ("\r") line ends as "\n", so that every line of a
    spec is where the parser and the error messages say it is."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A spec's text and the name it is reported under."""

    name: str
    text: str

    def line(self, number: int) -> str:
        """The 1-based line `number` without its newline ('' past the end). Lines end at
        "\n" only, as the parser counts them (`newlines` makes "\r\n" and "\r" that)."""
        lines = self.text.split("\n")
        return lines[number - 1] if 0 < number <= len(lines) else ""


@dataclass(frozen=True, slots=True)
class Span:
    """A 1-based, end-exclusive region of a source file."""

    source: SourceFile
    line: int
    col: int
    end_line: int
    end_col: int

    def render(self, message: str, kind: str = "error") -> str:
        """`FILE:LINE:COL: KIND: MESSAGE`, the source line, and `^~~~` under the span."""
        text = self.source.line(self.line)
        head = f"{self.source.name}:{self.line}:{self.col}: {kind}: {message}"
        if not text:
            return head
        width = self.end_col - self.col if self.end_line == self.line else len(text) - self.col + 1
        width = max(1, min(width, len(text) - self.col + 1))
        # Keep tabs so the caret lines up under tab-indented source (pyflakes does the same).
        pad = "".join(c if c == "\t" else " " for c in text[: self.col - 1])
        return f"{head}\n{text}\n{pad}^{'~' * (width - 1)}"

    def __str__(self) -> str:
        return f"{self.source.name}:{self.line}:{self.col}"
