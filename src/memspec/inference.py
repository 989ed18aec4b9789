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
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.errors import UsageError
from memspec.syntax.imports import Program, with_dim

__all__ = ["CACHES", "PAST", "Inference", "with_past"]

PAST = "Lpast"  # the symbol of the cached positions a decode step starts from
PAST_NAME = "past_length"
CACHES = {
    "contiguous": "transformers' DynamicCache: each step's torch.cat makes each layer's "
    "keys and values anew",
    "paged": "paged as vLLM allocates it: blocks of --kv-block positions, "
    "ceil((P + T - 1) / block) a sequence, allocated before the prefill and written in "
    "place (the forward is the spec's, transformers'; vLLM's own kernels are not modelled)",
}
UNMODELLED = {
    "static": "transformers' StaticCache (preallocated, with its decode mask) is not modelled yet",
}


@dataclass(frozen=True, slots=True)
class Inference:
    """The serving loop: the prompt, the tokens generated, the cache."""

    prompt_len: int
    new_tokens: int = 1
    cache: str = "contiguous"
    block: int = 16  # a paged cache's tokens per block

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

    @property
    def decodes(self) -> int:
        """Forwards after the prefill: one per generated token but the last."""
        return self.new_tokens - 1

    @property
    def last_past(self) -> int:
        """The positions cached before the last decode step."""
        return self.prompt_len + self.new_tokens - 2

    @property
    def cached_at_end(self) -> int:
        return self.prompt_len + self.new_tokens - 1

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
        return (
            f"generation under torch.no_grad(): a prefill of {self.prompt_len:,} tokens"
            f"{steps}; the K/V cache is {CACHES[self.cache]}, {self.cached_at_end:,} "
            "positions at the end"
            + (f", in {self.paged_positions:,} of blocks" if self.paged_positions else "")
        )


def with_past(program: Program) -> Program:
    """The program with the cached positions declared as a dim (`past_length as Lpast`)."""
    return with_dim(program, PAST_NAME, PAST, "--mode inference names the cached positions")
