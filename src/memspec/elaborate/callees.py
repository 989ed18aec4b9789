"""What a call in a spec can resolve to, and where the evaluator sends each kind.

A callee is a primitive op (`OpDef`), a layer instance (`Instance`: its `forward` runs),
a `fn` (`FnRef`), a built-in scalar function (`ScalarFunction`: ceil, floor, sqrt, min,
max) or the mixture-of-experts form (`Route`). The evaluator applies ops and scalar
functions itself and hands the calls that run a body to its `Callees`, the elaborator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import sympy as sp

from memspec.elaborate.frames import Frame
from memspec.elaborate.route import ROUTE
from memspec.elaborate.scope import FnRef, Instance, Scope, Stack, Tensor, describe
from memspec.errors import SpecValueError
from memspec.ops import REGISTRY
from memspec.source import Span
from memspec.symbolic import build

__all__ = ["Callees", "Route", "ScalarFunction", "resolve_callee"]


@dataclass(frozen=True, slots=True)
class ScalarFunction:
    """A built-in function of sizes, such as `ceil(D / 3)`: sympy in, sympy out."""

    name: str
    arity: int
    func: Callable[..., sp.Expr]

    def __call__(self, args: tuple, kwargs: dict, span: Span | None) -> sp.Expr:
        if kwargs or len(args) != self.arity:
            plural = "s" if self.arity > 1 else ""
            raise SpecValueError(f"{self.name} takes {self.arity} argument{plural}", span)
        for a in args:
            if isinstance(a, bool) or not isinstance(a, sp.Basic):
                raise SpecValueError(f"{self.name} needs numbers, got {describe(a)}", span)
        return self.func(*args)


@dataclass(frozen=True, slots=True)
class Route:
    """The `route(...)` form (elaborate/route.py); a name in scope may shadow it."""


def resolve_callee(name: str, scope: Scope, span: Span | None) -> object:
    """What `name(...)` calls: a name in scope, else `route`, an op, a scalar function."""
    found = scope.find(name)
    if found is None and name == ROUTE:
        return Route()
    if found is None:
        found = REGISTRY.get(name)
    if found is None and (spec := build.scalar_function(name)) is not None:
        arity, func = spec
        found = ScalarFunction(name, arity, func)
    if found is None:
        also = [ROUTE, *REGISTRY, *build.scalar_functions()]
        scope.lookup(name, span, also)  # raises, suggesting a close name
    return found


class Callees(Protocol):
    """The calls that run a body, which the evaluator hands on (the elaborator does them)."""

    def call_layer(
        self,
        inst: Instance | Stack,
        args: tuple,
        kwargs: dict[str, object],
        span: Span | None,
        calls: tuple[str, ...],
        result_name: str | None = None,
    ) -> object:
        """Run the `forward` of a layer instance (of each, in turn, of a `Stack`)."""
        ...

    def call_fn(
        self,
        fn: FnRef,
        args: tuple,
        kwargs: dict[str, object],
        span: Span | None,
        frame: Frame,
        result_name: str | None,
    ) -> object:
        """Run a `fn` in the caller's region, under the caller's path."""
        ...

    def route(
        self, args: tuple, kwargs: dict[str, object], span: Span | None, frame: Frame
    ) -> Tensor:
        """Expand the mixture-of-experts form."""
        ...
