# Training policies: precisions, optimizers and activation conventions, as named data.
# A spec picks one of each in its `train { ... }` block (or with --precision,
# --optimizer, --convention); users may declare their own beside these.

# Dtypes per kind of tensor. `master` is a float32 copy of bf16/fp16 parameters that the
# optimizer updates (counted with the optimizer state).
# fp32: everything float32.
precision fp32       { param float32; grad float32; state float32; activation float32 }
# mixed_bf16: Megatron/DeepSpeed-style bf16 training: bfloat16 weights and activations,
# a float32 master copy of the weights and float32 gradients and optimizer state.
precision mixed_bf16 { param bfloat16; master float32; grad float32; state float32; activation bfloat16 }
# bf16: pure bf16 training: every tensor bfloat16, no master copy.
precision bf16       { param bfloat16; grad bfloat16; state bfloat16; activation bfloat16 }

# PyTorch automatic mixed precision: float32 parameters, gradients and optimizer state;
# the forward runs under torch.autocast(device_type="cpu", dtype=...). `cast DTYPE of OPS`
# lists autocast's op lists for the CPU in torch 2.13 (autocast_mode.cpp, as
# torch/testing/_internal/autocast_test_lists.py's AutocastCPUTestLists tests them), by the
# memspec ops they lower to: the inputs of these ops are cast (a parameter's copy cached
# for the forward); every other op runs in its inputs' dtype, with torch's type promotion.
# On the CPU, softmax, log_softmax, layer_norm, rms_norm and group_norm are in neither
# list (they run in bfloat16 when given bfloat16); CUDA's float32 list has them, so a
# CUDA precision would be declared the same way with CUDA's lists. einsum runs bmm, which
# is in the list; flash_attention lowers to scaled_dot_product_attention; mse_loss and
# nll_loss (cross-entropy's second half) run in float32; cat in the widest.
precision autocast_bf16 "torch.autocast on the CPU in bfloat16 (PyTorch AMP)" {
    param float32; grad float32; state float32; activation float32
    cast bfloat16 of linear, matmul, einsum, addmm, conv1d, conv2d, flash_attention
    cast float32 of nll_loss, mse_loss
    cast widest of cat
}

# Per-parameter state, named as in torch.optim's state dicts. `temp IMPL: K like param`:
# the step of implementation IMPL (torch.optim's foreach/fused flags) holds K temporaries
# shaped like a parameter at once: of the parameter being updated (for_loop), or of every
# parameter (foreach); fused kernels hold none. The for_loop's last temporary is a local
# variable (AdamW's `denom`): the previous parameter's stays alive while the next
# parameter's temporaries are made, unless the declaration ends `, freed` (the loop rebinds
# it first). `state step: scalar`: a float32 0-dim tensor per parameter tensor (torch's
# step counter; a CPU tensor when training on a GPU, so not counted in the state; verify
# names it). `flops K per element`: the step's
# elementwise arithmetic per parameter element, one FLOP per operation (torch 2.13's
# torch/optim/adam.py, _single_tensor_adam and _multi_tensor_adam).
# `torch CLASS(KEY = VALUE, ...)`: the torch.optim class and constructor arguments (numbers,
# true/false, tuples) that `memspec verify` runs the step with.
optimizer adamw "AdamW: first and second moments per parameter" {
    state exp_avg: like param
    state exp_avg_sq: like param
    state step: scalar
    temp for_loop: 2 like param     # exp_avg_sq.sqrt(), then its quotient by sqrt(1 - beta2^t)
    temp foreach: 1 like param      # _foreach_sqrt(exp_avg_sqs), then divided in place
    # decay p *= 1 - lr*wd (1); exp_avg.lerp_(g, 1 - beta1) (3); exp_avg_sq *= beta2 (1);
    # += (1 - beta2) g*g (3); sqrt (1); / sqrt(bias correction) (1); + eps (1);
    # p -= step_size * exp_avg / denom (3)
    flops 14 per element
    torch AdamW(lr = 0.001)
}
optimizer adam "Adam: first and second moments per parameter (weight_decay 0)" {
    state exp_avg: like param
    state exp_avg_sq: like param
    state step: scalar
    temp for_loop: 2 like param
    temp foreach: 1 like param
    flops 13 per element            # AdamW's, without the decoupled decay
    torch Adam(lr = 0.001)
}
optimizer sgd "SGD without momentum: no state" {
    flops 2 per element             # p -= lr * g
    torch SGD(lr = 0.001)
}
optimizer sgd_momentum "SGD with momentum: one momentum buffer per parameter" {
    state momentum_buffer: like param
    flops 5 per element             # buf = momentum*buf + g (3); p -= lr * buf (2)
    torch SGD(lr = 0.001, momentum = 0.9)
}
optimizer sgd_nesterov "SGD with Nesterov momentum: one momentum buffer per parameter" {
    state momentum_buffer: like param
    temp for_loop: 1 like param, freed  # grad.add(buf, alpha=momentum); `grad` is rebound first
    # foreach adds into the gradients in place: no temporaries
    flops 7 per element             # sgd_momentum's, plus g + momentum * buf (2)
    torch SGD(lr = 0.001, momentum = 0.9, nesterov = true)
}
# Counted as for AdamW: addcmul_/addcdiv_ 3, add_ with alpha 2, mul_/sqrt/+ eps 1
# (torch/optim/adagrad.py, rmsprop.py: _single_tensor_* and _multi_tensor_*).
optimizer adagrad "Adagrad: a running sum of squared gradients per parameter" {
    state sum: like param
    state step: scalar
    temp for_loop: 1 like param     # std = sum.sqrt().add_(eps)
    temp foreach: 2 like param      # std = _foreach_sqrt(sums); numerator = _foreach_mul(grads, -clr)
    flops 8 per element             # sum.addcmul_(g, g) (3); sqrt (1); + eps (1); p.addcdiv_ (3)
    torch Adagrad(lr = 0.01)
}
optimizer rmsprop "RMSprop: a running average of squared gradients per parameter" {
    state square_avg: like param
    state step: scalar
    temp for_loop: 1 like param     # avg = square_avg.sqrt().add_(eps)
    temp foreach: 1 like param      # avg = _foreach_sqrt(square_avgs), then + eps in place
    # square_avg *= alpha (1); .addcmul_(g, g) (3); sqrt (1); + eps (1); p.addcdiv_ (3)
    flops 9 per element
    torch RMSprop(lr = 0.01)
}
optimizer rmsprop_momentum "RMSprop with momentum: square average and momentum buffer per parameter" {
    state square_avg: like param
    state momentum_buffer: like param
    state step: scalar
    temp for_loop: 1 like param
    temp foreach: 1 like param
    # rmsprop's, but buf *= momentum (1); buf.addcdiv_(g, avg) (3); p.add_(buf, -lr) (2)
    flops 12 per element
    torch RMSprop(lr = 0.01, momentum = 0.9)
}

# Activation recomputation, as torch.utils.checkpoint runs it (use_reentrant=False): a
# checkpoint keeps its inputs instead of what its ops save; in backward, the first node
# that needs a saved tensor runs the checkpoint's forward again, up to the last tensor it
# saves (torch's early stop), and each recomputed tensor is freed once backward has used
# it. `checkpoint each repeat`: every repetition of every repeated layer is one checkpoint
# (Hugging Face's gradient_checkpointing_enable(); Megatron-LM's full recomputation with
# the uniform method, one layer per chunk). Pick one with `recompute NAME` in `train { }`
# or --recompute NAME.
recompute none "no recomputation: every tensor saved for backward is kept until its backward" {
}
recompute full "every repetition of every repeated layer is a checkpoint" {
    checkpoint each repeat
}

# Which tensors count as activations.
# course: CS336 assignment 1 ("AdamW accounting"), which counts the outputs of RMSNorm,
# the Q/K/V and output projections, Q^T K, softmax, the weighted sum of values, W1, SiLU,
# W2, the output embedding and cross-entropy's log-probabilities. The same rule is
# extended to the analogous components of other architectures (LayerNorm, GELU, ReLU,
# fused attention, convolutions, BatchNorm, max-pooling; Mamba's softplus and its
# selective scan, whose output plays the part of attention's weighted sum). Ops are
# picked by kind (`memspec ops` lists each op's), so a user's own norm layer is counted
# like RMSNorm; the second line names the layers whose outputs are noted by the layer's
# name rather than its op's, and the scan and Hugging Face's gelu_new, fns whose output
# is no single activation op's.
convention course "CS336 A1 AdamW accounting: the outputs of the listed components" {
    count output of kind norm, matmul, attention, softmax, activation, conv, pooling
    count output of RMSNorm, LayerNorm, Linear, Conv2d, BatchNorm2d, Conv1d, selective_scan, gelu_new
}
# autograd: every tensor PyTorch's autograd saves for backward, each storage once.
convention autograd "what PyTorch keeps for backward, each storage counted once" {
    count saved of *
}
