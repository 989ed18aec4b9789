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

# RMSNorm (Zhang & Sennrich, 2019): one gain vector, no bias.
layer RMSNorm(d_model, eps = 1e-5) {
    param weight: [d_model]
    forward(x: [..., d_model]) -> [..., d_model] {
        return rms_norm(x, weight, eps)
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
