# Mamba's selective scan (Gu & Dao, 2023) as Hugging Face's MambaMixer calls it, in HF's
# layouts: u (the conv output after SiLU) and the gate z [b, e, l]; x_proj's pieces dt
# [b, l, r], B and C [b, l, n]; A = -exp(A_log) [e, n]; the skip weights D [e]; dt_proj's
# weight [e, r] and bias [e]. Returns (scan(u) + u * D) * silu(z), [b, e, l].
# Two implementations, picked with `use slow` / `use fused` (or --use):
#   slow:  HF MambaMixer.slow_forward, the path taken without the CUDA kernels (on the CPU,
#          for one): dt_proj and softplus; dA = exp(A * delta) and dB * u materialized as
#          [b, e, l, n] each; a Python loop over l whose L + 1 states [b, e, n] autograd all
#          keeps; the skip term u * D and the gate;
#   fused: mamba_ssm's selective_scan_fn (CUDA), given delta before bias and softplus and
#          the gate z: it keeps its inputs (contiguous copies of strided ones), fp32 chunk
#          checkpoints [b, e, ceil(l / 2048), 2n] and its un-gated output, and recomputes
#          the states in backward. It has no CPU kernel, so `memspec verify` refuses it.
fn selective_scan(u: [b, e, l], dt: [b, l, r], A: [e, n], B: [b, l, n], C: [b, l, n],
                  D: [e], z: [b, e, l], dt_weight: [e, r], dt_bias: [e]) -> [b, e, l]
variant slow {
    delta = rearrange(softplus(linear(dt, dt_weight, dt_bias)), "b l e -> b e l")
    dA = exp(rearrange(A, "e n -> 1 e 1 n") * rearrange(delta, "b e l -> b e l 1"))
    dB = rearrange(delta, "b e l -> b e l 1") * rearrange(B, "b l n -> b 1 l n")
    dBu = dB * rearrange(u, "b e l -> b e l 1")
    y = ssm_recurrence(dA, dBu, C) + u * rearrange(D, "e -> 1 e 1")
    return y * silu(z)
}
variant fused {
    # HF's cuda_kernels_forward: dt_proj.weight @ dt^T, a contiguous [b, e, l]; the bias
    # and softplus are left to the kernel
    delta = einsum(dt_weight, dt, "e r, b l r -> b e l")
    return selective_scan_fused(u, delta, A, rearrange(B, "b l n -> b n l"),
                                rearrange(C, "b l n -> b n l"), D, z, dt_bias)
}
