# Position-wise feed-forward networks.

# The CS336 question's FFN: W1, SiLU, W2 (no biases).
layer FFN_SiLU(d_model, d_ff) {
    w1 = Linear(d_model, d_ff)
    w2 = Linear(d_ff, d_model)
    forward(x: [..., d_model]) -> [..., d_model] {
        return w2(silu(w1(x)))
    }
}

# SwiGLU (Shazeer, 2020), as in the CS336 assignment and LLaMA: W2 (SiLU(W1 x) * W3 x).
layer SwiGLU(d_model, d_ff) {
    w1 = Linear(d_model, d_ff)
    w2 = Linear(d_ff, d_model)
    w3 = Linear(d_model, d_ff)
    forward(x: [..., d_model]) -> [..., d_model] {
        gated = silu(w1(x)) * w3(x)
        return w2(gated)
    }
}

# Megatron's MLPs under --tp: the up projections column-parallel, the down projection
# row-parallel.
tp_plan FFN_SiLU { w1 colwise; w2 rowwise }
tp_plan SwiGLU { w1 colwise; w3 colwise; w2 rowwise }
tp_plan GeluMLP { fc1 colwise; fc2 rowwise }

# Hugging Face's `gelu_new` (GPT-2's default activation): GELU's tanh approximation
# written out in Python, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Autograd keeps
# x (for pow), 0.5 x and 1 + tanh (for their product) and the tanh: three tensors of x's
# size more than F.gelu(x, approximate="tanh"), which keeps x alone. In Python's order:
# 0.5 x first, alive while the tanh factor is made.
fn gelu_new(x: [..., f]) -> [..., f] {
    half = 0.5 * x
    inner = 0.7978845608028654 * (x + 0.044715 * pow(x, 3))
    return half * (1 + tanh(inner))
}

# GELU MLP with biases (GPT-2, BERT, ViT). `approximate` is "tanh" (GPT-2) or "none" (erf).
layer GeluMLP(d_model, d_ff, approximate = "tanh") {
    fc1 = Linear(d_model, d_ff, bias = true)
    fc2 = Linear(d_ff, d_model, bias = true)
    forward(x: [..., d_model]) -> [..., d_model] {
        return fc2(gelu(fc1(x), approximate))
    }
}
