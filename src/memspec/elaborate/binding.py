"""Binding a call's arguments to the callee's parameters: by position, keyword, default.

One rule serves both kinds of call in a spec: instantiating a layer
(`Linear(D, D, bias=false)`, whose arguments are sizes and constants) and calling a
`forward` or `fn` (whose arguments are mostly tensors). Only the callers' details differ:
how a default is evaluated, and the words of two messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memspec.errors import NameResolutionError, SpecValueError
from memspec.source import Span
from memspec.syntax import decls as d
from memspec.syntax import nodes as n

__all__ = ["Argument", "bind_arguments"]


@dataclass(frozen=True, slots=True)
class Argument:
    """One argument of a call: its keyword (None: positional), its value, where it is."""

    name: str | None
    value: Callable[[], object]  # evaluated as it is bound, so errors come in source order
    span: Span | None = None

    @staticmethod
    def evaluated(value: object, name: str | None = None) -> Argument:
        """An argument whose value the caller has computed already."""
        return Argument(name, lambda: value)


def bind_arguments(
    owner: str,
    params: Sequence[d.Param | n.SigParam],
    args: Sequence[Argument],
    span: Span | None,
    default: Callable[[n.Expr, dict[str, object]], object],
    *,
    given: int | None = None,
    member: str = "argument",
) -> dict[str, object]:
    """Each parameter's value: the argument at its position or of its name, else its default.

    `owner` names the callee in messages; `default(expr, bound)` evaluates a default with
    the values bound so far; `given` is the count a surplus-argument message reports (all
    of `args` unless said); `member` is what a message calls an unknown keyword's target.
    Errors point at the argument, or at `span` for one without a span of its own.
    """
    names = [p.name for p in params]
    bound: dict[str, object] = {}
    for i, arg in enumerate(args):
        if arg.name is None:
            if i >= len(names):
                count = len(args) if given is None else given
                raise SpecValueError(
                    f"{owner} takes {len(names)} argument"
                    f"{'s' if len(names) != 1 else ''}, got {count}",
                    arg.span or span,
                )
            key = names[i]
        else:
            if arg.name not in names:
                raise NameResolutionError(f"{owner} has no {member} {arg.name!r}", arg.span or span)
            key = arg.name
        if key in bound:
            raise SpecValueError(f"{owner}: argument {key!r} given twice", arg.span or span)
        bound[key] = arg.value()
    for param in params:
        if param.name not in bound:
            if param.default is None:
                raise SpecValueError(f"{owner}: missing argument {param.name!r}", span)
            bound[param.name] = default(param.default, bound)
    return bound
