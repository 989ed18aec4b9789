"""The whole compile behind one call: load, configure, elaborate, bind, analyse.

`compile_spec` reads as its stages: the spec's program is loaded (with what it `use`s),
its configuration resolved, the model elaborated into the IR, the dims bound (preset,
then `--set`), and every analysis of `passes.PIPELINE` run; the `CompileResult` holds
what they returned.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import sympy as sp

from memspec.config import resolve_config
from memspec.elaborate import elaborate
from memspec.errors import UsageError
from memspec.hf_config import HfConfigUse, config_bindings, read_config, weights_of
from memspec.inference import PAST, Inference, with_past
from memspec.limits import time_limit as limited_to
from memspec.lora import Lora
from memspec.ops import lookup
from memspec.parallel import DP, TP, with_degree
from memspec.passes import AnalysisContext, run_pipeline
from memspec.passes.peak import StepOptions
from memspec.passes.results import CATEGORY_TITLES
from memspec.policies import read_convention
from memspec.quantize import Weights
from memspec.recompute import unmodelled_cache
from memspec.result import CompileResult
from memspec.source import SourceFile, newlines
from memspec.symbolic import bind
from memspec.symbolic.symbols import SymbolTable
from memspec.syntax import decls as d
from memspec.syntax import nodes as n
from memspec.syntax.imports import load_program, read_source
from memspec.syntax.nodes import Expr

__all__ = ["compile_spec"]


def _source(spec: str | Path) -> tuple[SourceFile, Path | None]:
    if isinstance(spec, Path) or ("\n" not in spec and spec.endswith(".mspec")):
        path = Path(spec)
        return read_source(path, str(spec)), path
    return SourceFile("<spec>", newlines(spec)), None


# attention implementations (std's convention, specs/std/attention.mspec) whose generation
# is not checked against transformers: --mode inference refuses them
UNCHECKED_IN_GENERATION = ("eager", "math", "flash")
MAX_STEPS = 10**15  # no training run is longer; more is a typo
COMPILE_SECONDS = 20.0  # real specs compile in well under a second; untrusted ones may not


def _training(
    peak_flops: float | None, mfu: float, steps: int | None
) -> tuple[float, float, int] | None:
    """(peak FLOP/s, MFU, steps) for the training time, when asked for."""
    if peak_flops is None and steps is None:
        return None
    finite = all(math.isfinite(v) for v in (peak_flops or 0.0, mfu))
    if (
        peak_flops is None
        or steps is None
        or not finite
        or peak_flops <= 0
        or not 0 < steps <= MAX_STEPS
        or not 0 < mfu <= 1
    ):
        raise UsageError(
            f"training time needs a finite --peak-flops > 0, 0 < --steps <= {MAX_STEPS:.0e} "
            "and 0 < --mfu <= 1"
        )
    return float(peak_flops), float(mfu), int(steps)


def compile_spec(
    spec: str | Path,
    *,
    set: dict[str, int] | list[str] | None = None,
    preset: str | None = None,
    convention: str | None = None,
    optimizer: str | None = None,
    precision: str | None = None,
    use: tuple[str, ...] | list[str] = (),
    recompute: str | None = None,
    peak_flops: float | None = None,
    mfu: float = 0.5,
    steps: int | None = None,
    step: StepOptions | None = None,
    dp: int | None = None,
    zero: int | None = None,
    runtime: str | None = None,
    tp: int | str | None = None,
    sp: bool | None = None,
    sp_convention: str | None = None,
    freeze: tuple[str, ...] | list[str] = (),
    lora: Lora | None = None,
    weights: Weights | None = None,
    inference: Inference | None = None,
    checks: tuple = (),
    hf_config: str | Path | None = None,
    unbound: tuple[str, ...] = (),
    time_limit: float | None = COMPILE_SECONDS,
) -> CompileResult:
    """Compile a spec (a path, or spec text) into a `CompileResult`.

    `set` binds symbols to integers (`{"B": 4}` or `["B=4"]`, symbols or long names) and
    wins over `preset`. With `peak_flops` (FLOP/s of the accelerator) and `steps`, the
    report also gives the training time at model FLOPs utilization `mfu`. `step` sets
    the training loop whose true peak is modelled (`StepOptions()`: steady state,
    `zero_grad(set_to_none=True)`, no accumulation, for-loop optimizer). `dp` (data-
    parallel ranks), `zero` (the ZeRO stage), `runtime` (`memspec.parallel`) and `tp`
    (tensor-parallel ranks, the spec's `tp_plan`s; "TP": the symbol), `sp` and
    `sp_convention` (sequence parallelism) give what each rank holds. `freeze` globs
    over parameter names give requires_grad=False (`memspec.freeze`); `lora` injects
    PEFT's LoRA adapters and freezes the rest (`memspec.lora`); `weights` stores the
    Linear layers' weights quantized (`memspec.quantize`); `inference` runs the model's
    generate block as a serving loop does instead of a training step
    (`memspec.inference`); `checks` are stated answers (expect declarations, `memspec
    check`) checked without raising, in `CompileResult.checks`; `hf_config` is a
    config.json whose fields set the dims as the spec's `hf_config` block says
    (`memspec.hf_config`; `set` wins over it, it over `preset`); without `weights`, its
    quantization_config gives them (`hf_config.weights_of`: fp8, bitsandbytes).
    `unbound` names dims left symbolic whatever the preset or config gives them
    (`memspec sweep`'s grid).
    `time_limit` (seconds; None: none) stops a spec that takes longer with a
    `UsageError` (POSIX, in the main thread). Raises `MemspecError` for any problem with
    the input.
    """
    name = spec.name if isinstance(spec, Path) else (spec if "\n" not in spec else "<spec>")
    with limited_to(time_limit, f"{name}: compiling"):
        step = step or StepOptions()
        if step.grad_accum < 1:
            raise UsageError("--grad-accum must be at least 1")
        training = _training(peak_flops, mfu, steps)
        source, path = _source(spec)
        hf = read_config(hf_config) if hf_config is not None else None
        if weights is None and hf is not None:  # a quantized checkpoint's (--weights wins)
            weights = weights_of(hf)
        extras = (*(("peft.lora",) if lora else ()), *((weights.module,) if weights else ()))
        program = load_program(source, path, extras)
        config = resolve_config(
            program,
            precision,
            optimizer,
            convention,
            tuple(use),
            recompute,
            dp,
            zero,
            runtime,
            tp,
            sp,
            sp_convention,
            tuple(freeze),
            lora,
            weights,
            inference,
        )
        items = [f"{k}={v}" for k, v in set.items()] if isinstance(set, dict) else list(set or [])
        if config.parallel.distributed:
            program = with_degree(program)
            if config.parallel.dp is not None:
                items.append(f"{DP}={config.parallel.dp}")
        if config.parallel.tensor_parallel:
            program = with_degree(program, TP)
            if config.parallel.tp is not None:
                items.append(f"{TP}={config.parallel.tp}")

        decode_items = None
        if config.inference is not None:
            program = with_past(program)
            config = dataclasses.replace(config, variants=(*config.variants, "cache"))
            length = sequence_length(program)
            unchecked = [v for v in config.variants if v in UNCHECKED_IN_GENERATION]
            if unchecked:
                raise UsageError(
                    f"--mode inference with `use {unchecked[0]}`: generation is modelled with "
                    "transformers' default attention (sdpa), which it is checked against; its "
                    "eager attention under generate holds more than the training step's path "
                    "counts (LLaMA at B 2, P 5 to 16: 800 to 11,392 bytes), not modelled yet"
                )
            run = config.inference
            decode_items = [*items, f"{length}=1"]  # and the positions cached before the step
            items = [*items, f"{length}={run.prompt_len}"]  # the prefill caches nothing before

        used: list[tuple[bind.Bindings, HfConfigUse]] = []

        def binder(items: list[str]):
            def sizes(symbols: SymbolTable, evaluate: Callable[[Expr], sp.Expr]) -> bind.Bindings:
                # Bound before the model is elaborated: views and copies are decided at them.
                bindings = bind.preset_bindings(program.presets, symbols, preset, evaluate)
                if hf is not None:
                    if not used:  # every elaboration (prefill, decode steps) binds the same
                        model = program.models[0].name if program.models else None
                        used.append(
                            config_bindings(program.hf_configs, symbols, hf, source.name, model)
                        )
                    bindings.update(used[0][0])
                explicit = bind.parse_set(symbols, items)
                bindings.update(explicit)
                for name in unbound:
                    symbol = bind.lookup_symbol(symbols, name, "--grid")
                    if symbol in explicit:
                        raise UsageError(
                            f"--grid {name}: {symbol} is also given a value (--set, or a flag "
                            "that sets it such as --dp, --tp or --prompt-len); give it one way"
                        )
                    bindings.pop(symbol, None)
                return bindings

            return sizes

        elab = elaborate(program, config, binder(items))
        phases: tuple = ()
        if config.inference is not None:
            phases = inference_phases(
                program, config, elab, lambda past: binder([*decode_items, f"{PAST}={past}"])
            )
        symbols, graph, bindings = elab.symbols, elab.graph, elab.bindings
        conflict = unmodelled_cache(graph, config.recompute)
        if conflict is not None:
            raise UsageError(
                f"recompute policy {config.recompute.name!r} saves aten ops that "
                f"{conflict.op} at {conflict.path} runs for intermediates of its own "
                f"({', '.join(lookup(conflict.op).aten_inside)}): not modelled yet",
                conflict.span,
            )
        bind.check_assumptions(graph.assumptions, symbols, bindings)
        bind.check_sizes(graph, symbols, bindings)
        policies = {name: read_convention(decl) for name, decl in program.conventions.items()}
        done = run_pipeline(
            AnalysisContext(
                graph=graph,
                config=config,
                program=program,
                symbols=symbols,
                bindings=bindings,
                evaluate=elab.evaluate,
                conventions=policies,
                step=step,
                phases=phases,
                checks=tuple(checks),
            )
        )
        answer = done["peak"]
        return CompileResult(
            spec=source.name,
            model=graph.model,
            config=config,
            symbols=symbols,
            graph=graph,
            categories={k: done[k] for k in CATEGORY_TITLES},
            conventions=done["conventions"],
            convention_policies=policies,
            bindings=bindings,
            preset=preset,
            variants_used=elab.variants_used,
            expects=done["expects"],
            checks=done["checks"],
            notes=tuple(a.text for a in program.assumes),
            flops=done["flops"],
            training=training,
            peak=answer.peak,
            peak_unavailable=answer.unavailable,
            rank_peaks=answer.ranks,
            ranks=done["ranks"],
            step=step,
            active=done["active_parameters"],
            kv_cache=kv_cache_at_end(phases, config),
            hf_config=used[0][1] if used else None,
        )


def sequence_length(program) -> str:
    """The dim the model's generate block takes its tokens' length from: `L` of
    `generate(tokens: int64[B, L])`."""
    (model,) = program.models[:1] or (None,)
    block = next(
        (s for s in (model.body if model else ()) if isinstance(s, d.LayerForward) and s.generate),
        None,
    )
    if block is None and model is not None:
        raise UsageError(
            f"--mode inference runs the model's generate block, which model {model.name} "
            "has not (write `generate(tokens: int64[B, L]) { ... }` returning the logits, as "
            "a serving loop calls the model; specs/llama.mspec has one)",
            model.span,
        )
    if block is None or not block.params or block.params[0].type is None:
        where = model.span if model else None
        raise UsageError(
            "--mode inference runs the model's generate block, which takes the tokens "
            "first (`generate(tokens: int64[B, L]) { ... }`)",
            where,
        )
    dims = block.params[0].type.dims
    if len(dims) != 2 or not isinstance(dims[1], n.ExprName):
        raise UsageError(
            "the generate block's tokens are [batch, length], the length a dim (`[B, L]`)",
            block.params[0].span,
        )
    return dims[1].name


def inference_phases(program, config, prefill, decode_sizes) -> tuple:
    """(phase, graph, the sizes it runs at beside the bindings) of the prefill and, when
    a token is generated after the first, the last decode step; `decode_sizes(past)`
    binds a decode step's sizes with `past` positions cached before it.

    A cache that grows (DynamicCache) makes every decode step larger than the one
    before, so the last is the largest. A sliding window's (kv_window) stops growing at
    the window, and before the first decode step its layers still hold the prompt's
    storage (the prefill's cat), which that step frees layer by layer: longer than the
    window, the prompt can make the first decode step larger than the last, so it is a
    phase of its own too."""
    from memspec.ops.cache import KV_WINDOW
    from memspec.passes.peak.moments import Phase
    from memspec.symbolic.symbols import dim_symbol

    run = config.inference
    length, past = dim_symbol(sequence_length(program)), dim_symbol(PAST)
    phases = [(Phase.PREFILL, prefill.graph, {length: sp.Integer(run.prompt_len), past: 0})]
    decoding = dataclasses.replace(config, inference=dataclasses.replace(run, decoding=True))
    steps = [run.last_past] if run.decodes else []
    for cached in steps:
        decode = elaborate(program, decoding, decode_sizes(cached))
        phases.append((Phase.DECODE, decode.graph, {length: sp.Integer(1), past: cached}))
        windowed = any(op.op == KV_WINDOW for op in decode.graph.ops)
        if windowed and cached != run.prompt_len:
            steps.append(run.prompt_len)  # the first decode step (P cached)
    if run.quantized:
        _check_quantized(phases)
    return tuple(
        (phase, graph, {k: sp.Integer(v) for k, v in sizes.items()})
        for phase, graph, sizes in phases
    )


def _check_quantized(phases) -> None:
    """--kv-dtype fp8 with a contiguous cache is transformers' QuantizedCache, which a
    spec's attention takes through std's kv_fp8_cache: a forward whose keys and values go
    through another cache (a DynamicCache's, a sliding window's) would be counted as that
    one, so it is refused."""
    from memspec.ops.cache import KV_APPEND, KV_FP8, KV_STATIC, KV_WINDOW, KV_WRITE

    others = (KV_APPEND, KV_STATIC, KV_WINDOW, KV_WRITE)
    for _, graph, _ in phases:
        other = next((op for op in graph.ops if op.op in others), None)
        if other is not None or not any(op.op == KV_FP8 for op in graph.ops):
            where = f" ({other.op} at {other.path})" if other is not None else ""
            raise UsageError(
                "--kv-dtype fp8 with a contiguous cache is transformers' "
                'QuantizedCache(backend="fp8"), which this spec\'s attention does not '
                f"take its keys and values through{where}: std's kv_fp8_cache does "
                "(specs/llama.mspec); transformers' QuantizedCache itself refuses a model "
                "with sliding-window layers"
            )


def kv_cache_at_end(phases: tuple, config) -> tuple[sp.Expr, sp.Expr] | None:
    """(elements, bytes) of the K/V cache at the end of generation: after the last
    forward (the last decode step's, or the prefill's), P + T - 1 positions (a sliding
    window's storage: `ops.cache.window_positions`)."""
    if not phases:
        return None
    from memspec.passes.peak.inference import cache_elements

    _, graph, at_end = phases[0] if len(phases) == 1 else phases[1]
    elements, nbytes = cache_elements(graph, config.inference)
    return sp.expand(elements.xreplace(at_end)), sp.expand(nbytes.xreplace(at_end))
