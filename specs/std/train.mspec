# Training policies: precisions, optimizers and activation conventions, as named data.
# A spec picks one of each in its `train { ... }` block (or with --precision,
# --optimizer, --convention); users may declare their own beside these.

# Dtypes per kind of tensor. `master` is a float32 copy of bf16/fp16 parameters that the
# optimizer updates (counted with the optimizer state).
# fp32: everything float32.
precision fp32       { param float32; grad float32; state float32; activation float32 }
# mixed_bf16: Megatron/DeepSpeed-style bf16 training: bfloat16 weights and activations,
# a float32 master copy of the weights and float32 gradients and optimizer state. The
# float buffers are bfloat16 too: Megatron's Float16Module and DeepSpeed's bf16 engine
# cast the module (`module.bfloat16()`), buffers included; a buffer the spec gives a
# dtype keeps it (HF's rotary inv_freq, float32).
precision mixed_bf16 { param bfloat16; master float32; grad float32; state float32; activation bfloat16; buffer bfloat16 }
# bf16: pure bf16 training: every tensor bfloat16, no master copy; the float buffers too
# (model.to(torch.bfloat16) casts them), but for a buffer the spec gives a dtype.
precision bf16       { param bfloat16; grad bfloat16; state bfloat16; activation bfloat16; buffer bfloat16 }

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
# fp16 autocast: the same op lists (the CPU's lower_precision_fp list casts to whichever
# 16-bit dtype autocast runs in), and the loss scaled by torch.amp.GradScaler, whose few
# scalars memspec counts (memspec/scaler.py): its _scale and _growth_tracker with the
# optimizer state, the scaled loss and its gradient, unscale_'s scalars before the step
# and found_inf through it.
precision autocast_fp16 "torch.autocast on the CPU in float16 with GradScaler (PyTorch AMP)" {
    param float32; grad float32; state float32; activation float32
    cast float16 of linear, matmul, einsum, addmm, conv1d, conv2d, flash_attention
    cast float32 of nll_loss, mse_loss
    cast widest of cat
    scaler GradScaler(init_scale = 65536.0)
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
# true/false, tuples) that `memspec verify` runs the step with; `torch module.path:Class(...)`
# names a class of any importable module (a user's own optimizer), and `torch foreach
# CLASS(...)` another class for one implementation. verify passes `foreach=`/`fused=` to a
# class whose constructor takes them; a class without them is its own for_loop.
#
# Shapes other than the parameter's, per state or temporary (`..., if COND` picks the
# parameters that have it; COND is `rank OP N` or `numel OP N`, OP one of == != < <= > >=;
# a numel condition is decided at the bound sizes, unbound parameters count as large):
#   like param reduced over -1      the parameter's shape with dim -1 made 1 (a row's
#                                   statistic); `reduced over (-2, -1)`: both
#   blocks of 256 of param          one element per block of 256 parameter elements
#   gram of param                   [m, m], m the smaller of a matrix's last two sides
#   [256]                           a fixed number of elements
#   ... as uint8                    a dtype other than the precision's state dtype
#   ..., shared                     (state) one tensor per optimizer, not per parameter
# A temporary's lifetime, after the shape (the last of K; the others are `freed`):
# `freed` (dies within its parameter's update), `kept` (the default: a loop variable,
# alive until the next parameter that makes it again has made it), `until first` /
# `until last` (a loop variable that the next parameter rebinds once it has made its
# first / last temporary). `params if COND` with `else OPTIMIZER`: this optimizer takes
# only the parameters COND picks and the other optimizer the rest (a second torch
# optimizer, stepped after the first).
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
    state at init                   # Adagrad.__init__ fills `sum` and `step`
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

# Adafactor (torch/optim/_adafactor.py): a parameter of rank >= 2 keeps the row and
# column means of its squared gradient, [..., R, 1] and [..., 1, C]; a vector a full
# `variance`. The for_loop (torch's default: foreach=None) makes, per parameter, in order:
optimizer adafactor "Adafactor: factored second moment (row and column means per matrix)" {
    state row_var: like param reduced over -1 if rank >= 2
    state col_var: like param reduced over -2 if rank >= 2
    state variance: like param if rank < 2
    state step: scalar
    temp for_loop: 1 like param reduced over -1 if rank >= 2     # row_mean = norm(grad, dim=-1)...
    temp for_loop: 1 like param reduced over -2 if rank >= 2     # col_mean: both loop variables
    temp for_loop: 1 like param if rank < 2                      # grad_squared = grad * grad
    # var_estimate = row_var @ col_var (or variance.clone()), bound to `update` after the
    # next line: the previous parameter's `update` lives through this parameter's
    temp for_loop: 1 like param, until last
    temp for_loop: 1 like param reduced over (-2, -1) if rank >= 2, freed  # row_var.mean(-2).clamp_
    # foreach groups the matrices first (when the first parameter is one), then the
    # vectors: the matrices' var_estimates are still bound (`updates`) while the vectors'
    # clones are made: every parameter's at once (the peak while the vectors outnumber,
    # in elements, the matrices' [1, 1] means)
    temp foreach: 1 like param
    # per element of a matrix: param.norm (2); row and column norms (2 + 2); the outer
    # product (1); / the row mean (1); clamp (1); rsqrt (1); * grad (1); update.norm (2);
    # param.add_ with alpha (2). A vector's: 13 (grad * grad 1, lerp 3 for the norms 4)
    flops 15 per element
    torch Adafactor(lr = 0.01)
}
# Lion (Chen et al. 2023), as lucidrains' lion-pytorch runs it (lion_pytorch.py,
# foreach.py): update = sign(beta1 m + (1 - beta1) g); p -= lr (update + wd p);
# m = beta2 m + (1 - beta2) g.
optimizer lion "Lion: one momentum per parameter, sign updates" {
    state exp_avg: like param
    temp for_loop: 2 like param, freed  # exp_avg.clone().mul_(beta1), then .add(grad): update_fn's local
    temp foreach: 1 like param          # updates = [exp_avg.clone() ...], lerp_ and sign_ in place
    # p.mul_(1 - lr wd) (1); mul_ beta1 (1); add with alpha (2); sign (1); p.add_ with
    # alpha (2); exp_avg.mul_(beta2) (1); .add_ with alpha (2)
    flops 10 per element
    torch lion_pytorch:Lion(lr = 0.0001)
    torch foreach lion_pytorch.foreach:Lion(lr = 0.0001)
}
# Muon (torch/optim/_muon.py) takes matrices only (its constructor refuses others): the
# rest go to AdamW, as its documentation shows (two optimizers, Muon's stepped first).
# Per matrix [A, B], Newton-Schulz on a bfloat16 copy, transposed to the wide side:
optimizer muon "Muon for matrices (momentum, Newton-Schulz orthogonalized update), AdamW for the rest" {
    params if rank == 2
    state momentum_buffer: like param
    temp for_loop: 1 like param, freed                  # update = grad.lerp(buf, momentum)
    temp for_loop: 1 like param as bfloat16, freed      # X = update.bfloat16(), / its norm
    # gram = X @ X.T, gram_update = addmm(gram, gram, gram): [m, m], m = min(A, B)
    temp for_loop: 2 gram of param as bfloat16 if rank == 2, freed
    # X = addmm(X, gram_update, X), returned as `update`: alive until the next
    # parameter's grad.lerp rebinds it
    temp for_loop: 1 like param as bfloat16, until first
    # buf.lerp_ (3); grad.lerp (3); norm (2); / norm (1); p.mul_(1 - lr wd) (1); p.add_
    # with alpha (2). The Newton-Schulz matrix products (ns_steps x (4 m^2 n + 2 m^3) per
    # matrix, m <= n) are not elementwise and not counted here
    flops 12 per element
    torch Muon(lr = 0.02)
    else adamw
}
# bitsandbytes' AdamW8bit (bitsandbytes/optim/optimizer.py, Optimizer2State.init_state):
# each moment as one uint8 code per element and one float32 absmax per block of 256
# elements, decoded through a 256-entry float32 map shared by every parameter; a
# parameter under min_8bit_size (4096) elements keeps float32 moments instead. Its
# CUDA kernels update in place, without temporaries (its CPU fallback dequantizes to
# float32 first: not modelled). `step` is a Python int.
optimizer adamw8bit "AdamW with 8-bit block-wise quantized moments (bitsandbytes AdamW8bit)" {
    state state1: like param as uint8 if numel >= 4096
    state state2: like param as uint8 if numel >= 4096
    state absmax1: blocks of 256 of param as float32 if numel >= 4096
    state absmax2: blocks of 256 of param as float32 if numel >= 4096
    state qmap1: [256] as float32 if numel >= 4096, shared
    state qmap2: [256] as float32 if numel >= 4096, shared
    state state1: like param as float32 if numel < 4096
    state state2: like param as float32 if numel < 4096
    flops 18 per element            # AdamW's 14; decoding (x absmax) and encoding (/ absmax) each moment
    torch bitsandbytes.optim:AdamW8bit(lr = 0.001)
}
# bitsandbytes' PagedAdamW8bit (QLoRA's optimizer): AdamW8bit's state, with the moments of
# a parameter of 100,000 elements or more (a LoRA adapter at r >= 25 on a 4096-wide layer)
# in CUDA unified memory, which the driver pages out to host memory when the device runs
# short and PyTorch's allocator (torch.cuda.max_memory_allocated) does not count; memspec
# counts them on the device, where they live until paged out.
optimizer paged_adamw8bit "AdamW8bit with its larger moments in paged (CUDA unified) memory (bitsandbytes PagedAdamW8bit)" {
    state state1: like param as uint8 if numel >= 4096
    state state2: like param as uint8 if numel >= 4096
    state absmax1: blocks of 256 of param as float32 if numel >= 4096
    state absmax2: blocks of 256 of param as float32 if numel >= 4096
    state qmap1: [256] as float32 if numel >= 4096, shared
    state qmap2: [256] as float32 if numel >= 4096, shared
    state state1: like param as float32 if numel < 4096
    state state2: like param as float32 if numel < 4096
    flops 18 per element
    torch bitsandbytes.optim:PagedAdamW8bit(lr = 0.001)
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
# `save aten NAMES`: PyTorch's selective activation checkpointing (torch.utils.checkpoint's
# context_fn = create_selective_checkpoint_contexts(policy_fn)): inside each checkpoint
# the outputs of those aten ops are kept from the forward (MUST_SAVE) and handed to the
# recomputation, which does not compute them again (the others: PREFER_RECOMPUTE); a
# kept output the early stop never reaches lives until the checkpoint is let go. Ops
# declare the aten op that makes their output (`memspec ops`: linear mm/addmm, matmul
# and einsum bmm/mm). `save_matmuls` is the policy PyTorch's documentation shows.
recompute save_matmuls "every layer a checkpoint that keeps its matrix products' outputs (PyTorch's selective activation checkpointing)" {
    checkpoint each repeat
    save aten mm, addmm, bmm
}
# `checkpoint each call of NAMES`: each run of consecutive ops inside a call of the fns
# or layers named, or of the ops named, is one checkpoint (its inputs kept: here Q, K and
# V). Megatron-LM's selective recomputation (Korthikanti et al. 2022) recomputes the
# attention core and keeps everything else; std's attention fns and the fused op are it.
recompute selective "Megatron-LM's selective recomputation: the attention core (Q K^T, mask, softmax, dropout, probabilities x V) runs again in backward" {
    checkpoint each call of attention, eager_attention, sdpa_math_attention, flash_attention,
        megatron_core_attention
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
