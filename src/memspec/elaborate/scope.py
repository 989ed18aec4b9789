"""What names can stand for while elaborating, and the scopes that hold them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import sympy as sp

from memspec.errors import NameResolutionError
from memspec.ir.types import Shape
from memspec.names import name_hint
from memspec.ops.registry import OpDef
from memspec.source import Span
from memspec.syntax import decls as d

__all__ = ["FnRef", "Instance", "LayerRef", "ListValue", "Scope", "Stack", "Tensor", "describe"]


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor value of the graph being built."""

    id: int


@dataclass(frozen=True, slots=True)
class ListValue:
    """A list literal's values (`[2, 2, 6, 2]`); a tuple stays a multi-output's."""

    items: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class LayerRef:
    decl: d.DeclLayer


@dataclass(frozen=True, slots=True)
class FnRef:
    decl: d.DeclFn


@dataclass(eq=False)
class Instance:
    """One instantiated layer: its state_dict prefix, region, and its own scope."""

    decl: d.DeclLayer
    path: str
    region: int | None
    scope: Scope
    forward: d.LayerForward | None = None
    generate: d.LayerForward | None = None  # a model's forward under generate()
    repeated: bool = False
    passthrough: bool = False  # `repeat 0`: calling it returns its input
    span: Span | None = None
    arguments: set[str] = field(default_factory=set)  # argument names a member may shadow


@dataclass(eq=False)
class Stack:
    """`repeat N as i of Layer(...)` whose layers differ by index: uniform parts, called
    in sequence like an nn.Sequential. A part is (region, layers of one repetition): a
    leading layer stands alone (`layers.0`, region None), the rest repeat (`layers[1:]`),
    alternating layers repeat as one pattern (`layers[0::2]`, `layers[1::2]`)."""

    decl: d.DeclLayer
    path: str
    parts: tuple[tuple[int | None, tuple[Instance, ...]], ...]
    span: Span | None = None


@dataclass(eq=False)
class Scope:
    """A chain of name tables; lookups walk outward, definitions go in the innermost."""

    names: dict[str, object] = field(default_factory=dict)
    parent: Scope | None = None
    ellipsis: Shape | None = None  # the leading dims a signature's `...` bound

    def child(self) -> Scope:
        return Scope(parent=self, ellipsis=self.ellipsis)

    def find(self, name: str) -> object | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        return None

    def find_local(self, name: str, stop: Scope) -> object | None:
        """Like `find`, but not looking into `stop` or beyond (the globals)."""
        scope: Scope | None = self
        while scope is not None and scope is not stop:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        return None

    def all_names(self) -> list[str]:
        names: list[str] = []
        scope: Scope | None = self
        while scope is not None:
            names.extend(scope.names)
            scope = scope.parent
        return names

    def lookup(self, name: str, span: Span | None, also: Iterable[str] = ()) -> object:
        """The value of `name`; unknown, the error names the nearest names in scope (and
        in `also`: the ops and functions a call could name)."""
        found = self.find(name)
        if found is None:
            raise NameResolutionError(f"unknown name {name!r}{self.suggest(name, also)}", span)
        return found

    def suggest(self, name: str, also: Iterable[str] = ()) -> str:
        """The nearest names in scope; else the names in scope, tensors and members
        before sizes and definitions, the innermost first within each."""
        names = dict.fromkeys(self.all_names())
        ranked = sorted(names, key=lambda k: _LISTING_ORDER.get(type(self.find(k)), 3))
        return name_hint(name, [*ranked, *also])


_LISTING_ORDER = {Tensor: 0, tuple: 0, Instance: 1, Stack: 1, FnRef: 4, LayerRef: 5}


def describe(value: object) -> str:
    """What a value is, in the words of messages ("a tensor", "layer Linear")."""
    if isinstance(value, tuple):
        return f"{len(value)} tensors"
    if isinstance(value, Tensor):
        return "a tensor"
    if isinstance(value, ListValue):
        return f"a list of {len(value.items)}"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Instance):
        return f"layer {value.decl.name}"
    if isinstance(value, Stack):
        return f"repeated layers {value.decl.name}"
    if isinstance(value, LayerRef):
        return f"layer definition {value.decl.name}"
    if isinstance(value, FnRef):
        return f"fn {value.decl.name}"
    if isinstance(value, OpDef):
        return f"op {value.name}"
    if isinstance(value, sp.Basic):
        return "a number"
    return type(value).__name__
