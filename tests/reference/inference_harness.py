"""Measures Hugging Face inference with a KV cache, to the byte: the bare prefill forward,
a hand-written greedy decode loop, and `generate` with a DynamicCache or a StaticCache.

Every number is bytes of tensor storage, counted by `LiveTracker`, a TorchDispatchMode:
each storage an aten op returns is counted from that op until the storage dies (a weakref
callback on its PyObject), once however many views share it. Storages that exist before
the measurement are never counted: the model's parameters and buffers and the caller's
`input_ids`. Everything made inside is: the cache's K/V, logits, activations, generate's
own bookkeeping (grown `input_ids` and `position_ids`, the fp32 copy of each step's last
logits row, special-token scalars). Kernel-internal scratch that no op returns (oneDNN's
bf16 `linear` workspaces on CPU) is not seen; in fp32 the count equals the CPU allocator's
own (torch.profiler), in bf16 it is below it by that scratch. `gc` is off while measuring,
so a storage dies exactly when its last reference goes; the counts do not depend on the
number of threads (one is used, for speed).

A custom op reaches a dispatch mode whole, so the tensors its kernel makes and frees
inside would not be seen. The one such kernel measured here, bitsandbytes' `gemm_4bit` on
the CPU (Python: the block maxima and the weight dequantized, then `F.linear`), is run
under the tracker instead of dispatched, its own ops counted (`_KERNELS`).

The sizes are small and the tensors real, on CPU, under `torch.no_grad()` (`generate`
applies it itself). Attention is transformers' default `sdpa`, without padding (no
`attention_mask`), so the causal mask is never materialized. Measured on transformers
5.24 / torch 2.13, where the forward and `generate` take the cache as `cache=` (the
`past_key_values=` name is a deprecated alias).
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from tests.reference.torchvision_import import import_torchvision

import_torchvision()  # transformers' models import torchvision

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralForCausalLM,
    QuantizedCache,
    StaticCache,
)
from transformers.cache_utils import Cache  # noqa: E402

from tests.reference.test_transformers import decoder_config  # noqa: E402


@dataclass(frozen=True)
class InferenceMeasurement:
    """One forward (a prefill, or one decode step), in bytes above parameters, buffers
    and the caller's `input_ids`."""

    peak: int  # most bytes alive at once during the step (see the measuring function)
    resident: int  # bytes alive when the forward has returned, its output still held
    cache_bytes: int  # storage of every key and value tensor in the cache after the step
    logits_bytes: int  # storage of the step's `logits` (model dtype, [B, q, V])


@dataclass(frozen=True)
class GenerateMeasurement:
    """One `generate` call, in bytes above parameters, buffers and the caller's
    `input_ids`. Step k runs from the start of forward k (0 = the prefill, k >= 1 the
    k-th decode forward) to the start of forward k + 1, or to `generate`'s return: so the
    token selection and bookkeeping after a forward belong to that forward's step."""

    peak: int  # most bytes alive at once during the whole call
    peak_phase: str  # "setup" (before the first forward), "prefill" or "decode"
    peak_step: int  # the step at the peak: 0 = prefill, k = k-th decode; -1 in setup
    step_peaks: tuple[int, ...]  # the most bytes alive during each step 0..forwards-1
    cache_bytes: int  # storage of every key and value tensor in the cache at the end
    forwards: int  # model forwards run (= new_tokens: the last token is never fed back)
    sequences_shape: tuple[int, ...]  # generate's output, [B, P + new_tokens]


def _kernels() -> dict:
    """{custom op: its CPU kernel}, for the custom ops whose kernel is Python that makes
    tensors of its own: bitsandbytes' gemm_4bit when bitsandbytes is loaded (its default
    kernel, which the CPU runs: it has no CPU kernel of its own)."""
    if "bitsandbytes" not in sys.modules:
        return {}
    from bitsandbytes.backends.default.ops import _gemm_4bit_default_impl

    assert not torch._C._dispatch_has_kernel_for_dispatch_key("bitsandbytes::gemm_4bit", "CPU")
    return {torch.ops.bitsandbytes.gemm_4bit.default: _gemm_4bit_default_impl}


class LiveTracker(TorchDispatchMode):
    """Bytes of live tensor storage, op by op, with the peak and the label at the peak.

    A storage is counted from the first aten op that returns it until its PyObject dies;
    views and in-place results share their storage's count (a storage an op resizes is
    re-sized in the count). `exclude` names what exists before and is never counted:
    modules (their parameters and buffers) and tensors. `set_label` names the current
    phase; `label_peaks` keeps the most bytes alive under each label.
    """

    def __init__(self, *exclude: torch.nn.Module | torch.Tensor) -> None:
        super().__init__()
        self._seen = WeakIdKeyDictionary()  # storage -> its key, or None when excluded
        self._refs: dict[int, weakref.ref] = {}  # key -> weakref whose callback frees it
        self._bytes: dict[int, int] = {}  # key -> counted bytes
        self._next = 0
        self.live = 0
        self.peak = 0
        self.peak_label = ""
        self.label = ""
        self.label_peaks: dict[str, int] = {}
        self._kernels = _kernels()
        for obj in exclude:
            tensors = (
                [*obj.parameters(), *obj.buffers()] if isinstance(obj, torch.nn.Module) else [obj]
            )
            for tensor in tensors:
                self._seen[tensor.untyped_storage()] = None

    def set_label(self, label: str) -> None:
        """Start a phase: its peak starts from what is alive now."""
        self.label = label
        self.label_peaks[label] = max(self.label_peaks.get(label, 0), self.live)

    def _free(self, key: int) -> None:
        self._refs.pop(key, None)
        self.live -= self._bytes.pop(key, 0)

    def _count(self, storage: torch.UntypedStorage) -> None:
        if storage in self._seen:
            key = self._seen[storage]
            if key is not None and key in self._bytes:  # resized in place
                self.live += storage.nbytes() - self._bytes[key]
                self._bytes[key] = storage.nbytes()
            return
        self._next += 1
        key = self._next
        self._seen[storage] = key
        self._bytes[key] = storage.nbytes()
        self._refs[key] = weakref.ref(storage, lambda _ref, key=key: self._free(key))
        self.live += storage.nbytes()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kernel = self._kernels.get(func)
        if kernel is not None:  # its tensors counted as its ops make them
            with self:
                out = kernel(*args, **(kwargs or {}))
        else:
            out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta":
                self._count(leaf.untyped_storage())
        if self.live > self.label_peaks.get(self.label, -1):
            self.label_peaks[self.label] = self.live
        if self.live > self.peak:
            self.peak = self.live
            self.peak_label = self.label
        return out


@contextmanager
def _measuring() -> Iterator[None]:
    """`gc` off, so that a storage dies when its last reference goes; one intra-op thread
    (the counts do not depend on it, and the flash-CPU SDPA kernel ran 16x slower
    on a contended pool); transformers' warnings off (generate warns that a batch has no
    attention mask, which is the no-padding case measured here)."""
    threads = torch.get_num_threads()
    verbosity = transformers.logging.get_verbosity()
    gc.collect()
    gc.disable()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        torch.set_num_threads(threads)
        gc.enable()


def cache_storage_bytes(cache: Cache) -> int:
    """Storage bytes of every key and value tensor held by the cache's layers, each tensor's
    whole storage (a view's too); a QuantizedCache's float8 keys and values and their
    float32 scales (its `keys` and `values` are empty). Not counted: a StaticLayer's
    `cumulative_length`, an int64 scalar per layer (8 B), which LiveTracker does count."""
    total = 0
    for layer in cache.layers:
        tensors = [getattr(layer, "keys", None), getattr(layer, "values", None)]
        for stored in (getattr(layer, name, None) for name in _QUANTIZED):
            tensors += list(stored or ())  # (float8 tensor, scale)
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                total += tensor.untyped_storage().nbytes()
    return total


_QUANTIZED = ("_quantized_keys", "_quantized_values")  # Fp8QuantizedLayer's (tensor, scale)


def llama(sizes: dict, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A LlamaForCausalLM from {"V", "D", "F", "N", "H", "KV"} (head size D // H), seeded,
    in `dtype`, in eval mode; bos, eos and pad ids 0, attention `sdpa` (the default)."""
    config = decoder_config(LlamaConfig, {**sizes, "L": 4096})  # L: max_position_embeddings
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(dtype).eval()


def mistral(sizes: dict, dtype: torch.dtype = torch.float32) -> MistralForCausalLM:
    """A MistralForCausalLM from {"V", "D", "F", "N", "H", "KV", "W"} (head size D // H,
    sliding_window W), as `llama` builds its model. Its DynamicCache's layers are
    DynamicSlidingWindowLayers, a StaticCache's StaticSlidingWindowLayers."""
    config = decoder_config(MistralConfig, {**sizes, "L": 4096})  # L: max_position_embeddings
    torch.manual_seed(0)
    return MistralForCausalLM(config).to(dtype).eval()


def mixtral(sizes: dict, dtype: torch.dtype = torch.float32) -> MixtralForCausalLM:
    """A MixtralForCausalLM from {"V", "D", "F", "N", "H", "KV", "E", "k"} (E experts a
    layer, k a token), as `llama` builds its model: grouped_mm experts and sdpa
    attention, transformers' defaults."""
    from tests.reference.test_mixtral import mixtral_config

    config = mixtral_config({**sizes, "L": 4096}, None, "grouped_mm")  # L: max positions
    torch.manual_seed(0)
    return MixtralForCausalLM(config).to(dtype).eval()


def gpt2(sizes: dict, dtype: torch.dtype = torch.float32) -> GPT2LMHeadModel:
    """A GPT2LMHeadModel from {"V", "D", "N", "H"} (d_ff 4D, 4,096 positions), seeded, in
    `dtype`, in eval mode (no dropout); bos, eos and pad ids 0, attention `sdpa`."""
    config = GPT2Config(
        vocab_size=sizes["V"],
        n_embd=sizes["D"],
        n_layer=sizes["N"],
        n_head=sizes["H"],
        n_positions=4096,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).to(dtype).eval()


def measure_prefill(
    model: torch.nn.Module, input_ids: torch.Tensor, logits_to_keep: int = 0
) -> InferenceMeasurement:
    """`model(input_ids=..., use_cache=True, cache=DynamicCache(config=model.config))`
    under `torch.no_grad()`, logits for all P positions (`logits_to_keep` 0) or the last
    ones.

    `peak`: the most bytes alive during the forward (the cache being filled, activations,
    the model's own `position_ids` [1, P] int64 and RoPE cos/sin). `resident`: bytes alive
    once it returns with the output held, which is the cache and the logits.
    """
    tracker = LiveTracker(model, input_ids)
    with torch.no_grad(), _measuring(), tracker:
        cache = DynamicCache(config=model.config)
        out = model(input_ids=input_ids, use_cache=True, cache=cache, logits_to_keep=logits_to_keep)
        resident = tracker.live
        logits_bytes = out.logits.untyped_storage().nbytes()
    return InferenceMeasurement(tracker.peak, resident, cache_storage_bytes(cache), logits_bytes)


def measure_decode(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    new_tokens: int,
    logits_to_keep: int = 0,
    kind: Literal["dynamic", "fp8"] = "dynamic",
) -> list[InferenceMeasurement]:
    """A hand-written greedy loop under `torch.no_grad()`: the prefill forward of
    `input_ids` [B, P] with a fresh `DynamicCache(config=model.config)`, then
    `new_tokens - 1` forwards, each of the previous step's argmax token [B, 1] int64 with
    the cache; one measurement per forward (element 0 = the prefill). `kind` "fp8": a
    `QuantizedCache(backend="fp8", config=model.config)` instead.

    Step t's `peak` counts everything alive from just before its forward until its next
    token is picked: what the previous step left (the cache holding P + t - 1 positions
    and the fed token [B, 1]; nothing for the prefill, whose `input_ids` is the caller's)
    plus everything the forward makes, then its output (logits and cache) while the
    argmax over the last logits row makes the next token. The loop keeps only the cache and
    that token between steps: the step's output object is dropped before the next forward.
    `resident`: bytes alive when the forward has returned, its output held (the cache, the
    logits, and the fed token). `cache_bytes` after step t: 2·N·B·KV·(P + t)·hd·s.
    """
    tracker = LiveTracker(model, input_ids)
    steps = []
    with torch.no_grad(), _measuring(), tracker:
        cache = (
            DynamicCache(config=model.config)
            if kind == "dynamic"
            else QuantizedCache(backend="fp8", config=model.config)
        )
        token = input_ids
        for t in range(new_tokens):
            tracker.set_label(f"step {t}")
            out = model(input_ids=token, use_cache=True, cache=cache, logits_to_keep=logits_to_keep)
            resident = tracker.live
            logits_bytes = out.logits.untyped_storage().nbytes()
            token = out.logits[:, -1:].argmax(-1)
            del out
            peak = tracker.label_peaks[f"step {t}"]
            steps.append(
                InferenceMeasurement(peak, resident, cache_storage_bytes(cache), logits_bytes)
            )
    return steps


def measure_generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    new_tokens: int,
    cache: Literal["dynamic", "static", "fp8"] = "dynamic",
) -> GenerateMeasurement:
    """`model.generate(input_ids, max_new_tokens=new_tokens, do_sample=False, cache=...)`.

    The cache is made inside the measurement and passed in, so that it can be read at the
    end: `DynamicCache(config=model.config)`, which is what generate makes by default, or
    `StaticCache(config=model.config, max_cache_len=P + new_tokens - 1)`, the length
    `cache_implementation="static"` gives a model that has not generated before (generate
    keeps the longest length a model has used, `_previous_max_cache_length`; a passed cache
    is not affected), or `QuantizedCache(backend="fp8", config=model.config)` ("fp8").
    The peaks equal generate's own caches', byte for byte.

    Generation runs all `new_tokens` steps: `eos_token_id` is the vocabulary size, an id
    no argmax returns, and `pad_token_id` is None, so generate's special-token tensors are
    bos and eos (8 B each; pad aliases eos), as for a Llama checkpoint with no pad token
    (a config pad id would add 8 B). Counted: generate's bookkeeping (the grown
    `input_ids` and `position_ids`, the fp32 copy of each step's last logits row, the
    model inputs it clones, `unfinished_sequences`, scalars), the cache, every forward's
    activations and logits (`logits_to_keep=1`). Not counted: the caller's `input_ids`.
    """
    prompt = input_ids.shape[1]
    tracker = LiveTracker(model, input_ids)
    forwards = 0

    def next_forward(_module: torch.nn.Module, _args: tuple) -> None:
        nonlocal forwards
        tracker.set_label(f"step {forwards}")
        forwards += 1

    handle = model.register_forward_pre_hook(next_forward)
    try:
        with _measuring(), tracker:
            tracker.set_label("setup")
            if cache == "dynamic":
                kv: Cache = DynamicCache(config=model.config)
            elif cache == "static":
                kv = StaticCache(config=model.config, max_cache_len=prompt + new_tokens - 1)
            elif cache == "fp8":
                kv = QuantizedCache(backend="fp8", config=model.config)
            else:
                raise ValueError(f"cache must be 'dynamic', 'static' or 'fp8', not {cache!r}")
            sequences = model.generate(
                input_ids,
                max_new_tokens=new_tokens,
                do_sample=False,
                cache=kv,
                eos_token_id=model.config.vocab_size,
                pad_token_id=None,
            )
    finally:
        handle.remove()
    step_peaks = tuple(tracker.label_peaks[f"step {k}"] for k in range(forwards))
    label = tracker.peak_label
    step = -1 if label == "setup" else int(label.split()[1])
    phase = "setup" if step < 0 else "prefill" if step == 0 else "decode"
    return GenerateMeasurement(
        tracker.peak,
        phase,
        step,
        step_peaks,
        cache_storage_bytes(kv),
        forwards,
        tuple(sequences.shape),
    )
