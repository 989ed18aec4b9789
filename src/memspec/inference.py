"""`--mode inference`: the model's `generate` block run as a serving loop runs it.

A prompt of `--prompt-len P` tokens is one forward (the prefill) that fills the K/V
cache; each of the `--new-tokens T` tokens after the first is one more forward of one
token (a decode step) with the cache of the positions before it. Everything runs under
torch.no_grad(): no parameter is trained, nothing is saved for backward, a tensor lives
until its last use (or, kept in the model's outputs, as the cache's new part is, to the
end). The forward is elaborated twice: at the prompt's length with an empty cache, and
at one token with `past_length` positions cached, bound to the last step's (P + T - 2).

The cache is transformers' DynamicCache (`contiguous`: every step's torch.cat makes each
layer's keys and values anew, the old tensor alive while it is copied). Its size at the
end is the generation's P + T - 1 positions: the last token is never fed back.

The loop (`--loop`) is transformers' `model.generate()` (greedy) by default: beside the
model's forward it holds tensors of its own (`generate_terms`: the prompt grown by each
token, its position ids, the float32 copy of each step's last logits row, ...), and the
model takes generate's position ids, [B, q], so its rotary tables are [B, q, d] (the
spec's `if hf_generate`). `forward` is a serving loop calling the model's forward with
the cache and `logits_to_keep=1`, keeping only the cache and the next token between
steps; a paged cache runs under it (transformers' generate has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from memspec.errors import UsageError
from memspec.syntax.imports import Program, with_dim

__all__ = [
    "CACHES",
    "LOOPS",
    "PAST",
    "Inference",
    "Term",
    "generate_terms",
    "static_mask_moment",
    "with_past",
]

PAST = "Lpast"  # the symbol of the cached positions a decode step starts from
PAST_NAME = "past_length"
CACHES = {
    "contiguous": "transformers' DynamicCache: each step's torch.cat makes each layer's "
    "keys and values anew",
    "static": "transformers' StaticCache: P + T - 1 positions a layer, zeros made at the "
    "layer's first update in the prefill and written in place (generate keeps the longest "
    "length a model has used: a model that generated longer before holds that length)",
    "paged": "paged as vLLM allocates it: blocks of --kv-block positions, "
    "ceil((P + T - 1) / block) a sequence, allocated before the prefill and written in "
    "place (the forward is the spec's, transformers'; vLLM's own kernels are not modelled)",
}
LOOPS = {
    "generate": "transformers' model.generate() (greedy), whose own tensors are counted",
    "forward": "a serving loop calling the model's forward with the cache "
    "(logits_to_keep=1), holding only the cache and the next token between steps",
}
UNMODELLED: dict[str, str] = {}
# --kv-dtype: vLLM's kv_cache_dtype for a paged cache (one byte an element, quantized as
# written, read by its attention kernels); with a contiguous cache, transformers'
# QuantizedCache(backend="fp8"), whose float8 is e4m3fn
KV_DTYPES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
QUANTIZED_KV_DTYPES = ("fp8", "fp8_e4m3")
QUANTIZED_CACHE = (
    "transformers' QuantizedCache(backend=\"fp8\"): each layer's keys and values in "
    "float8_e4m3fn (1 byte an element) with a float32 scale each, fixed by the prefill; a "
    "decode step appends the token's positions and attends to the whole cache dequantized"
)


@dataclass(frozen=True, slots=True)
class Inference:
    """The serving loop: the prompt, the tokens generated, the cache."""

    prompt_len: int
    new_tokens: int = 1
    cache: str = "contiguous"
    block: int = 16  # a paged cache's tokens per block
    loop: str = ""  # generate or forward; "": generate, forward for a paged cache
    decoding: bool = False  # elaborating a decode step (the spec's `decoding`)
    kv_dtype: str = ""  # the cache's element type (vLLM's kv_cache_dtype, or fp8 in a
    # contiguous cache: transformers' QuantizedCache); "": the model's

    def __post_init__(self) -> None:
        if self.prompt_len < 1:
            raise UsageError(f"--prompt-len must be at least 1, got {self.prompt_len}")
        if self.new_tokens < 1:
            raise UsageError(f"--new-tokens must be at least 1, got {self.new_tokens}")
        if self.cache in UNMODELLED:
            raise UsageError(f"--kv-cache {self.cache}: {UNMODELLED[self.cache]}")
        if self.cache not in CACHES:
            known = ", ".join([*CACHES, *UNMODELLED])
            raise UsageError(f"--kv-cache takes one of {known}, not {self.cache!r}")
        if self.block < 1:
            raise UsageError(f"--kv-block must be at least 1, got {self.block}")
        if not self.loop:
            object.__setattr__(self, "loop", "forward" if self.cache == "paged" else "generate")
        if self.loop not in LOOPS:
            raise UsageError(f"--loop takes one of {', '.join(LOOPS)}, not {self.loop!r}")
        if self.kv_dtype and self.kv_dtype not in KV_DTYPES:
            raise UsageError(
                f"--kv-dtype takes one of {', '.join(KV_DTYPES)} (vLLM's kv_cache_dtype), "
                f"not {self.kv_dtype!r}"
            )
        if self.kv_dtype and self.cache == "static":
            raise UsageError(
                "--kv-dtype with --kv-cache static: transformers' StaticCache has no "
                'quantized layers (--kv-cache contiguous: QuantizedCache(backend="fp8"); '
                "--kv-cache paged: vLLM's kv_cache_dtype)"
            )
        contiguous = self.cache == "contiguous"
        if self.kv_dtype and contiguous and self.kv_dtype not in QUANTIZED_KV_DTYPES:
            raise UsageError(
                f"--kv-dtype {self.kv_dtype} with a contiguous cache: transformers' "
                'QuantizedCache(backend="fp8") stores float8_e4m3fn (--kv-dtype fp8); its '
                "int2/int4 backends (quanto, HQQ: a full-precision residual) are not modelled"
            )
        if self.loop == "forward" and self.cache == "static":
            raise UsageError(
                "--kv-cache static runs under --loop generate: a serving loop's StaticCache "
                "builds its decode mask inside the model, which is not modelled"
            )
        if self.loop == "generate" and self.cache == "paged":
            raise UsageError(
                "--kv-cache paged runs under --loop forward: transformers' generate has no "
                "paged cache (vLLM's engine calls the model itself)"
            )

    @property
    def decodes(self) -> int:
        """Forwards after the prefill: one per generated token but the last."""
        return self.new_tokens - 1

    @property
    def last_past(self) -> int:
        """The positions cached before the last decode step."""
        return self.prompt_len + self.new_tokens - 2

    @property
    def kv_itemsize(self) -> int | None:
        """Bytes an element of a paged cache of --kv-dtype; None: the model's dtype."""
        return KV_DTYPES.get(self.kv_dtype)

    @property
    def static_length(self) -> int | None:
        """A static cache's positions a layer (generate's max_length - 1); None otherwise."""
        return self.cached_at_end if self.cache == "static" else None

    @property
    def cached_at_end(self) -> int:
        return self.prompt_len + self.new_tokens - 1

    @property
    def quantized(self) -> bool:
        """transformers' QuantizedCache(backend="fp8"): --kv-dtype with a contiguous cache."""
        return self.cache == "contiguous" and bool(self.kv_dtype)

    @property
    def paged_positions(self) -> int | None:
        """Positions a sequence's paged cache takes, whole blocks allocated before the
        prefill; None for a cache that grows (contiguous)."""
        if self.cache != "paged":
            return None
        return -(-self.cached_at_end // self.block) * self.block

    def describe(self) -> str:
        steps = (
            f", then {self.decodes} decode step{'s' if self.decodes != 1 else ''} of one token"
            if self.decodes
            else ""
        )
        cache = QUANTIZED_CACHE if self.quantized else CACHES[self.cache]
        return (
            f"{LOOPS[self.loop]}, under torch.no_grad(): a prefill of {self.prompt_len:,} tokens"
            f"{steps}; the K/V cache is {cache}, {self.cached_at_end:,} positions at the end"
            + (f", in {self.paged_positions:,} of blocks" if self.paged_positions else "")
            + (
                f", stored as {self.kv_dtype} (1 byte an element)"
                if self.kv_dtype and not self.quantized
                else ""
            )
        )


def with_past(program: Program) -> Program:
    """The program with the cached positions declared as a dim (`past_length as Lpast`)."""
    return with_dim(program, PAST_NAME, PAST, "--mode inference names the cached positions")


@dataclass(frozen=True, slots=True)
class Term:
    """A tensor the loop holds beside the model's forward, and its bytes."""

    what: str
    bytes: sp.Expr


def generate_terms(
    run: Inference,
    step: int,
    batch: sp.Expr,
    vocab: sp.Expr,
    logits_size: int,
    batched: bool,
    layers: sp.Expr | int = 0,
    with_mask: bool = True,
    mask_keys: sp.Expr | int | None = None,
    prefill_keys: sp.Expr | int | None = None,
) -> tuple[tuple[Term, ...], tuple[tuple[str, tuple[Term, ...]], ...]]:
    """What transformers' generate (5.x, greedy `_sample`) holds beside the model at step
    `step` (0: the prefill, t: the t-th decode forward): the tensors alive during the
    forward, and the moments after it (where, the tensors beside those of the forward's
    that stay alive, not counting the cache).

    Read from generation/utils.py and measured op by op (tests/reference/
    test_inference.py). The model's input ids are generate's clone of them (the forward's
    input, counted there); its position ids are the cumsum of the attention mask it makes
    ([B, P], kept to the end), grown by a cat each step as the ids are, a [B, 1] clone fed
    to a decode forward. After the forward (`logits_to_keep=1`: [B, 1, V] logits in the
    model's dtype) the position ids grow by one; `outputs.logits[:, -1].to(copy=True,
    dtype=float32)` is made while the previous step's copy is still referenced; its argmax
    is the next tokens; the ids grow by a cat (old and new alive), and the stopping
    criteria make bool [B] tensors, the last a new `unfinished_sequences`. `batched`:
    B > 1, where generate keeps a 0-d bool of its right-padding check (a pad id exists:
    eos stands in for one). The caller's prompt ids are counted: the caller holds them.
    A static cache (`layers` of them) holds a 0-d int64 `cumulative_length` a layer from
    its construction, and a decode step's inputs carry a boolean mask over the whole
    cache, [B, 1, 1, M], which generate makes before the forward (`with_mask`: whether
    it is counted; `static_mask_moment` is the moment it is made in). M (`mask_keys`) is
    the layers' positions: P + T - 1, or a StaticSlidingWindowLayer's window W. Such a
    layer's prefill has a mask from generate too (transformers does not skip a sliding
    window's mask once its keys reach the window): bool [B, 1, P, K], K
    (`prefill_keys`) = max(P, W), made before the forward, which makes none of its own.
    """
    p, t = run.prompt_len, step
    ids = sp.Integer(8)  # int64
    during = [Term("the caller's prompt ids, [B, P] int64", ids * batch * p)]
    during.append(
        Term("generate's position ids, [B, P] int64 (its attention mask's cumsum)", ids * batch * p)
    )
    if t:
        during += [
            Term(
                f"the ids grown to [B, P + {t}] int64 (torch.cat each step)", ids * batch * (p + t)
            ),
            Term(f"the position ids grown to [B, P + {t}] int64", ids * batch * (p + t)),
            Term("the decode forward's position ids, a [B, 1] int64 clone", ids * batch),
            Term(
                "the previous step's last logits row in float32 (next_token_logits), [B, V]",
                4 * batch * vocab,
            ),
            Term("the previous step's tokens (next_tokens), [B] int64", ids * batch),
        ]
    during += [
        Term("unfinished_sequences, [B] int64", ids * batch),
        Term("the bos and eos token ids, two 0-d int64 tensors", sp.Integer(16)),
    ]
    if batched:
        during.append(Term("the right-padding check, a 0-d bool (B > 1)", sp.Integer(1)))
    static = run.static_length
    if static is not None:
        keys = static if mask_keys is None else mask_keys
        during.append(Term("StaticCache's cumulative_length, a 0-d int64 a layer", 8 * layers))
        if t:
            during.append(
                Term(f"the decode step's attention mask, bool [B, 1, 1, {_n(keys)}]", batch * keys)
            )
        elif prefill_keys is not None:
            during.append(
                Term(
                    f"the prefill's sliding-window mask, bool [B, 1, P, {_n(prefill_keys)}]",
                    batch * p * prefill_keys,
                )
            )
    logits = Term(
        "the forward's logits, [B, 1, V] in the model's dtype", logits_size * batch * vocab
    )
    copy = Term("their last row in float32 (next_token_logits), [B, V]", 4 * batch * vocab)
    grown = ids * batch * (p + t + 1)
    if not t:  # the prefill's input, generate's clone of the prompt, is gone
        return tuple(during), (
            (
                "after the forward: generate's stopping check",
                (
                    logits,
                    copy,
                    Term("the position ids grown to [B, P + 1] int64", grown),
                    Term("the next tokens, [B] int64", ids * batch),
                    Term("the ids grown to [B, P + 1] int64", grown),
                    Term("the stopping criteria's bool [B] (~is_done)", batch),
                    Term("the new unfinished_sequences, [B] int64", ids * batch),
                ),
            ),
        )
    fed = Term("the decode forward's ids, a [B, 1] int64 clone", ids * batch)
    longer = Term("the position ids one position longer", ids * batch)
    return tuple(during), (
        # the previous step's copy is still referenced (next_token_scores)
        ("after the forward: generate's float32 copy of the logits", (fed, logits, longer, copy)),
        # that copy has replaced the previous one; the old ids are alive during the cat
        (
            "after the forward: generate's ids grown",
            (fed, logits, longer, Term(f"the ids grown to [B, P + {t + 1}] int64", grown)),
        ),
    )


def _n(size: sp.Expr | int) -> str:
    """A size in a term's words: 1,024 where it is a number."""
    return f"{int(size):,}" if sp.sympify(size).is_Integer else str(size)


def static_mask_moment(
    run: Inference, step: int, batch: sp.Expr, mask_keys: sp.Expr | int | None = None
) -> tuple[Term, ...]:
    """Before decode forward `step` (>= 1) with a static cache, generate's
    prepare_inputs_for_generation makes the step's inputs and its boolean mask over the
    cache's M positions (`mask_keys`; default P + T - 1): the tensors beside
    `generate_terms(..., with_mask=False)` of the step at the moment the mask's key
    positions are made (arange(M) and its offset), the previous step's inputs still
    referenced (none after the prefill, whose are freed)."""
    assert run.static_length is not None and step >= 1
    static = run.static_length if mask_keys is None else mask_keys
    ids = sp.Integer(8)
    terms = [Term("the decode forward's ids, a [B, 1] int64 clone", ids * batch)]
    if step >= 2:
        terms += [
            Term("the previous step's ids and position ids, two [B, 1] int64 clones", 16 * batch),
            Term(
                f"the previous step's attention mask, bool [B, 1, 1, {_n(static)}]",
                batch * static,
            ),
        ]
    return (
        *terms,
        Term("arange(B), int64 [B]", ids * batch),
        Term("the cache position and its offset, two [1] int64", sp.Integer(16)),
        Term(f"the mask's key positions and their offset, two [{_n(static)}] int64", 16 * static),
    )
