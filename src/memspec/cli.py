"""The command line: `memspec compile SPEC ...`, `solve`, `verify`, `info` and `ops`.

This is the only place that turns errors into exit codes: a `MemspecError` (a problem
with the user's input) prints its located diagnostic and exits 2; a `verify` whose
prediction differs from the measurement exits 3; anything else is a bug in memspec and
exits 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import traceback
from pathlib import Path

from memspec.errors import MemspecError, UsageError

__all__ = ["main"]

FORMATS = ("md", "tex", "json")
# memspec.policies.IMPLEMENTATIONS' names (a test keeps them equal): the command line
# imports nothing heavy before it knows what it is asked, so that `--version` and a
# cached compile answer without importing sympy
IMPLEMENTATIONS = ("for_loop", "foreach", "fused")
MAX_POINTS = 10_000_000  # memspec.sweep.grid.MAX_POINTS (a test keeps them equal)
VERIFY_FAILED = 3  # `memspec verify` ran and a prediction differs from the measurement
CHECK_FAILED = 3  # `memspec check` ran and a stated answer differs from memspec's count
COMPILE_SECONDS = 20.0  # memspec.compile.COMPILE_SECONDS (a test keeps them equal)
SWEEP_SECONDS = 120.0  # a sweep compiles a few times (sizes where torch decides otherwise)


def _seconds(text: str) -> float:
    """--time-limit: a finite number of seconds; 0 or less turns the limit off."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    return value


def _write(path: str, text: str) -> None:
    """-o FILE: a file that cannot be written is the user's error, with the reason."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"-o {path}: cannot write it ({err.strerror})") from None


def _time_limit(seconds: float, spec: str):
    """Turn a command that runs past `seconds` into a user-input error (nests with the
    compile's own limit: `memspec.limits`)."""
    from memspec.limits import time_limit

    return time_limit(seconds, f"{spec}: compiling")


def _limit_option(p: argparse.ArgumentParser, default: float, what: str) -> None:
    p.add_argument(
        "--time-limit",
        type=_seconds,
        default=default,
        metavar="SECONDS",
        help=f"give up on {what} that takes longer (default {default:g}; 0: no limit)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memspec",
        description="Compile a model spec into an exact, derivable training-memory report.",
    )
    from memspec import __version__

    parser.add_argument("--version", action="version", version=f"memspec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile a spec into a memory report")
    c.add_argument(
        "spec",
        nargs="?",
        help="the .mspec file (with --hf-config, by default the bundled spec that reads "
        "the config's model_type)",
    )
    c.add_argument("--format", choices=FORMATS, default="md", help="report format (md)")
    _common(c)
    c.add_argument("--convention", help="activation convention (course, autograd, ...)")
    c.add_argument(
        "--peak-flops",
        type=float,
        metavar="FLOP/S",
        help="accelerator peak FLOP/s (e.g. 989e12), for the training time",
    )
    c.add_argument("--mfu", type=float, default=0.5, help="model FLOPs utilization (0.5)")
    c.add_argument("--steps", type=int, help="training steps, for the training time")
    c.add_argument("-o", "--output", help="write the report here instead of stdout")
    c.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="compile even when the same command's output is in the cache (and keep none)",
    )
    _limit_option(c, COMPILE_SECONDS, "a spec")
    s = sub.add_parser("solve", help="the largest value of a symbol that fits a memory budget")
    s.add_argument("spec", help="the .mspec file")
    s.add_argument("--budget", required=True, help="memory budget: 80GB (10^9) or 80GiB (2^30)")
    s.add_argument(
        "--for",
        dest="symbol",
        required=True,
        help="the symbol to maximize (B), or DP: the fewest data-parallel ranks that fit",
    )
    s.add_argument(
        "--objective",
        choices=("peak", "sum"),
        default="peak",
        help="peak: the true peak of a training step (default); sum: parameters + "
        "gradients + optimizer state + activations + buffers (the textbook answer)",
    )
    s.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw memory against the symbol, by category, with the budget and the "
        "true peak, to FILE (.png, .svg or .pdf; needs memspec[plot])",
    )
    s.add_argument("--convention", help="activation convention (course, autograd, ...)")
    s.add_argument("--format", choices=("text", "json"), default="text")
    _limit_option(s, 3 * COMPILE_SECONDS, "a solve (it compiles a few times)")
    _common(s)
    v = sub.add_parser("verify", help="check the prediction against a real PyTorch step")
    v.add_argument("spec", help="the .mspec file")
    _common(v)
    v.add_argument(
        "--peak",
        action="store_true",
        help="also measure the step's peak on fake tensors (any size)",
    )
    v.add_argument(
        "--no-step",
        dest="step",
        action="store_false",
        help="skip the real training step (for sizes too large to allocate)",
    )
    k = sub.add_parser(
        "check", help="check stated answers (expect QUANTITY == EXPRESSION) term by term"
    )
    k.add_argument("spec", help="the .mspec file")
    k.add_argument(
        "--expect",
        action="append",
        required=True,
        metavar="ANSWER",
        help="`QUANTITY == EXPRESSION [at PRESET]` in the spec's symbols (params, "
        "gradients, optimizer_state, activations, buffers, total); repeatable",
    )
    k.add_argument("--convention", help="activation convention (course, autograd, ...)")
    k.add_argument("--format", choices=("md", "json"), default="md")
    _limit_option(k, COMPILE_SECONDS, "a check")
    _common(k)
    f = sub.add_parser(
        "diff", help="two specs, or one under two configurations: every category, item by item"
    )
    f.add_argument("spec", help="A: the .mspec file")
    f.add_argument("other", nargs="?", help="B: another .mspec file (default: A's)")
    for side in ("both", "a", "b"):
        f.add_argument(
            f"--{side}",
            default="",
            metavar="FLAGS",
            help="compile flags, quoted"
            + {"both": ", for A and B", "a": ", for A only", "b": ", for B only"}[side]
            + ' (after "=": --both="--preset llama2_7b --set B=1" --b="--precision bf16")',
        )
    f.add_argument("--format", choices=("md", "json"), default="md")
    _limit_option(f, 2 * COMPILE_SECONDS, "a diff (two compiles)")
    w = sub.add_parser(
        "sweep", help="every category and the true peak over a grid of sizes, exactly"
    )
    w.add_argument(
        "spec",
        nargs="?",
        help="the .mspec file (with --hf-config, by default the bundled spec that reads "
        "the config's model_type)",
    )
    w.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="NAME=VALUES",
        help="a dim and its values: B=1,2,4,8; a:b (steps of 1), a:b:k (steps of k), "
        f"a:b:xk (times k), ends included; repeatable (at most {MAX_POINTS:,} points)",
    )
    w.add_argument("--budget", help="mark the points that fit: 80GB (10^9) or 80GiB (2^30)")
    w.add_argument(
        "--objective",
        choices=("peak", "sum"),
        default="peak",
        help="what --budget is held against: the true peak (default) or the sum",
    )
    w.add_argument("--convention", help="activation convention (course, autograd, ...)")
    w.add_argument(
        "--format",
        choices=("md", "csv", "json", "png"),
        default="md",
        help="md (default), csv or json; png: the plot, to -o",
    )
    w.add_argument("-o", "--output", help="write here instead of stdout")
    w.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw the sweep (one dim: lines; two: a heatmap) to FILE (.png, .svg or "
        ".pdf; needs memspec[plot])",
    )
    _limit_option(w, SWEEP_SECONDS, "a sweep")
    _common(w)
    i = sub.add_parser(
        "info", help="what a spec declares: dims, presets, variants, policies, expects"
    )
    i.add_argument("spec", help="the .mspec file")
    i.add_argument("--format", choices=("text", "json"), default="text")
    i.add_argument("--use", action="append", default=[], metavar="VARIANT", help="as for compile")
    _limit_option(i, COMPILE_SECONDS, "a spec")
    o = sub.add_parser("ops", help="list the primitive ops and their rules in words")
    o.add_argument("--format", choices=("text", "md"), default="text")
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="bindings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind a symbol (B or batch_size) to an integer; repeatable",
    )
    p.add_argument("--preset", help="bind the symbols of one of the spec's presets")
    p.add_argument(
        "--hf-config",
        metavar="PATH",
        help="a Hugging Face config.json (local) whose fields set the dims, as the spec's "
        "hf_config block for its model_type says (--set wins)",
    )
    p.add_argument("--optimizer", help="optimizer policy (adamw, adam, sgd, ...: memspec info)")
    p.add_argument(
        "--precision",
        help=(
            "precision policy (fp32, mixed_bf16, bf16; autocast_bf16 and autocast_fp16 run "
            "under torch.autocast, fp16 with GradScaler)"
        ),
    )
    p.add_argument(
        "--recompute",
        metavar="POLICY",
        help="activation recomputation policy: none (default), full (every repetition of "
        "every repeated layer is a torch.utils.checkpoint), or one the spec declares",
    )
    p.add_argument(
        "--use",
        action="append",
        default=[],
        metavar="VARIANT",
        help="pick an implementation variant (math, flash); repeatable",
    )
    parallel = p.add_argument_group("data and tensor parallelism: what each rank holds")
    parallel.add_argument(
        "--dp",
        type=int,
        metavar="N",
        help="data-parallel ranks (the symbol DP in formulas; unbound with --zero alone)",
    )
    parallel.add_argument(
        "--zero",
        type=int,
        metavar="K",
        help="ZeRO stage: 0 (DDP replicas), 1 (optimizer state sharded), 2 (and gradients: "
        "FSDP2 with reshard_after_forward=False), 3 (and parameters: FSDP2)",
    )
    parallel.add_argument(
        "--dp-runtime",
        dest="runtime",
        metavar="RUNTIME",
        help="the runtime whose sharding is modelled: ddp, fsdp2 (stages 2, 3) or "
        "deepspeed (stages 1, 2, 3)",
    )
    parallel.add_argument(
        "--tp",
        metavar="N",
        help="tensor-parallel ranks, sharded as the spec's tp_plans say (TP: formulas in "
        "the degree)",
    )
    parallel.add_argument(
        "--sp",
        action="store_true",
        default=None,
        help="sequence parallelism with --tp: activations between the planned members "
        "sharded on the sequence",
    )
    parallel.add_argument(
        "--sp-convention",
        choices=("pytorch", "megatron"),
        help="what a column-parallel member keeps of its gathered input: PyTorch's "
        "DTensor the gathered tensor (default), Megatron-LM its local shard",
    )
    p.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PATTERN",
        help="freeze the parameters whose state_dict names match this glob (* for each "
        "repetition index: model.layers.*.mlp.*): no gradient, no optimizer state; "
        "repeatable",
    )
    adapters = p.add_argument_group("LoRA adapters, as PEFT's get_peft_model injects them")
    adapters.add_argument(
        "--lora",
        type=int,
        metavar="R",
        help="LoRA of rank R on the targeted Linear layers; every other parameter frozen",
    )
    adapters.add_argument(
        "--lora-alpha", type=float, default=8, metavar="A", help="lora_alpha (8, PEFT's)"
    )
    adapters.add_argument(
        "--lora-dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="dropout on the adapters' input (0: nn.Identity, PEFT's default)",
    )
    adapters.add_argument(
        "--lora-targets",
        default="all-linear",
        metavar="NAMES",
        help="comma-separated module names or their last parts (q_proj,v_proj), globs "
        "(model.layers.*.mlp.*), or all-linear (every Linear but lm_head; the default)",
    )
    quantized = p.add_argument_group(
        "quantized weights, as transformers' BitsAndBytesConfig or FineGrainedFP8Config"
    )
    quantized.add_argument(
        "--weights",
        metavar="FORMAT",
        help="store every Linear's weight but lm_head in FORMAT: nf4 or fp4 (bitsandbytes' "
        "Linear4bit, blocksize 64), int8 (LLM.int8(): Linear8bitLt, load_in_8bit) or fp8 "
        "(transformers' FP8Linear: float8_e4m3fn, a float32 scale per 128 x 128 block)",
    )
    quantized.add_argument(
        "--compute-dtype",
        metavar="DTYPE",
        help="the dtype 4-bit products run in (bnb_4bit_compute_dtype; bfloat16, QLoRA's); "
        "not with int8",
    )
    quantized.add_argument(
        "--weights-skip",
        default="lm_head",
        metavar="NAMES",
        help="comma-separated Linear modules (names or last parts) kept unquantized "
        "(llm_int8_skip_modules; lm_head)",
    )
    quantized.add_argument(
        "--no-double-quant",
        dest="double_quant",
        action="store_false",
        default=None,
        help="float32 block maxima (bnb_4bit_use_double_quant=False) instead of QLoRA's "
        "double quantization (4-bit only)",
    )
    quantized.add_argument(
        "--bnb-fused-rows",
        type=int,
        metavar="N",
        help="4-bit products of at most N rows run bitsandbytes' fused kernel, without the "
        "dequantized weight (default: 4, 7 in float32 compute, as every CUDA GPU does; "
        "up to 1536 where the GPU's does; 0: every product dequantizes, as the CPU's "
        "default kernel)",
    )
    serving = p.add_argument_group("inference: generation with a K/V cache")
    serving.add_argument(
        "--mode",
        choices=("train", "inference"),
        default="train",
        help="a training step (default), or the model's generate block as a serving loop "
        "runs it under torch.no_grad()",
    )
    serving.add_argument(
        "--prompt-len", type=int, metavar="P", help="the prompt's tokens (the prefill)"
    )
    serving.add_argument(
        "--new-tokens", type=int, default=1, metavar="T", help="tokens generated (1)"
    )
    serving.add_argument(
        "--kv-cache",
        default="contiguous",
        metavar="KIND",
        help="contiguous (transformers' DynamicCache, the default), static (its "
        "StaticCache) or paged (vLLM's blocks of --kv-block positions)",
    )
    serving.add_argument(
        "--kv-block", type=int, default=16, metavar="N", help="a paged cache's block (16)"
    )
    serving.add_argument(
        "--kv-dtype",
        default="",
        metavar="DTYPE",
        help="the K/V cache's element type: a paged cache's, vLLM's kv_cache_dtype (fp8, "
        "fp8_e4m3, fp8_e5m2); a contiguous cache's fp8 is transformers' "
        'QuantizedCache(backend="fp8"); the model\'s dtype by default',
    )
    serving.add_argument(
        "--loop",
        metavar="LOOP",
        help="generate (transformers' model.generate(), greedy, its own tensors counted: "
        "the default) or forward (a serving loop calling the model with the cache: the "
        "default for a paged cache)",
    )
    step = p.add_argument_group("the training step whose true peak is modelled")
    step.add_argument(
        "--first-step",
        action="store_true",
        help="the first step (optimizer state is created inside it) instead of the steady state",
    )
    step.add_argument(
        "--no-set-to-none",
        dest="set_to_none",
        action="store_false",
        help="zero_grad(set_to_none=False): gradients stay allocated through the forward",
    )
    step.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        metavar="K",
        help="K micro-batches of gradient accumulation per optimizer step (1)",
    )
    step.add_argument(
        "--optimizer-impl",
        choices=IMPLEMENTATIONS,
        default="for_loop",
        help="how torch.optim runs the step: for_loop (CPU default), foreach (CUDA "
        "default) or fused",
    )
    step.add_argument(
        "--keep-outputs",
        action="store_true",
        help="the loop keeps the model's outputs (out = model(...); out.loss.backward()): "
        "what the spec returns beside the loss (logits, a K/V cache) lives until the step "
        "ends; a Trainer keeps only the loss",
    )


def lora_of(args: argparse.Namespace):
    """The LoRA settings of the command's flags, or None without --lora."""
    if getattr(args, "lora", None) is None:
        return None
    from memspec.lora import Lora, parse_targets

    alpha = int(args.lora_alpha) if float(args.lora_alpha).is_integer() else args.lora_alpha
    return Lora(args.lora, alpha, args.lora_dropout, parse_targets(args.lora_targets))


def inference_of(args: argparse.Namespace):
    """The serving loop of --mode inference, or None for a training step."""
    if getattr(args, "mode", "train") != "inference":
        # a serving loop's flags on a training step would be ignored: say so
        given = {
            "--prompt-len": getattr(args, "prompt_len", None) is not None,
            "--new-tokens": getattr(args, "new_tokens", 1) != 1,
            "--kv-cache": getattr(args, "kv_cache", "contiguous") != "contiguous",
            "--kv-block": getattr(args, "kv_block", 16) != 16,
            "--loop": getattr(args, "loop", None) is not None,
            "--kv-dtype": bool(getattr(args, "kv_dtype", "")),
        }
        for flag, set_ in given.items():
            if set_:
                raise UsageError(f"{flag} is for --mode inference")
        return None
    from memspec.inference import Inference

    if args.prompt_len is None:
        raise UsageError("--mode inference needs --prompt-len P (the prompt's tokens)")
    return Inference(
        args.prompt_len,
        args.new_tokens,
        args.kv_cache,
        args.kv_block,
        args.loop or "",
        kv_dtype=args.kv_dtype,
    )


def weights_of(args: argparse.Namespace):
    """The quantized-weight settings of the command's flags, or None without --weights."""
    if getattr(args, "weights", None) is None:
        return None
    from memspec.quantize import Weights

    skip = tuple(s.strip() for s in args.weights_skip.split(",") if s.strip())
    return Weights(args.weights, args.compute_dtype, args.double_quant, skip, args.bnb_fused_rows)


def _result(args: argparse.Namespace, **options):
    """compile_spec with the command's common flags; `options` add or override."""
    from memspec.compile import compile_spec
    from memspec.passes.peak import StepOptions

    names = ("convention", "precision", "recompute", "dp", "zero", "runtime", "tp", "sp")
    names += ("sp_convention", "freeze")
    flags = {name: getattr(args, name, None) for name in names}
    flags["lora"] = lora_of(args)
    flags["weights"] = weights_of(args)
    flags["inference"] = inference_of(args)
    step = StepOptions(
        args.first_step,
        args.set_to_none,
        args.grad_accum,
        args.optimizer_impl,
        args.keep_outputs,
    )
    return compile_spec(
        Path(args.spec),
        set=args.bindings,
        preset=args.preset,
        hf_config=args.hf_config,
        optimizer=args.optimizer,
        use=tuple(args.use),
        step=step,
        time_limit=None,  # the command's own limit (--time-limit) holds
        **{**flags, **options},
    )


def _diff(args: argparse.Namespace) -> str:
    """A and B compiled with their flags (`--both` and `--a` / `--b`), side by side."""
    import shlex

    from memspec.diff import diff_results, render_json, render_markdown

    def side(spec: str, flags: str) -> tuple[str, object]:
        words = [*shlex.split(args.both), *shlex.split(flags)]
        try:
            parsed = _parser().parse_args(["compile", spec, *words])
        except SystemExit:  # argparse has printed what is wrong
            raise UsageError(f"diff: bad compile flags {' '.join(words)!r}") from None
        label = " ".join([Path(spec).name, *words])
        return label, _result(parsed)

    label_a, a = side(args.spec, args.a)
    label_b, b = side(args.other or args.spec, args.b)
    found = diff_results(a, b)
    if args.format == "json":
        return render_json(label_a, label_b, found)
    return render_markdown(label_a, label_b, found)


def _check(args: argparse.Namespace) -> tuple[str, bool]:
    """The stated answers, each holding or differing term by term; ok when all hold."""
    from memspec.check import parse_answers, render_json, render_markdown, verdicts

    result = _result(args, checks=parse_answers(args.expect))
    found = verdicts(result)
    ok = all(v.check.holds for v in found)
    if args.format == "json":
        return render_json(found, args.expect), ok
    return render_markdown(result, found, args.expect), ok


def _spec_from_config(args: argparse.Namespace) -> None:
    """Without a SPEC, the bundled spec that reads the --hf-config's model_type."""
    if args.spec is not None:
        return
    if args.hf_config is None:
        raise UsageError(
            f"{args.command} needs a spec (or --hf-config, whose model_type picks one)"
        )
    from memspec.hf_config import read_config, spec_for

    args.spec = str(spec_for(read_config(args.hf_config)))


def _compile(args: argparse.Namespace) -> str:
    _spec_from_config(args)
    result = _result(args, peak_flops=args.peak_flops, mfu=args.mfu, steps=args.steps)
    if args.format == "json":
        return result.to_json()
    if args.format == "tex":
        return result.to_latex()
    return result.to_markdown()


def _cached_compile(args: argparse.Namespace) -> str:
    """The output an earlier process wrote for the same options and unchanged files
    (`memspec.compile_cache`), else a compile, kept for next time."""
    from memspec import compile_cache

    options = {k: v for k, v in vars(args).items() if k not in ("output", "time_limit")}
    output = compile_cache.lookup(options) if args.cache else None
    if output is not None:
        return output
    limit = _time_limit(args.time_limit, args.spec or args.hf_config)
    with compile_cache.recording() as reads, limit:
        output = _compile(args)
    if args.cache:
        compile_cache.store(options, reads, output)
    return output


def _available_memory() -> int | None:
    """Bytes of memory this machine has free (Linux's MemAvailable), if it says."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# verify runs a real step only when memspec's own prediction of it is under this share of
# the machine's free memory: a larger one would swap or die in the allocator
VERIFY_MEMORY_SHARE = 0.5


def _step_fits_here(result) -> None:
    """Refuse, before anything is allocated, a real step larger than the machine allows."""
    peak = result.peak.value if result.peak is not None else None
    need = peak if peak is not None else result.value(result.total_bytes)
    have = _available_memory()
    if need is None or have is None or need <= VERIFY_MEMORY_SHARE * have:
        return
    raise UsageError(
        f"the step needs {need:,} bytes (memspec's prediction), more than "
        f"{VERIFY_MEMORY_SHARE:.0%} of the {have:,} bytes this machine has free: a real "
        "step would not finish. Measure large sizes on fake tensors, which allocate "
        "nothing: verify --peak --no-step"
    )


def _verify(args: argparse.Namespace) -> tuple[str, bool]:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("memspec verify needs PyTorch: pip install 'memspec[verify]'") from None
    from memspec.verify.compare import compare
    from memspec.verify.measure import measure_step
    from memspec.verify.peak import compare_peak, measure_peak
    from memspec.verify.report import render_verify

    if getattr(args, "mode", "train") == "inference":
        raise UsageError(
            "memspec verify runs a training step on the lowering; --mode inference is "
            "checked against transformers' own loop (tests/reference/test_inference.py)"
        )
    result = _result(args, convention="autograd")
    result.substitutions()  # every dim must be bound: fail before any work
    if args.step:
        _step_fits_here(result)
    parallel = result.config.parallel
    if parallel.tensor_parallel and result.ranks is None:
        from memspec.verify.tp import verify_tp

        return verify_tp(result, args.step, args.peak)
    if parallel.tensor_parallel and parallel.runtime != "fsdp2":
        raise UsageError(
            "verify runs tensor parallelism with data parallelism under FSDP2 (--zero 2 "
            f"or 3), not {parallel.label()} yet"
        )
    if result.ranks is not None:
        from memspec.verify.ranks import verify_ranks

        def lowered_in_fp32():
            return _result(args, convention="autograd", precision="fp32")

        return verify_ranks(result, args.peak, lowered_in_fp32)
    tables = measured = peak = None
    if args.step:
        measured = measure_step(result)
        tables = compare(result, measured)
    if args.peak:
        if result.peak is None:
            raise UsageError(f"no peak to verify: {result.peak_unavailable}")
        peak = compare_peak(result, measure_peak(result, result.peak.options))
    ok = (tables is None or all(t.ok for t in tables)) and (peak is None or peak.ok)
    return render_verify(result, tables, measured, peak), ok


def _solve(args: argparse.Namespace) -> str:
    from memspec.report.solve import build_solve, render_solve_json, render_solve_text
    from memspec.solve import (
        check_bound,
        parse_budget,
        solve_max,
        solve_min_degree,
        spec_sizes,
    )

    if args.symbol in ("P", "prompt_len") and getattr(args, "mode", "train") == "inference":
        return _solve_prompt(args)
    result = _result(args)
    from memspec.parallel import DP

    if args.symbol in (DP, "data_parallel_degree"):
        s = solve_min_degree(result, parse_budget(args.budget), args.objective)
        report = build_solve(result, s, args.objective, None)
        return render_solve_json(report) if args.format == "json" else render_solve_text(report)
    s = solve_max(result, args.symbol, parse_budget(args.budget), args.objective)
    if not s.expression.free_symbols - {s.symbol}:  # a number to check

        def compile_at(value: int):
            bound = [*args.bindings, f"{args.symbol}={value}"]
            return _result(argparse.Namespace(**{**vars(args), "bindings": bound}))

        sizes = spec_sizes(result, s.symbol)
        s = check_bound(s, args.objective, compile_at, sizes.allowed, sizes.above)
    if args.plot:
        from memspec.plot import plot_memory

        plot_memory(result, s, Path(args.plot))
    report = build_solve(result, s, args.objective, args.plot)
    return render_solve_json(report) if args.format == "json" else render_solve_text(report)


def _solve_prompt(args: argparse.Namespace) -> str:
    """`solve --for P` under --mode inference: the longest prompt whose generation fits,
    by compiling at each length tried (the peak grows with it: a bisection)."""
    from memspec.solve import parse_budget

    budget = parse_budget(args.budget)
    peaks: dict[int, tuple[int, str]] = {}
    refused: dict[int, str] = {}  # lengths the spec does not allow (GPT-2's position table)

    def peak_at(length: int) -> int:
        """The peak at P = length; past the budget for a length the spec refuses (one
        that compiled at P = 1: the refusal is the length's)."""
        if length in refused:
            return budget + 1
        if length not in peaks:
            bound = argparse.Namespace(**{**vars(args), "prompt_len": length})
            try:
                result = _result(bound)
            except UsageError:
                raise
            except MemspecError as err:
                if length == 1:
                    raise
                refused[length] = str(err).splitlines()[0]
                return budget + 1
            if result.peak is None or result.peak.value is None:
                raise UsageError("--for P needs every other size bound (--set, --preset)")
            winner = result.peak.winner()
            peaks[length] = (result.peak.value, winner.label() if winner else "")
        return peaks[length][0]

    if peak_at(1) > budget:
        text = f"even P = 1 needs more than {budget:,} bytes ({peak_at(1):,})\n"
        answer = None
    else:
        low, high = 1, 2
        while peak_at(high) <= budget and high < 1 << 24:
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if peak_at(middle) <= budget else (low, middle)
        answer = low
        text = (
            f"largest P within {budget:,} bytes: {answer:,}; the peak is at "
            f"{peaks[answer][1]}\nchecked: P = {answer:,}: {peaks[answer][0]:,} bytes (fits)"
        )
        if high in peaks and high != answer:
            text += f", P = {high:,}: {peaks[high][0]:,} bytes (does not fit)"
        elif high in refused:
            text += f"; P = {high:,} the spec refuses: {refused[high]}"
        text += "\n"
    if args.format == "json":
        doc = {
            "symbol": "P",
            "budget": budget,
            "maximum": answer,
            "checked": {str(k): v for k, (v, _) in sorted(peaks.items())},
            "refused": {str(k): why for k, why in sorted(refused.items())},
        }
        return json.dumps(doc, indent=2) + "\n"
    return text


def _sweep(args: argparse.Namespace) -> str:
    """The grid's table ("" for --format png: the plot is written to -o)."""
    from memspec.report import sweep as report
    from memspec.solve import parse_budget
    from memspec.sweep.grid import parse_axis
    from memspec.sweep.sweep import sweep

    _spec_from_config(args)
    if args.format == "png" and not args.output:
        raise UsageError("--format png writes a picture: give the file with -o FILE.png")
    axes = tuple(parse_axis(text)[0] for text in args.grid)
    budget = parse_budget(args.budget) if args.budget is not None else None

    def compile_at(fixed: dict[str, int], free: tuple[str, ...]):
        bound = [*args.bindings, *(f"{k}={v}" for k, v in fixed.items())]
        return _result(argparse.Namespace(**{**vars(args), "bindings": bound}), unbound=free)

    found = sweep(compile_at, axes, budget, args.objective)
    plot = args.output if args.format == "png" else args.plot
    if plot:
        from memspec.plot import plot_sweep

        plot_sweep(found, Path(plot))
    if args.format == "png":
        return ""
    return {"md": report.render_markdown, "csv": report.render_csv, "json": report.render_json}[
        args.format
    ](found)


def _info(args: argparse.Namespace) -> str:
    from memspec.info import render_info_json, render_info_text, spec_info

    info = spec_info(args.spec, tuple(args.use))
    return render_info_json(info) if args.format == "json" else render_info_text(info)


def _ops(args: argparse.Namespace) -> str:
    from memspec.ops.catalog import catalog_markdown, catalog_text

    return catalog_markdown() if args.format == "md" else catalog_text()


def main(argv: list[str] | None = None) -> int:
    # A compile makes millions of small objects and few cycles: collecting less often
    # saves a fifth of a large spec's time (15,000 layers: parse 4.6 -> 3.6 s)
    gc.set_threshold(50_000, 20, 100)
    args = _parser().parse_args(argv)
    if args.command == "ops":
        sys.stdout.write(_ops(args))
        return 0
    try:
        plain = {"solve": _solve, "info": _info, "diff": _diff}
        if args.command in plain:
            with _time_limit(args.time_limit, args.spec):
                sys.stdout.write(plain[args.command](args))
            return 0
        if args.command == "check":
            with _time_limit(args.time_limit, args.spec):
                output, ok = _check(args)
            sys.stdout.write(output)
            return 0 if ok else CHECK_FAILED
        if args.command == "sweep":
            with _time_limit(args.time_limit, args.spec or args.hf_config):
                output = _sweep(args)
            if args.output and args.format != "png":
                _write(args.output, output)
            else:
                sys.stdout.write(output)
            return 0
        if args.command == "verify":
            output, ok = _verify(args)
            sys.stdout.write(output)
            return 0 if ok else VERIFY_FAILED
        output = _cached_compile(args)
        if args.output:
            _write(args.output, output)
        else:
            sys.stdout.write(output)
    except MemspecError as err:
        print(err.render(), file=sys.stderr)
        return 2
    except RecursionError:
        print(f"{args.spec}: error: input nested too deeply to process", file=sys.stderr)
        return 2
    except Exception:
        print(
            "memspec: internal error (a bug in memspec; please report it with the spec):",
            file=sys.stderr,
        )
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
