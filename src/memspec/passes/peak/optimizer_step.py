"""The moments of `optimizer.step()`: parameters, every gradient, the optimizer state,
what is still alive of the forward (the batch and the loss), and the step's
temporaries. A `for_loop` optimizer updates one parameter at a time (one moment per
parameter shape: its temporaries and the previous parameter's `denom`); `foreach` holds
the temporaries of every parameter at once."""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.sizes import BoundSizes
from memspec.ir.types import DType, numel
from memspec.optimizers import Optimizer
from memspec.passes.parameters import trained_items
from memspec.passes.peak.moments import Point
from memspec.passes.results import CategoryResult, LineItem
from memspec.symbolic.polys import Poly, add_into

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


def _update_order(params: tuple[LineItem, ...]) -> list[LineItem]:
    """The parameters in the order torch.optim updates them: module order, each run of a
    repeated region's parameters twice (the first repetition, then one that follows a
    repetition, as all the others do)."""
    params = module_order(params)
    order = []
    i = 0
    while i < len(params):
        group = [params[i]]
        while i + len(group) < len(params) and params[i + len(group)].regions == group[0].regions:
            group.append(params[i + len(group)])
        order += group * (2 if group[0].regions and len(group) > 1 else 1)
        i += len(group)
    return order


def _loop(
    optimizer: Optimizer,
    params: list[LineItem],
    impl: str,
    bound: BoundSizes,
    dtype: DType,
    measure: Callable[[sp.Expr], Poly],
) -> list[tuple[str, Poly]]:
    """A loop over parameters (for_loop): at each temporary made, this parameter's so
    far and the loop variables of earlier parameters not yet rebound."""
    rules = optimizer.temps_of(impl)
    carried: dict[int, sp.Expr] = {}  # rule index -> the bytes its variable still holds
    moments = []
    for item in params:
        made = [k for k, rule in enumerate(rules) if rule.applies(item.shape, bound)]
        free_after = {}  # a carried variable -> the position after which it is rebound
        for k in carried:
            if k in made:
                life = rules[k].lifetime
                position = {"until first": 0, "until last": len(made) - 1}
                free_after[k] = position.get(life, made.index(k))
        own = sp.Integer(0)
        for position, k in enumerate(made):
            rule = rules[k]
            own += numel(rule.extent.shape(item.shape, bound)) * (rule.dtype or dtype).itemsize
            alive = [size for j, size in carried.items() if free_after.get(j, position) >= position]
            moments.append((f"updating {item.path}", measure(own + sum(alive, sp.Integer(0)))))
        for k in free_after:
            del carried[k]
        for k in made:
            if rules[k].lifetime != "freed":
                rule = rules[k]
                shape = rule.extent.shape(item.shape, bound)
                carried[k] = numel(shape) * (rule.dtype or dtype).itemsize
    return moments


def _temporaries(
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    impl: str,
    bound: BoundSizes,
    measure: Callable[[sp.Expr], Poly],
) -> list[tuple[str, Poly]]:
    """(which parameter is being updated, the step's temporaries then), per moment; each
    optimizer of a chain (Muon's, then AdamW's for the rest) steps in turn."""
    params = trained_items(categories["parameters"].items)  # frozen ones are skipped
    dtype = config.precision.state
    moments, seen = [], set()
    for optimizer in config.optimizer.chain():
        own = [i for i in params if config.optimizer.owner(i.shape, bound) is optimizer]
        if not own or not optimizer.temps_of(impl):
            continue
        if impl == "foreach":
            every = sp.Integer(0)
            for item in own:
                for rule in optimizer.temps_of(impl):
                    if rule.applies(item.shape, bound):
                        shape = rule.extent.shape(item.shape, bound)
                        every += (
                            item.multiplicity * numel(shape) * (rule.dtype or item.dtype).itemsize
                        )
            found = [("every parameter at once", measure(sp.expand(every)))]
        else:
            found = _loop(optimizer, _update_order(tuple(own)), impl, bound, dtype, measure)
        for where, size in found:
            key = tuple(sorted(size.items(), key=str))
            if key not in seen:
                seen.add(key)
                moments.append((where, size))
    return moments or [("", {})]


def step_moments(
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    impl: str,
    point: Point,
    fixed: dict[str, Poly],
    state: Poly,
    measure: Callable[[sp.Expr], Poly],
    beyond: Poly,
    bound: BoundSizes,
) -> list[tuple[str, dict[str, Poly]]]:
    """(where, memory by category) of each moment of the step; `point` is the replay's
    moment after backward, `fixed` the parameters' and buffers' bytes, `state` the
    optimizer state's, `beyond` what gradients that are views of larger ones hold more."""
    memory = dict(point.memory)
    grads_all = dict(measure(categories["gradients"].bytes))
    add_into(grads_all, beyond)
    out = []
    for where, temp in _temporaries(config, categories, impl, bound, measure):
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
