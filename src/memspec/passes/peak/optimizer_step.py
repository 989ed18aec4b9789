"""The moments of `optimizer.step()`: parameters, every gradient, the optimizer state,
what is still alive of the forward (the batch and the loss), and the step's
temporaries. A `for_loop` optimizer updates one parameter at a time (one moment per
parameter shape: its temporaries and the previous parameter's `denom`); `foreach` holds
the temporaries of every parameter at once."""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from memspec.config import TrainConfig
from memspec.passes.parameters import trained_items
from memspec.passes.peak.moments import Point
from memspec.passes.results import CategoryResult, LineItem
from memspec.symbolic.polys import Poly, add_into, scaled

__all__ = ["step_moments"]


def module_order(params: tuple[LineItem, ...]) -> tuple[LineItem, ...]:
    """The parameters (listed as declared) in `nn.Module.parameters()` order: modules in
    pre-order, each module's own parameters before its submodules' (torchvision's ViT
    declares `class_token` after `conv_proj`, and updates it first)."""
    first: dict[str, int] = {}  # a module path -> when it first appeared among its siblings
    for position, item in enumerate(params):
        parts = item.path.split(".")
        for depth in range(1, len(parts)):
            first.setdefault(".".join(parts[:depth]), position)

    def key(pair: tuple[int, LineItem]) -> tuple[tuple[int, int], ...]:
        position, item = pair
        parts = item.path.split(".")
        modules = tuple((1, first[".".join(parts[: depth + 1])]) for depth in range(len(parts) - 1))
        return (*modules, (0, position))  # own tensors (0) before submodules (1)

    return tuple(item for _, item in sorted(enumerate(params), key=key))


def _update_order(params: tuple[LineItem, ...]) -> list[tuple[LineItem | None, LineItem]]:
    """(previous parameter, parameter) pairs in the order torch.optim updates them:
    module order, so each repetition of a region's parameters in turn, the last of one
    repetition followed by the first of the next."""
    params = module_order(params)
    pairs, previous = [], None
    i = 0
    while i < len(params):
        group = [params[i]]
        while i + len(group) < len(params) and params[i + len(group)].regions == group[0].regions:
            group.append(params[i + len(group)])
        for item in group:
            pairs.append((previous, item))
            previous = item
        if group[0].regions and len(group) > 1:
            pairs.append((group[-1], group[0]))  # into the next repetition
        i += len(group)
    return pairs


def _temporaries(
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    impl: str,
    measure: Callable[[sp.Expr], Poly],
) -> list[tuple[str, Poly]]:
    """(which parameter is being updated, the step's temporaries then), per moment."""
    temps = config.optimizer.temps_of(impl)
    params = trained_items(categories["parameters"].items)  # frozen ones are skipped
    if temps == 0 or not params:
        return [("", {})]
    if impl == "foreach":
        every = scaled(measure(sp.expand(sum((i.bytes for i in params), sp.Integer(0)))), temps)
        return [("every parameter at once", every)]
    itemsize = config.precision.state.itemsize
    moments, seen = [], set()
    for before, item in _update_order(params):
        # `denom`, the last temporary, is a local variable of the loop: the previous
        # parameter's stays alive until this parameter's replaces it
        size = item.elements * itemsize * temps
        if before is not None and config.optimizer.keeps_last(impl):
            size += before.elements * itemsize
        size = measure(size)
        key = tuple(sorted(size.items(), key=str))
        if key not in seen:
            seen.add(key)
            moments.append((f"updating {item.path}", size))
    return moments


def step_moments(
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    impl: str,
    point: Point,
    fixed: dict[str, Poly],
    state: Poly,
    measure: Callable[[sp.Expr], Poly],
    beyond: Poly,
) -> list[tuple[str, dict[str, Poly]]]:
    """(where, memory by category) of each moment of the step; `point` is the replay's
    moment after backward, `fixed` the parameters' and buffers' bytes, `state` the
    optimizer state's, `beyond` what gradients that are views of larger ones hold more."""
    memory = dict(point.memory)
    grads_all = dict(measure(categories["gradients"].bytes))
    add_into(grads_all, beyond)
    out = []
    for where, temp in _temporaries(config, categories, impl, measure):
        opt = dict(state)
        add_into(opt, temp)
        parts = {
            **fixed,
            "gradients": dict(grads_all),
            "optimizer_state": opt,
            "activations": dict(memory["activations"]),
            "temporaries": dict(memory["temporaries"]),
        }
        out.append((where, parts))
    return out
