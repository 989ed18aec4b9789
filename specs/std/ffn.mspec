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

# GELU MLP with biases (GPT-2, BERT, ViT). `approximate` is "tanh" (GPT-2) or "none" (erf).
layer GeluMLP(d_model, d_ff, approximate = "tanh") {
    fc1 = Linear(d_model, d_ff, bias = true)
    fc2 = Linear(d_ff, d_model, bias = true)
    forward(x: [..., d_model]) -> [..., d_model] {
        return fc2(gelu(fc1(x), approximate))
    }
}
