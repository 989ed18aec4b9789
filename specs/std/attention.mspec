# Attention. `attention` has four implementations, picked with `use math`, `use eager`,
# `use sdpa` or `use flash` in a spec's train block or with --use:
#   math:  scores = Q K^T, scaled, causally masked (masked_fill: saves a bool mask),
#          softmax, weighted sum of V; the [seq, seq] scores and probabilities are
#          materialized (and saved for backward);
#   eager: the same with the causal mask added as a 0 / -inf float tensor, which autograd
#          does not keep (Hugging Face's eager attention, and SDPA's math path);
#   sdpa:  torch's scaled_dot_product_attention on the CPU, as Hugging Face calls it by
#          default: its math path (as eager) when it drops probabilities or masks a
#          window, else its fused kernel (as flash);
#   flash: one fused kernel (torch's scaled_dot_product_attention) that stores no
#          [seq, seq] tensor.

#
# causal = false gives bidirectional attention (BERT, ViT, T5's encoder); window > 0 also
# masks keys `window` or more positions back (Mistral's sliding window); dropout_p > 0
# drops attention probabilities (GPT-2, BERT). The flash variant takes causal and scale,
# not a window or dropout.
fn attention(q: [..., s, d], k: [..., t, d], v: [..., t, e], causal = true, window = 0,
             dropout_p = 0, scale = true) -> [..., s, e]
variant math {
    scores = einsum(q, k, "... s d, ... t d -> ... s t")
    if scale { scores = scores / sqrt(d) }            # T5 folds the scale into its weights
    if causal { scores = causal_mask(scores, window) }
    probs = softmax(scores)
    if dropout_p > 0 { probs = dropout(probs, dropout_p) }
    return einsum(probs, v, "... s t, ... t e -> ... s e")
}
variant eager {
    return eager_attention(q, k, v, causal, window, dropout_p, scale)
}
variant sdpa {
    # torch's CPU flash kernel needs one head size for q, k and v: with a value head
    # size of its own (DeepSeek's MLA), SDPA takes its math path
    if dropout_p > 0 or window > 0 or e != d {
        return sdpa_math_attention(q, k, v, causal, window, dropout_p, scale)
    }
    return flash_attention(q, k, v, causal, window, dropout_p, scale)
}
variant flash {
    return flash_attention(q, k, v, causal, window, dropout_p, scale)
}

# Attention with an additive causal mask, which autograd does not save.
fn eager_attention(q: [..., s, d], k: [..., t, d], v: [..., t, e], causal, window, dropout_p,
                   scale) -> [..., s, e] {
    scores = einsum(q, k, "... s d, ... t d -> ... s t")
    if scale { scores = scores / sqrt(d) }
    if causal { scores = add_causal_mask(scores, window) }
    probs = softmax(scores)
    if dropout_p > 0 { probs = dropout(probs, dropout_p) }
    return einsum(probs, v, "... s t, ... t e -> ... s e")
}

# Megatron-LM's attention core (CoreAttention): Q K^T, scaled inside the fused
# scale-mask-softmax with the causal mask added (not saved), softmax's output, dropout on
# the probabilities as CUDA runs it (a 1-byte mask), then probabilities x V.
fn megatron_core_attention(q: [..., s, d], k: [..., t, d], v: [..., t, e], dropout_p)
        -> [..., s, e] {
    scores = einsum(q, k, "... s d, ... t d -> ... s t") / sqrt(d)
    probs = softmax(add_causal_mask(scores, 0))
    if dropout_p > 0 { probs = native_dropout(probs, dropout_p) }
    return einsum(probs, v, "... s t, ... t e -> ... s e")
}

# Causal multi-head self-attention with RoPE on queries and keys (CS336 assignment 1).
layer MultiHeadSelfAttention(d_model, num_heads, max_len, theta = 10000) {
    let d_k = d_model / num_heads
    q_proj = Linear(d_model, d_model)
    k_proj = Linear(d_model, d_model)
    v_proj = Linear(d_model, d_model)
    output_proj = Linear(d_model, d_model)
    rope = RoPE(d_k, max_len, theta)
    forward(x: [..., seq, d_model]) -> [..., seq, d_model] {
        q = rope(rearrange(q_proj(x), "... s (h d) -> ... h s d", h = num_heads))
        k = rope(rearrange(k_proj(x), "... s (h d) -> ... h s d", h = num_heads))
        v = rearrange(v_proj(x), "... s (h d) -> ... h s d", h = num_heads)
        o = attention(q, k, v)
        merged = rearrange(o, "... h s d -> ... s (h d)")   # a copy: h and d are not adjacent
        return output_proj(merged)
    }
}

# Megatron's attention under --tp: q, k, v column-parallel (each rank whole heads),
# the output projection row-parallel.
tp_plan MultiHeadSelfAttention { q_proj colwise; k_proj colwise; v_proj colwise; output_proj rowwise }

# SDPA's math path (torch takes it on the CPU for dropout or a window): eager attention,
# but q and k are each multiplied by the square root of the scale before their product,
# so the product saves those scaled tensors (at B = 1 folded views of them, where eager
# attention saves views of q and k themselves).
fn sdpa_math_attention(q: [..., s, d], k: [..., t, d], v: [..., t, e], causal, window,
                       dropout_p, scale) -> [..., s, e] {
    if scale {
        q = q / sqrt(sqrt(d))
        k = k / sqrt(sqrt(d))
    } else {
        q = q * 1.0
        k = k * 1.0
    }
    scores = einsum(q, k, "... s d, ... t d -> ... s t")
    if causal { scores = add_causal_mask(scores, window) }
    probs = softmax(scores)
    if dropout_p > 0 { probs = dropout(probs, dropout_p) }
    return einsum(probs, v, "... s t, ... t e -> ... s e")
}

# transformers' `use_cache`: with True, each attention layer's K and V go through a
# DynamicCache, whose update is torch.cat([empty, k], dim=-2): attention reads those
# copies, and the model returns them in its outputs (`past_key_values`). A Trainer sets
# use_cache = False (TrainingArguments.use_cache), the default here; `--use cache` is a
# hand-written loop on the config's default, True. The copies outlive backward only when
# the loop keeps the outputs object (--keep-outputs).
# Under --mode inference (`generating`) the cache holds `past_length` positions before
# this forward: kv_append is the cat that makes the cache anew, its output the new
# positions' copy, kept to the end of generation; a paged cache (`paged_kv`, --kv-cache
# paged) is allocated in blocks before the prefill and written in place (kv_write); a
# static one (`static_kv`, --kv-cache static) is made by the prefill (kv_static).
fn kv_cache(x: [b, h, s, d]) -> [b, h, s, d]
variant no_cache {
    return x
}
variant cache {
    if paged_kv { return kv_write(x) }     # vLLM's blocks, allocated before the prefill
    if static_kv {
        # StaticCache: the prefill's update makes the layer's cache, a decode step's writes
        # into it. The prefill's attention reads the positions it filled (a view); a decode
        # step's reads the whole cache under a boolean mask (the attention's `mask_keys`),
        # which makes no more memory than reading a view of the new position
        cache = returned(kv_static(x, static_length, decoding))
        return narrow(cache, -2, 0, s)
    }
    if generating { return returned(kv_append(x, past_length)) }
    return returned(cat(x, dim = -2))
}

# A layer's keys and values through a sliding-window cache of `window` positions
# (Mistral's: transformers' DynamicSlidingWindowLayer, which a DynamicCache makes for a
# config with a sliding_window). Its update cats the keys, then the values, onto the
# window's last positions, returns both cats (what attention reads) and keeps a view of
# each one's last window - 1 positions, their whole storage: kv_window, whose outputs
# the model returns and whose layer frees its previous tensors as it returns. Without
# --mode inference, or with another cache, as kv_cache.
fn kv_cache_window(k: [b, g, s, d], v: [b, g, s, e], window)
variant no_cache {
    return k, v
}
variant cache {
    # a StaticCache's sliding layer (StaticSlidingWindowLayer) of fewer positions than the
    # window is a StaticCache's plain layer; of more, static_window_cache; vLLM's window
    # (paged) is kv_window's refusal
    if generating and static_kv and static_length >= window {
        k_static, v_static = static_window_cache(k, v, window)
        return k_static, v_static
    }
    if generating and not static_kv {
        # the prefill's update: the cat of an empty cache and the prompt, copies
        past = 0
        if decoding { past = past_length }
        k_full, v_full = kv_window(k, v, past, window, prompt_length, paged = paged_kv)
        return returned(k_full), returned(v_full)
    }
    return kv_cache(k), hold(kv_cache(v), k)
}

# transformers' QuantizedCache(backend="fp8") (--kv-dtype fp8 with a contiguous cache):
# a layer's keys and values in float8_e4m3fn, each with a float32 scale that the prefill
# fixes from its amplitude. The prefill's update quantizes k, then v, and returns them as
# they are; a decode step's quantizes the new positions, cats them onto the float8
# tensors and returns the whole cache dequantized to the model's dtype, which attention
# reads (kv_fp8). The float8 tensors are the cache, kept to the end; k and v are the
# caller's until the update returns.
fn kv_fp8_cache(k: [b, g, s, d], v: [b, g, s, e]) {
    past = 0
    if decoding { past = past_length }
    k_read, v_read, k_fp8, v_fp8 = kv_fp8(k, v, past)
    k_kept = returned(k_fp8)
    v_kept = returned(v_fp8)
    return k_read, hold(v_read, k, k_kept, v_kept)
}

# transformers' StaticSlidingWindowLayer, a StaticCache's layer for a sliding-window model
# whose generation reaches the window (P + T - 1 >= W): W positions, zeros made at its
# first update. A prompt of at most W positions is written in by index_copy_, as is each
# decode step's token until the layer holds W, and the whole cache is returned: attention
# reads its W positions under generate's mask. A longer prompt is returned as it is, its
# last W positions copied in. Once full (W cached before the step), an update rolls the
# keys, then the values (torch.roll: new tensors), writes the token at the end through
# an int64 index tensor [1], copies both back and returns the cache; the rolled tensors
# die as it returns.
fn static_window_cache(k: [b, g, s, d], v: [b, g, s, e], window) {
    if not decoding and s > window {
        k_cache = returned(kv_static(narrow(k, -2, s - window, window), window, false,
                                     positions = false, sliding = true))
        v_cache = returned(kv_static(narrow(v, -2, s - window, window), window, false,
                                     positions = false, sliding = true))
        return k, hold(v, k_cache, v_cache)
    }
    full = decoding and past_length >= window
    k_cache = returned(kv_static(k, window, decoding, positions = not full, sliding = true))
    v_cache = returned(kv_static(v, window, decoding, positions = not full, sliding = true))
    if full {
        rolled_k = roll(k_cache, -1, dim = -2)
        rolled_v = roll(v_cache, -1, dim = -2)
        index = arange(1)                           # torch.tensor([-1])
        v_cache = hold(v_cache, rolled_k, rolled_v, index, v)   # k and v: update's arguments
    }
    return k_cache, hold(v_cache, k)
}
