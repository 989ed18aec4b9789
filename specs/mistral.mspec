# Mistral 7B v0.1 (Hugging Face MistralForCausalLM): the LLaMA decoder (pre-norm RMSNorm,
# no biases, SwiGLU MLP, RoPE, untied LM head) with grouped-query attention 32/8, d_ff
# 14336, and a 4096-token sliding window. The window is a mask: it changes no parameter and,
# in the eager (math) attention that materializes [L, L] scores, no memory either. Member
# names follow HF's state_dict (model.layers.0.self_attn.k_proj.weight, lm_head.weight).
# The layers repeat those of llama.mspec (the rotary pieces are std's HFRotaryEmbedding and
# apply_rotary) so that this file stands alone: `use "llama.mspec"`
# would also bring LLaMA's d_ff default (Meta's 8D/3 rule), which is not Mistral's. Compile:
#   memspec compile specs/mistral.mspec --format md --preset mistral_7b --set B=1
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim num_heads      as H
dim num_kv_heads   as KV
dim d_ff           as F                  # intermediate_size, set by the config (14336)
dim sliding_window as W

# The attention interface with a sliding window. transformers builds the window mask
# when the keys reach the window (t >= W, t = s but in a decode step, where they are the
# cache's; masking_utils skips it below): then `sdpa` (the default) repeats K and V to H
# heads (with a mask SDPA is called without enable_gqa) and passes the mask to torch's
# CPU flash kernel, which saves it as a float [B, 1, L, L]; below it, SDPA runs as
# LLaMA's, with enable_gqa and no mask. `eager` repeats K and V, adds the mask as floats
# and materializes scores and probabilities; `math` is std's masked_fill attention.
fn mistral_attention(q: [b, h, s, d], k: [b, kv, t, d], v: [b, kv, t, d], n_rep, window)
    -> [b, h, s, d]
variant sdpa {
    if static_kv and decoding and static_length >= window {
        # a StaticSlidingWindowLayer's decode step (std's static_window_cache): the query
        # heads packed as below, and the boolean mask over the layer's W positions, which
        # SDPA converts to q's dtype, [b, 1, 1, W], while it runs
        return flash_attention(q, k, v, false, mask_keys = window)
    }
    if t >= window and decoding {
        # a decode step's one query: transformers packs the query heads into the query
        # positions (pack_gqa: [b, kv, h / kv, d], a view) instead of repeating K and V,
        # and SDPA converts the boolean mask to q's dtype, [b, 1, 1, t], while it runs
        return flash_attention(q, k, v, false, mask_keys = t)
    }
    if t >= window {
        k_rep = repeat(k, "b kv t d -> b (kv r) t d", r = n_rep)
        v_rep = repeat(v, "b kv t d -> b (kv r) t d", r = n_rep)
        return flash_attention(q, k_rep, v_rep, true, window)
    }
    return flash_attention(q, k, v, true)
}
variant eager {
    k_rep = repeat(k, "b kv t d -> b (kv r) t d", r = n_rep)
    v_rep = repeat(v, "b kv t d -> b (kv r) t d", r = n_rep)
    return eager_attention(q, k_rep, v_rep, true, window, 0, true)
}
variant math {
    k_rep = repeat(k, "b kv t d -> b (kv r) t d", r = n_rep)
    v_rep = repeat(v, "b kv t d -> b (kv r) t d", r = n_rep)
    return attention(q, k_rep, v_rep, causal = true, window = window)
}

# The mask MistralModel makes once per forward (create_sliding_window_causal_mask), passes
# to every layer and holds until it returns. With sdpa, from the window on (`keys` >= W,
# the keys attention reads: s, or a decode step's cache and token): the bool mask of
# sdpa_mask, one [1, 1, s, keys] expanded over the batch (a view); below it none (the
# position ids stand in: no new memory). With eager a float32 [b, 1, s, s] of 0 and the
# dtype's minimum.
fn hf_window_mask(position_ids: int64[s], b, window, keys = s)
variant sdpa {
    if keys >= window {
        return rearrange(visible(s, keys, window), "q k -> 1 1 q k")
    }
    return position_ids
}
variant eager {
    return shift(repeat(position_ids * 1.0, "t -> b 1 s t", b = b, s = s), 0)
}

# HF MistralAttention: LLaMA's attention, with keys W or more positions back masked out
# (query i sees keys i - W < j <= i). Under --mode inference the cache keeps only the
# window (std's kv_cache with the window: DynamicSlidingWindowLayer).
layer MistralAttention(d_model, num_heads, num_kv_heads, sliding_window) {
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
        # the cache's update(k, v) cats both: k is the caller's until it returns
        k_cached, v_cached = kv_cache_window(k, v, sliding_window)
        o = mistral_attention(q, k_cached, v_cached, n_rep, sliding_window)
        # x, the caller's normed hidden states, and q (query_states, a local) are alive
        # until the attention returns
        return hold(o_proj(rearrange(o, "b h s d -> b s (h d)")), x, q)   # transpose(1, 2).reshape
    }
}

# HF MistralMLP: down_proj(silu(gate_proj(x)) * up_proj(x)).
layer MistralMLP(d_model, d_ff) {
    gate_proj = Linear(d_model, d_ff)
    up_proj   = Linear(d_model, d_ff)
    down_proj = Linear(d_ff, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        # x, the caller's normed hidden states, is alive until the MLP returns
        return hold(down_proj(silu(gate_proj(x)) * up_proj(x)), x)
    }
}

layer MistralDecoderLayer(d_model, num_heads, num_kv_heads, d_ff, sliding_window, eps) {
    input_layernorm          = RMSNorm(d_model, eps, hf = true)
    self_attn                = MistralAttention(d_model, num_heads, num_kv_heads, sliding_window)
    post_attention_layernorm = RMSNorm(d_model, eps, hf = true)
    mlp                      = MistralMLP(d_model, d_ff)
    forward(x: [b, s, d_model], cos: [r, 1, s, hd], sin: [r, 1, s, hd], position_ids: int64[s],
            mask) -> [b, s, d_model] {
        # the layer's keyword arguments (position_ids, attention_mask): a checkpoint of the
        # layer keeps them with its inputs
        held = hold(x, position_ids, mask)
        x = held + self_attn(input_layernorm(held), cos, sin)
        # the model's loop holds the layer's input (hidden_states) until the layer returns
        return hold(x + mlp(post_attention_layernorm(x)), held)
    }
}

layer MistralModel(vocab_size, d_model, num_layers, num_heads, num_kv_heads, d_ff,
                   sliding_window, eps = 1e-5, theta = 10000) {
    embed_tokens = Embedding(vocab_size, d_model)
    layers       = repeat num_layers of MistralDecoderLayer(d_model, num_heads, num_kv_heads,
                                                            d_ff, sliding_window, eps)
    norm         = RMSNorm(d_model, eps, hf = true)
    rotary_emb   = HFRotaryEmbedding(d_model / num_heads, theta)
    forward(tokens: int64[b, s]) -> [b, s, d_model] {
        inputs_embeds = embed_tokens(tokens)
        inputs_embeds = hf_input_embeds(inputs_embeds)
        if hf_generate {
            # transformers' generate passes its own position ids, [b, s] int64: generate's
            # tensors, counted with its bookkeeping (as in llama.mspec); a view of the
            # tokens stands for them; the rotary tables are [b, s, d]
            position_ids = select(tokens, 0, 0)
            rows = b
        } else {
            position_ids = arange(s)  # arange(s) + past_seen_tokens (0), unsqueezed: one [s]
            rows = 1
        }
        keys = s
        if static_kv and static_length >= sliding_window {
            # StaticSlidingWindowLayers: generate passes the mask it made (std's
            # static_window_cache); the forward makes none
            keys = 0
        }
        if decoding and keys > 0 {
            # a decode step's keys: the cache's last W - 1 positions at most, and the token
            keys = past_length + s
            if past_length >= sliding_window - 1 { keys = sliding_window - 1 + s }
        }
        mask = hf_window_mask(position_ids, b, sliding_window, keys)
        rope_cos, rope_sin = hf_rotary_tables(rotary_emb.inv_freq, position_ids,
                                              inputs_embeds, rows)
        x = layers(inputs_embeds, rope_cos, rope_sin, position_ids, mask)
        # locals until the forward returns
        return hold(norm(x), position_ids, mask, inputs_embeds)
    }
}

model MistralForCausalLM {
    model   = MistralModel(V, D, N, H, KV, F, W)
    lm_head = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        logits = lm_head(model(tokens))        : [B, L, V]
        logits = returned(logits)              # in the outputs object (--keep-outputs)
        return cross_entropy(logits, hf_shift_labels(targets))   # labels = input_ids
    }
    # --mode inference: a serving loop's call, model(input_ids, past_key_values=cache,
    # logits_to_keep=1) under torch.no_grad(), L tokens of them (the prompt, then one): the
    # head on the last position only ([B, 1, V], a view of the hidden states' last row)
    generate(tokens: int64[B, L]) {
        hidden = model(tokens)
        return returned(lm_head(narrow(hidden, 1, L - 1, 1)))
    }
}

# Tensor parallelism (--tp N), as for LLaMA: Megatron's attention and MLP, a
# vocab-parallel embedding, the LM head's logits sharded into the loss.
tp_plan MistralAttention { q_proj colwise; k_proj colwise; v_proj colwise; o_proj rowwise }
tp_plan MistralMLP { gate_proj colwise; up_proj colwise; down_proj rowwise }
tp_plan MistralModel { embed_tokens vocab_parallel }
tp_plan MistralForCausalLM { lm_head loss_parallel }

# --hf-config: transformers' MistralConfig. A null sliding_window (Mistral-7B-v0.2 on) is
# no window: the context's length. head_dim is hidden_size / num_attention_heads here.
hf_config "mistral" {
    V = vocab_size, D = hidden_size, N = num_hidden_layers, H = num_attention_heads
    KV = default(num_key_value_heads, num_attention_heads), F = intermediate_size
    L = max_position_embeddings
    W = default(sliding_window, max_position_embeddings)
    require default(head_dim, hidden_size / num_attention_heads)
            == hidden_size / num_attention_heads
    require not default(tie_word_embeddings, false)
}

# mistralai/Mistral-7B-v0.1 config.json (max_position_embeddings 32768; the paper trains
# with an 8192-token context, which makes the 4096 window bite). The count is
# sum(p.numel() for p in model.parameters()) of the HF model.
preset mistral_7b { V = 32_000, L = 8_192, D = 4_096, N = 32, H = 32, KV = 8, F = 14_336,
                    W = 4_096 }

# Embedding and head (2VD), final norm (D); per layer q and o (D^2 each), k and v
# (D * KV * D/H each), the three SwiGLU matrices (3DF) and two norms (2D). No W.
expect params == 2*V*D + D + N*(2*D**2 + 2*D*KV*(D/H) + 3*D*F + 2*D)
expect params == 7_241_732_096 at mistral_7b

assume "HF MistralForCausalLM: the LLaMA block; no biases anywhere; pre-norm RMSNorm, weight only, eps 1e-5; untied lm_head"
assume "GQA 32/8 at mistral_7b: k_proj and v_proj are D x KV*D/H, a quarter of q_proj; with the window mask transformers' SDPA call does not use enable_gqa, so repeat_kv copies K and V to H heads"
assume "sliding window: at L >= W (the preset's 8192 >= 4096) transformers builds the mask (query i sees keys i - W < j <= i) and SDPA's CPU flash kernel saves it as a float [B, 1, L, L] per layer; at L < W it skips the mask and the step is LLaMA's (SDPA with enable_gqa); --use eager / math materialize the [B, H, L, L] scores"
assume "rotary embedding as HF computes it: inv_freq and original_inv_freq [d_k/2] are buffers; cos and sin [1, L, d_k] are made once per forward without gradient and saved, once, by every layer's q and k products"
assume "no dropout (attention_dropout = 0); targets are HF's labels (the input ids): the loss pads them by one ignored position and shifts them, a contiguous copy saved by nll_loss (a view of the padded labels at B = 1)"
assume "the weights ship in bf16, but the spec trains in fp32 unless --precision says otherwise; under bf16 HF's eager path upcasts RMSNorm, softmax and the logits to fp32, which the spec does not model"

train { precision fp32; optimizer adamw; use sdpa }
