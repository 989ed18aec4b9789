# transformers' LlamaAttention, which LLaMA and the models built on it (Mixtral's
# MixtralAttention: the same, with no window at its config) share: `use
# std.transformers.llama`. Under --mode inference its keys and values go through the cache
# the run names (DynamicCache, StaticCache, FP8 QuantizedCache).

# The attention interface (config._attn_implementation): `sdpa` (transformers' default)
# calls scaled_dot_product_attention with enable_gqa, so K and V keep their KV heads
# (torch's CPU flash kernel); `eager` repeats K and V to H heads (repeat_kv) and adds a
# float causal mask; `math` and `flash` repeat K and V and use std's attention.
fn llama_attention(q: [b, h, s, d], k: [b, kv, t, d], v: [b, kv, t, d], n_rep) -> [b, h, s, d]
variant sdpa {
    # a StaticCache's decode step hands SDPA a boolean mask over the whole cache
    if static_kv and decoding { return flash_attention(q, k, v, false, mask_keys = static_length) }
    return flash_attention(q, k, v, true)
}
variant eager {
    k_rep = repeat(k, "b kv t d -> b (kv r) t d", r = n_rep)
    v_rep = repeat(v, "b kv t d -> b (kv r) t d", r = n_rep)
    return eager_attention(q, k_rep, v_rep, true, 0, 0, true)
}
variant math {
    k_rep = repeat(k, "b kv t d -> b (kv r) t d", r = n_rep)
    v_rep = repeat(v, "b kv t d -> b (kv r) t d", r = n_rep)
    return attention(q, k_rep, v_rep, causal = true)
}
variant flash {
    k_rep = repeat(k, "b kv t d -> b (kv r) t d", r = n_rep)
    v_rep = repeat(v, "b kv t d -> b (kv r) t d", r = n_rep)
    return attention(q, k_rep, v_rep, causal = true)
}

# HF LlamaAttention: q, k, v projections viewed as heads, rotary on q and k, attention,
# heads merged back, o_proj.
layer LlamaAttention(d_model, num_heads, num_kv_heads) {
    let head_dim = d_model / num_heads
    let n_rep = num_heads / num_kv_heads
    q_proj = Linear(d_model, num_heads * head_dim)
    k_proj = Linear(d_model, num_kv_heads * head_dim)
    v_proj = Linear(d_model, num_kv_heads * head_dim)
    o_proj = Linear(num_heads * head_dim, d_model)
    forward(x: [b, s, d_model], cos: [r, 1, s, head_dim], sin: [r, 1, s, head_dim])
            -> [b, s, d_model] {
        q_states = rearrange(q_proj(x), "b s (h d) -> b h s d", h = num_heads)
        k_states = rearrange(k_proj(x), "b s (h d) -> b h s d", h = num_kv_heads)
        v = rearrange(v_proj(x), "b s (h d) -> b h s d", h = num_kv_heads)
        # apply_rotary_pos_emb(q, k, cos, sin): q's projection is its argument until k's
        # rotary is done too
        q = apply_rotary(q_states, cos, sin)
        k = hold(apply_rotary(k_states, cos, sin), q_states)
        if generating and quantized_kv {
            # QuantizedCache(backend="fp8").update(k, v): std's kv_fp8_cache
            k_cached, v_cached = kv_fp8_cache(k, v)
        } else {
            # DynamicCache.update(k, v) cats both: k is the caller's until it returns
            k_cached = kv_cache(k)
            v_cached = hold(kv_cache(v), k)
        }
        o = llama_attention(q, k_cached, v_cached, n_rep)
        # x, the caller's normed hidden states, and q (query_states, a local) are alive
        # until the attention returns
        return hold(o_proj(rearrange(o, "b h s d -> b s (h d)")), x, q)   # transpose(1, 2).reshape
    }
}
