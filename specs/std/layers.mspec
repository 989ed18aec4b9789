# Basic layers, shaped like their torch.nn counterparts so that member names are
# state_dict keys.

layer Linear(in_features, out_features, bias = false) {
    let has_bias = bias
    param weight: [out_features, in_features]     # stored [out, in], as torch.nn.Linear
    if has_bias { param bias: [out_features] }
    forward(x: [..., in_features]) -> [..., out_features] {
        if has_bias { return linear(x, weight, bias) }
        return linear(x, weight)
    }
}

layer Embedding(num_embeddings, embedding_dim) {
    param weight: [num_embeddings, embedding_dim]
    forward(indices: [...]) -> [..., embedding_dim] {
        return embedding(indices, weight)
    }
}

# RMSNorm (Zhang & Sennrich, 2019): one gain vector, no bias. `hf`: Hugging Face's
# Python RMSNorm (LlamaRMSNorm: the variance kept to the end, the product cast before
# the gain's), whose temporaries under no_grad differ from torch's rms_norm's.
layer RMSNorm(d_model, eps = 1e-5, hf = false) {
    param weight: [d_model]
    forward(x: [..., d_model]) -> [..., d_model] {
        return rms_norm(x, weight, eps, hf = hf)
    }
}

layer LayerNorm(d_model, eps = 1e-5, bias = true) {
    let has_bias = bias
    param weight: [d_model]
    if has_bias { param bias: [d_model] }
    forward(x: [..., d_model]) -> [..., d_model] {
        if has_bias { return layer_norm(x, weight, bias, eps) }
        return layer_norm(x, weight, eps)
    }
}

# Rotary position embedding (Su et al., 2021). The cos/sin tables, one angle per pair
# of features, are a non-trainable buffer: memory, but no gradient and no optimizer state.
layer RoPE(d_k, max_len, theta = 10000) {
    buffer cos: [max_len, d_k / 2]
    buffer sin: [max_len, d_k / 2]
    forward(x: [..., seq, d_k]) -> [..., seq, d_k] {
        return rope(x, cos, sin)
    }
}

layer Conv2d(in_channels, out_channels, kernel_size, stride = 1, padding = 0, bias = true,
             groups = 1) {
    let has_bias = bias
    param weight: [out_channels, in_channels / groups, kernel_size, kernel_size]
    if has_bias { param bias: [out_channels] }
    forward(x: [b, in_channels, h, w]) {
        if has_bias { return conv2d(x, weight, bias, stride, padding, groups) }
        return conv2d(x, weight, stride, padding, groups)
    }
}

# torch.nn.Conv1d over [batch, channels, length]; groups = channels makes it depthwise
# (Mamba's causal conv: padding = kernel_size - 1, the caller keeps the first L outputs).
layer Conv1d(in_channels, out_channels, kernel_size, stride = 1, padding = 0, bias = true,
             groups = 1) {
    let has_bias = bias
    param weight: [out_channels, in_channels / groups, kernel_size]
    if has_bias { param bias: [out_channels] }
    forward(x: [b, in_channels, l]) {
        if has_bias { return conv1d(x, weight, bias, stride, padding, groups) }
        return conv1d(x, weight, stride, padding, groups)
    }
}

# Training-mode BatchNorm: gamma and beta are trained; the running statistics and the
# step counter are buffers, updated in place (no new memory).
layer BatchNorm2d(num_features, eps = 1e-5, momentum = 0.1) {
    param weight: [num_features]
    param bias: [num_features]
    buffer running_mean: float32[num_features]
    buffer running_var: float32[num_features]
    buffer num_batches_tracked: int64[]
    forward(x: [b, num_features, h, w]) -> [b, num_features, h, w] {
        return batch_norm(x, weight, bias, running_mean, running_var, momentum, eps)
    }
}

# torchvision's LayerNorm2d (ConvNeXt): LayerNorm over the channels of [B, C, H, W], run
# channels-last by a permuted view and permuted back, as torchvision does; layer_norm
# saves the permuted view (the input's own storage), its output is new.
layer LayerNorm2d(num_channels, eps = 1e-5) {
    param weight: [num_channels]
    param bias: [num_channels]
    forward(x: [b, num_channels, h, w]) -> [b, num_channels, h, w] {
        y = layer_norm(rearrange(x, "b c h w -> b h w c"), weight, bias, eps)
        return rearrange(y, "b h w c -> b c h w")
    }
}

# Hugging Face's rotary embedding (LLaMA, Mistral): the inverse frequencies, and a copy
# kept for dynamic rope types, are buffers; a model makes cos and sin [1, 1, s, d] from
# them once per forward, without gradient. apply_rotary is apply_rotary_pos_emb: each
# product saves cos or sin (the same two tensors in every layer), nothing else.
layer HFRotaryEmbedding(head_dim, theta = 10000) {
    buffer inv_freq: float32[head_dim / 2]             # computed in float32 (.float())
    buffer original_inv_freq: float32[head_dim / 2]
}

fn rotate_half(x: [..., d]) -> [..., d] {
    return cat(-narrow(x, -1, d / 2, d / 2), narrow(x, -1, 0, d / 2), dim = -1)
}

# HF's rotary_emb(x, position_ids) at the model's position ids (positions 0..s-1, made
# by the model's forward, which also hands them to every layer): cos and sin of the
# angles [rows, s, d], made once per forward without gradient (inv_freq is a buffer),
# in float32 and then cast to the dtype of the hidden states `x` (`cos.to(x.dtype)`: the
# float32 tables themselves when x is float32), unsqueezed to [rows, 1, s, d] for the
# heads as apply_rotary_pos_emb does. `rows` is position_ids' batch: 1 for the model's
# own cache_position.unsqueeze(0), the batch under transformers' generate, which passes
# its [b, s] ids (every row of which is 0..s-1 without padding). `cos, sin = ...`
# unpacks them.
fn hf_rotary_tables(inv_freq: [f], position_ids: int64[s], x, rows = 1) {
    # inv_freq[None, :, None].expand(rows, -1, 1) @ position_ids[:, None, :].float(),
    # transposed: [rows, s, d/2]
    positions = repeat(position_ids, "s -> r 1 s", r = rows) * 1.0
    freqs = rearrange(matmul(repeat(inv_freq, "f -> r f 1", r = rows), positions),
                      "o f s -> o s f")
    emb = cat(freqs, freqs, dim = -1)
    # cos() * attention_scaling (1 for the default rope), then sin's, then both cast
    scale = cos(emb) * 1.0
    scale_1 = sin(emb) * 1.0
    return rearrange(type_as(scale, x), "o s d -> o 1 s d"),
           rearrange(type_as(scale_1, x), "o s d -> o 1 s d")
}

# The input embeddings' output as transformers' models see it: under activation
# checkpointing (`--recompute full`) `activation_checkpointing_enable` calls
# `enable_input_require_grads` (for every model whose main input is input_ids), whose
# forward hook makes the output require a gradient. Behind a frozen embedding (LoRA,
# --freeze) that makes it a leaf: the first layer runs like the others, making its
# input's gradient, which the graph keeps on the leaf (.grad) until it is freed; behind
# a trained embedding it changes nothing.
fn hf_input_embeds(x) {
    if checkpointing {
        x = requires_grad_(x)
    }
    return x
}

# The causal mask transformers' create_causal_mask makes once per forward from the
# position ids: the model passes it to every layer and holds it until its forward
# returns (under gradient checkpointing each layer's checkpoint keeps it too, until
# that layer's backward). None with sdpa (is_causal instead; the position ids, which
# the model holds anyway, stand in: no new memory); with eager a float32 [b, 1, s, s] of
# 0 and the dtype's minimum (the attention op adds its own, which autograd does not
# save).
fn hf_causal_mask(position_ids: int64[s], b)
variant sdpa {
    return position_ids
}
variant eager {
    return shift(repeat(position_ids * 1.0, "t -> b 1 s t", b = b, s = s), 0)
}

fn apply_rotary(x: [b, h, s, d], cos: [r, 1, s, d], sin: [r, 1, s, d]) -> [b, h, s, d] {
    return x * cos + rotate_half(x) * sin
}
