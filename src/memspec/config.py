"""The training configuration: the spec's `train` block merged with command-line flags."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from memspec.errors import UsageError
from memspec.inference import Inference
from memspec.lora import Lora
from memspec.names import did_you_mean
from memspec.ops.registry import REGISTRY
from memspec.parallel import SINGLE, Parallel, read_parallel
from memspec.policies import (
    Convention,
    Optimizer,
    Precision,
    check_convention_names,
    read_convention,
    read_optimizer,
    read_precision,
)
from memspec.quantize import Weights
from memspec.recompute import NONE, Recompute, read_recompute
from memspec.source import SourceFile
from memspec.syntax import decls as d
from memspec.syntax.imports import Program, load_program

__all__ = ["DEFAULTS", "TrainConfig", "resolve_config"]

DEFAULTS = {
    "precision": "fp32",
    "optimizer": "adamw",
    "convention": "course",
    "recompute": "none",
}
# the data-parallel settings of a train block (`dp 8; zero 3`), beside the policies
PARALLEL = ("dp", "zero", "runtime", "tp", "sp", "sp_convention")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    precision: Precision
    optimizer: Optimizer
    convention: Convention
    variants: tuple[str, ...] = ()
    recompute: Recompute = NONE
    parallel: Parallel = SINGLE
    freeze: tuple[str, ...] = ()  # globs over parameter names: requires_grad=False
    lora: Lora | None = None  # LoRA adapters on the targeted Linear layers
    weights: Weights | None = None  # the Linear layers' weights stored quantized
    inference: Inference | None = None  # --mode inference: generation, not training


@functools.cache
def standard_callables() -> frozenset[str]:
    """The fns and layers of the whole standard library (a recompute policy may name
    one that a spec does not use: it then picks nothing there)."""
    program = load_program(SourceFile("<std>", "use std"), None)
    return frozenset({*program.fns, *program.layers})


def _pick(kind: str, name: str, table: dict, span) -> object:
    if name not in table:
        hint = did_you_mean(name, sorted(table))
        known = ", ".join(sorted(table)) or "none declared"
        raise UsageError(f"unknown {kind} {name!r}{hint} (known: {known})", span)
    return table[name]


# the variant the inference mode picks in every spec that has a cache path
_INTERNAL_VARIANTS = ("cache",)


def _declared_variants(program: Program) -> set[str]:
    """Every variant name some fn or layer forward of the program declares."""
    bodies = [fn.body for fn in program.fns.values()]
    for layer in (*program.layers.values(), *program.models):
        bodies += [stmt.body for stmt in layer.body if isinstance(stmt, d.LayerForward)]
    return {name for body in bodies for name, _ in body.variants if name}


def _known_variants(
    program: Program, given: tuple[str, ...], spec: tuple[str, ...]
) -> tuple[str, ...]:
    """The variants asked for (`--use`, then the train block's `use`), each declared by
    some fn or layer: a misspelt one is an error, never a silent fall back to the default."""
    declared = _declared_variants(program)
    train_span = program.trains[0].span if program.trains else None
    for names, where, span in ((given, "--use", None), (spec, "use", train_span)):
        for name in names:
            if name in declared or name in _INTERNAL_VARIANTS:
                continue
            hint = did_you_mean(name, sorted(declared))
            known = ", ".join(sorted(declared)) or "none"
            raise UsageError(
                f"{where} {name}: no fn or layer of this spec has a variant {name!r}{hint} "
                f"(variants: {known})",
                span,
            )
    return (*given, *spec)


def resolve_config(
    program: Program,
    precision: str | None = None,
    optimizer: str | None = None,
    convention: str | None = None,
    variants: tuple[str, ...] = (),
    recompute: str | None = None,
    dp: int | None = None,
    zero: int | None = None,
    runtime: str | None = None,
    tp: int | str | None = None,
    sp: bool | None = None,
    sp_convention: str | None = None,
    freeze: tuple[str, ...] = (),
    lora: Lora | None = None,
    weights: Weights | None = None,
    inference: Inference | None = None,
) -> TrainConfig:
    """Command-line choices win over the spec's `train` block, which wins over DEFAULTS."""
    chosen = dict(DEFAULTS)
    spans: dict[str, object] = {}
    spec_variants: tuple[str, ...] = ()
    parallel: dict[str, object] = {}
    if len(program.trains) > 1:
        raise UsageError("a spec may have one train block", program.trains[1].span)
    for train in program.trains:
        for key, value, span in train.settings:
            if key in PARALLEL:
                parallel[key] = _parallel_setting(key, value, span)
                continue
            if key not in DEFAULTS:
                known = ", ".join((*DEFAULTS, *PARALLEL))
                raise UsageError(
                    f"unknown train setting {key!r}; expected one of {known} or use", span
                )
            chosen[key], spans[key] = value, span
        spec_variants = train.variants
    given = {"dp": dp, "zero": zero, "runtime": runtime, "tp": tp}
    given |= {"sp": sp or None, "sp_convention": sp_convention}
    for key, value in given.items():
        if value is not None:
            parallel[key] = value
    for key, value in (
        ("precision", precision),
        ("optimizer", optimizer),
        ("convention", convention),
        ("recompute", recompute),
    ):
        if value is not None:
            chosen[key], spans[key] = value, None

    # every declared policy is checked, so that a misspelt name fails where it is written
    names = {*program.fns, *program.layers, *standard_callables(), *REGISTRY}
    recomputes = {name: read_recompute(d, names) for name, d in program.recomputes.items()}
    for decl in program.conventions.values():
        check_convention_names(decl, names)
    config = TrainConfig(
        precision=read_precision(
            _pick("precision", chosen["precision"], program.precisions, spans.get("precision"))
        ),
        optimizer=read_optimizer(
            _pick("optimizer", chosen["optimizer"], program.optimizers, spans.get("optimizer")),
            program.optimizers,
        ),
        convention=read_convention(
            _pick("convention", chosen["convention"], program.conventions, spans.get("convention"))
        ),
        variants=_known_variants(program, variants, spec_variants),
        recompute=recomputes[
            _pick(
                "recompute policy", chosen["recompute"], program.recomputes, spans.get("recompute")
            ).name
        ],
        parallel=read_parallel(
            parallel.get("dp"),
            parallel.get("zero"),
            parallel.get("runtime"),
            parallel.get("tp"),
            parallel.get("sp"),
            parallel.get("sp_convention"),
        ),
        freeze=tuple(freeze),
        lora=lora,
        weights=weights,
        inference=inference,
    )
    if inference is not None and (config.parallel.distributed or config.parallel.tensor_parallel):
        raise UsageError("--mode inference on several ranks is not modelled yet")
    if inference is not None and weights is not None and weights.int8:
        raise UsageError(
            "--weights int8 with --mode inference is not modelled yet: LLM.int8()'s "
            "products are modelled as CUDA's kernels run them (x's float16 copy, |x| and "
            "its outlier mask beside x's int8 rows), which the CPU's do not, so no "
            "generation on them is checked (nf4, fp4 and fp8 are modelled)"
        )
    if inference is not None and config.recompute.name != "none":
        raise UsageError("--mode inference saves nothing for backward: --recompute has no meaning")
    if weights is not None and weights.int8 and config.recompute.name != "none":
        raise UsageError(
            "--weights int8 with --recompute is not modelled: MatMul8bitLt keeps each "
            "Linear's input in its ctx, which a checkpoint does not free"
        )
    if weights is not None and config.parallel.tensor_parallel:
        raise UsageError("--weights with --tp is not modelled: quantized weights are not sharded")
    if lora is not None and config.parallel.tensor_parallel:
        raise UsageError("--lora with --tp is not modelled: PEFT's adapters are not in the tp_plan")
    return config


def _parallel_setting(key: str, value: str, span) -> object:
    """`dp 8`, `zero 3`, `tp 2` (numbers; `tp TP`: the symbol), `sp true`, or
    `runtime fsdp2`, `sp_convention megatron` (names), as written."""
    if key in ("runtime", "sp_convention") or (key == "tp" and value == "TP"):
        return value
    if key == "sp":
        if value not in ("true", "false"):
            raise UsageError(f"train setting sp is true or false, not {value!r}", span)
        return value == "true"
    if not (value.isascii() and value.replace("_", "").isdigit()):  # "²".isdigit() is true
        raise UsageError(f"train setting {key} is a number, not {value!r}", span)
    return int(value.replace("_", ""))
