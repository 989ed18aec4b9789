"""memspec's peak against a real CUDA training step, and what CUDA saves for backward.

    PYTHONPATH=src python bench/cuda_step.py [CASE ...]   # writes $OUT/cuda-CASE.json

Needs a CUDA build of torch (and transformers for the hf_* cases); on a CPU-only machine it
measures the CPU step alone. Run one process per case, so that nothing of one case (the
caching allocator's blocks, cuBLAS handles) is alive in the next.

Measured 2026-11-30 on an H200 (torch 2.11.0+cu130, transformers 5.17), B=4 L=128 D=256
N=2 H=4 V=512, AdamW foreach: in every case (cs336_lm_swiglu and gpt2 lowered by memspec,
HF GPT2LMHeadModel eager and sdpa; fp32 and bf16 autocast)
    torch.cuda.max_memory_allocated = MemTracker's peak on the CUDA step + W
to the byte, W = the persistent cuBLAS/cuBLASLt workspaces (64 MiB; 65 MiB with GPT-2's
addmm). MemTracker on CUDA differs from memspec (the CPU step) by CUDA's kernels: dropout
saves a 1-byte mask, rms_norm is one fused kernel (saves x and rstd, not x * rstd), SDPA runs
the memory-efficient kernel (q, k, v, out, an fp32 logsumexp [B, H, L] and two int64
philox scalars), and storages round up to 512 B.

For each case: memspec's peak (compiled here, foreach AdamW as on CUDA), MemTracker on the
CUDA step (storages rounded to 512 B, no workspace), torch.cuda.max_memory_allocated of the
same step (the caching allocator: rounding, cuBLAS workspace), memory between steps, and
the saved tensors of forward + loss (each storage once) on the CPU and on CUDA.
"""

import json
import os
import sys
import time
import traceback

import torch

from memspec import compile_spec
from memspec.lower.module import LoweredModel
from memspec.passes.peak import StepOptions
from memspec.verify.measure import _optimizer

OUT = os.environ.get("OUT", "bench/out")
os.makedirs(OUT, exist_ok=True)
DEV = "cuda" if torch.cuda.is_available() else "cpu"
report: dict = {"torch": torch.__version__, "device": DEV}
if DEV == "cuda":
    report["gpu"] = torch.cuda.get_device_name()


def saved_list(model, make_batch, step_fn, device, excluded):
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in excluded and s.data_ptr() not in seen:
            seen[s.data_ptr()] = (list(t.shape), str(t.dtype), s.nbytes(), str(t.device))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step_fn(model, make_batch())
    loss.backward()
    model.zero_grad(set_to_none=True)
    items = sorted(seen.values(), key=lambda x: (-x[2], x[1], str(x[0])))
    return {"total": sum(i[2] for i in items), "count": len(items), "items": items}


def measure(make_model, make_batch, step_fn, autocast, device):
    """(peak by max_memory_allocated, memory between steps, MemTracker peak by category)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    torch.manual_seed(0)
    with torch.device(device):
        model = make_model()
    model.train()
    opt = _optimizer("adamw", model.parameters(), "foreach")

    def one():
        with torch.device(device):
            opt.zero_grad(set_to_none=True)
            batch = make_batch()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                loss = step_fn(model, batch)
            loss.backward()
            opt.step()

    out = {}
    one()
    one()
    if device == "cuda":
        torch.cuda.synchronize()
        out["between_steps"] = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        one()
        torch.cuda.synchronize()
        out["max_memory_allocated"] = torch.cuda.max_memory_allocated()
        out["after_step"] = torch.cuda.memory_allocated()
        stats = torch.cuda.memory_stats()
        out["allocation_count_step"] = stats.get("allocation.all.allocated")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    state = sum(
        t.numel() * t.element_size() * (t.device.type == device)
        for s in opt.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )
    out["param_bytes"] = params
    out["opt_state_bytes_on_device"] = state
    out["param_tensors"] = len(list(model.parameters()))
    tracker = MemTracker()
    tracker.track_external(model, opt)
    with tracker:
        one()
    snap = tracker.get_tracker_snapshot("peak")
    for dev, cats in snap.items():
        if str(dev).startswith(device):
            out["memtracker"] = {str(k).rsplit(".", 1)[-1]: int(v) for k, v in cats.items()}
    excluded = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}

    def stepped(m, b):
        with torch.device(device), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            return step_fn(m, b)

    out["saved"] = saved_list(model, make_batch, stepped, device, excluded)
    return out


def compiled(spec, sizes, use=()):
    """memspec's compile of the step measured here: foreach AdamW, as torch on CUDA."""
    step = StepOptions(optimizer_impl="foreach")
    return compile_spec(spec, set=sizes, use=use, convention="autograd", step=step)


def memspec_entry(result, **about) -> dict:
    moment = result.peak.winner()
    return {
        **about,
        "memspec_peak": int(result.peak.value),
        "memspec_moment": moment.label(),
        "memspec_breakdown": {c: int(result.value(e)) for c, e in moment.breakdown},
        "memspec_saved": int(result.value(result.categories["activations"].bytes)),
    }


def measure_all(entry, make_model, make_batch, step_fn) -> None:
    """The step on the CPU (fp32) and on CUDA (fp32, bf16 autocast), into `entry`;
    `make_batch(device)`."""
    for device in ("cpu", DEV) if DEV == "cuda" else ("cpu",):
        for autocast in (False, True) if device == "cuda" else (False,):
            key = f"{device}{'_autocast_bf16' if autocast else '_fp32'}"
            t0 = time.time()
            try:
                entry[key] = measure(
                    make_model, lambda d=device: make_batch(d), step_fn, autocast, device
                )
            except Exception:
                entry[key] = {"error": traceback.format_exc()[-2000:]}
            entry[key]["seconds"] = round(time.time() - t0, 2)


def lowered_case(name, spec, sizes, use=()):
    result = compiled(spec, sizes, use)
    entry = memspec_entry(result, spec=spec, sizes=sizes, use=list(use))
    holder = {}

    def make_model():
        holder["m"] = LoweredModel(result.graph, result.substitutions())
        return holder["m"]

    def make_batch(device):
        return [t.to(device) for t in holder["m"].make_inputs()]

    def step_fn(model, batch):
        out = model(*batch)
        return out if out.dim() == 0 else out.float().sum()

    measure_all(entry, make_model, make_batch, step_fn)
    report[name] = entry


def hf_gpt2_case(name, sizes, attention):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=sizes["V"],
        n_positions=sizes["P"],
        n_embd=sizes["D"],
        n_layer=sizes["N"],
        n_head=sizes["H"],
        attn_implementation=attention,
        bos_token_id=0,
        eos_token_id=0,
    )
    result = compiled("specs/gpt2.mspec", sizes, () if attention == "sdpa" else ("eager",))
    entry = memspec_entry(result, sizes=sizes, attention=attention)

    def make_batch(device):
        t = torch.randint(0, sizes["V"], (sizes["B"], sizes["L"]), device=device)
        return t, t.clone()

    def step_fn(model, b):
        return model(input_ids=b[0], labels=b[1], use_cache=False).loss

    measure_all(entry, lambda: GPT2LMHeadModel(config), make_batch, step_fn)
    report[name] = entry


def workspace():
    if DEV != "cuda":
        return
    torch.cuda.synchronize()
    m0 = torch.cuda.memory_allocated()
    a = torch.ones(256, 256, device="cuda")
    b = torch.ones(4, 256, 256, device="cuda")
    m1 = torch.cuda.memory_allocated()
    c = a @ a
    m2 = torch.cuda.memory_allocated()
    d = torch.bmm(b, b)
    m3 = torch.cuda.memory_allocated()
    report["workspace"] = {
        "inputs": m1 - m0,
        "after_mm": m2 - m1,
        "mm_out": c.untyped_storage().nbytes(),
        "after_bmm": m3 - m2,
        "bmm_out": d.untyped_storage().nbytes(),
        "env": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def main():
    only = sys.argv[1:]
    cases = [
        ("workspace", workspace),
        (
            "swiglu",
            lambda: lowered_case(
                "swiglu",
                "specs/cs336_lm_swiglu.mspec",
                {"B": 4, "L": 128, "V": 512, "D": 256, "N": 2, "H": 4},
            ),
        ),
        (
            "gpt2_lowered",
            lambda: lowered_case(
                "gpt2_lowered",
                "specs/gpt2.mspec",
                {"B": 4, "L": 128, "V": 512, "D": 256, "N": 2, "H": 4, "P": 128},
            ),
        ),
        (
            "hf_gpt2_sdpa",
            lambda: hf_gpt2_case(
                "hf_gpt2_sdpa",
                {"B": 4, "L": 128, "V": 512, "D": 256, "N": 2, "H": 4, "P": 128},
                "sdpa",
            ),
        ),
        (
            "hf_gpt2_eager",
            lambda: hf_gpt2_case(
                "hf_gpt2_eager",
                {"B": 4, "L": 128, "V": 512, "D": 256, "N": 2, "H": 4, "P": 128},
                "eager",
            ),
        ),
    ]
    for name, fn in cases:
        if only and name not in only:
            continue
        t0 = time.time()
        try:
            fn()
        except Exception:
            report[name] = {"error": traceback.format_exc()[-3000:]}
        print(name, round(time.time() - t0, 1), "s", flush=True)
        with open(os.path.join(OUT, f"cuda-{name}.json"), "w") as f:
            json.dump({k: report[k] for k in ("torch", "device", name) if k in report}, f, indent=1)
        report.pop(name, None)


if __name__ == "__main__":
    main()
