# Training policies: precisions, optimizers and activation conventions, as named data.
# A spec picks one of each in its `train { ... }` block (or with --precision,
# --optimizer, --convention); users may declare their own beside these.

# Dtypes per kind of tensor. `master` is a float32 copy of bf16/fp16 parameters that the
# optimizer updates (counted with the optimizer state).
precision fp32       { param float32; grad float32; state float32; activation float32 }
precision mixed_bf16 { param bfloat16; master float32; grad float32; state float32; activation bfloat16 }
precision bf16       { param bfloat16; grad bfloat16; state bfloat16; activation bfloat16 }

# Per-parameter state, named as in torch.optim's state dicts.
optimizer adamw "AdamW: first and second moments per parameter" {
    state exp_avg: like param
    state exp_avg_sq: like param
}
optimizer adam "Adam: first and second moments per parameter" {
    state exp_avg: like param
    state exp_avg_sq: like param
}
optimizer sgd "SGD without momentum: no state" { }
optimizer sgd_momentum "SGD with momentum: one momentum buffer per parameter" {
    state momentum_buffer: like param
}

# Which tensors count as activations.
# course: CS336 assignment 1 ("AdamW accounting"), which counts the outputs of RMSNorm,
# the Q/K/V and output projections, Q^T K, softmax, the weighted sum of values, W1, SiLU,
# W2, the output embedding and cross-entropy's log-probabilities. The same rule is
# extended to the analogous components of other architectures (LayerNorm, GELU, ReLU,
# fused attention, convolutions, BatchNorm, max-pooling; Mamba's softplus and its
# selective scan, whose output plays the part of attention's weighted sum).
convention course "CS336 A1 AdamW accounting: the outputs of the listed components" {
    count output of RMSNorm, LayerNorm, Linear, linear, einsum, matmul, softmax, silu, gelu, relu, log_softmax, flash_attention, Conv2d, conv2d, BatchNorm2d, batch_norm, relu_, max_pool2d, Conv1d, conv1d, softplus, selective_scan
}
# autograd: every tensor PyTorch's autograd saves for backward, each storage once.
convention autograd "what PyTorch keeps for backward, each storage counted once" {
    count saved of *
}
