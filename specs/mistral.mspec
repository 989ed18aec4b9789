# Mistral 7B v0.1 (Hugging Face MistralForCausalLM): the LLaMA decoder (pre-norm RMSNorm,
# no biases, SwiGLU MLP, RoPE, untied LM head) with grouped-query attention 32/8, d_ff
# 14336, and a 4096-token sliding window. The window is a mask: it changes no parameter and,
# in the eager (math) attention that materializes [L, L] scores, no memory either. Member
# names follow HF's state_dict (model.layers.0.self_attn.k_proj.weight, lm_head.weight).
# The layers repeat those of llama.mspec so that this file stands alone: `use "llama.mspec"`
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

# HF MistralAttention (eager): LLaMA's attention, with keys more than W - 1 positions back
# masked out (query i sees keys i - W < j <= i).
layer MistralAttention(d_model, num_heads, num_kv_heads, sliding_window) {
    let head_dim = d_model / num_heads
    let n_rep = num_heads / num_kv_heads
    q_proj = Linear(d_model, num_heads * head_dim)
    k_proj = Linear(d_model, num_kv_heads * head_dim)
    v_proj = Linear(d_model, num_kv_heads * head_dim)
    o_proj = Linear(num_heads * head_dim, d_model)
    # cos, sin: the model's rotary tables (MistralModel.rotary_emb), shared by every layer.
    forward(x: [b, s, d_model], cos: [t, half], sin: [t, half]) -> [b, s, d_model] {
        q = rope(rearrange(q_proj(x), "b s (h d) -> b h s d", h = num_heads), cos, sin)
        k = rope(rearrange(k_proj(x), "b s (h d) -> b h s d", h = num_kv_heads), cos, sin)
        v = rearrange(v_proj(x), "b s (h d) -> b h s d", h = num_kv_heads)
        # repeat_kv: expand + reshape, a real copy of K and V (n_rep = 4 at Mistral 7B).
        k_rep = repeat(k, "b kv s d -> b (kv r) s d", r = n_rep)   : [b, num_heads, s, head_dim]
        v_rep = repeat(v, "b kv s d -> b (kv r) s d", r = n_rep)   : [b, num_heads, s, head_dim]
        o = attention(q, k_rep, v_rep, causal = true, window = sliding_window)
        return o_proj(rearrange(o, "b h s d -> b s (h d)"))   # transpose + reshape: a copy
    }
}

# HF MistralMLP: down_proj(silu(gate_proj(x)) * up_proj(x)).
layer MistralMLP(d_model, d_ff) {
    gate_proj = Linear(d_model, d_ff)
    up_proj   = Linear(d_model, d_ff)
    down_proj = Linear(d_ff, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        return down_proj(silu(gate_proj(x)) * up_proj(x))
    }
}

layer MistralDecoderLayer(d_model, num_heads, num_kv_heads, d_ff, sliding_window, eps) {
    input_layernorm          = RMSNorm(d_model, eps)
    self_attn                = MistralAttention(d_model, num_heads, num_kv_heads, sliding_window)
    post_attention_layernorm = RMSNorm(d_model, eps)
    mlp                      = MistralMLP(d_model, d_ff)
    forward(x: [b, s, d_model], cos: [t, half], sin: [t, half]) -> [b, s, d_model] {
        x = x + self_attn(input_layernorm(x), cos, sin)
        return x + mlp(post_attention_layernorm(x))
    }
}

layer MistralModel(vocab_size, d_model, num_layers, num_heads, num_kv_heads, d_ff,
                   sliding_window, max_len, eps = 1e-5, theta = 10000) {
    embed_tokens = Embedding(vocab_size, d_model)
    layers       = repeat num_layers of MistralDecoderLayer(d_model, num_heads, num_kv_heads,
                                                            d_ff, sliding_window, eps)
    norm         = RMSNorm(d_model, eps)
    rotary_emb   = RoPE(d_model / num_heads, max_len, theta)
    forward(tokens: int64[b, s]) -> [b, s, d_model] {
        x = layers(embed_tokens(tokens), rotary_emb.cos, rotary_emb.sin)
        return norm(x)
    }
}

model MistralForCausalLM {
    model   = MistralModel(V, D, N, H, KV, F, W, L)
    lm_head = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        logits = lm_head(model(tokens))        : [B, L, V]
        return cross_entropy(logits, targets)
    }
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
assume "GQA 32/8 at mistral_7b: k_proj and v_proj are D x KV*D/H, a quarter of q_proj; eager repeat_kv copies K and V to H heads, and the score and value matmuls save those expanded copies"
assume "sliding window W: a mask on the [L, L] scores (query i sees keys i - W < j <= i, HF's sliding_window_overlay); no parameter depends on W, and the scores and probabilities stay [B, H, L, L] in memory"
assume "attention variant math only (HF's eager path): memspec's fused flash_attention takes no window, so --use flash is refused; HF's sdpa and flash-attn paths, which handle the window, are not modelled"
assume "RoPE (theta 10000): one std RoPE layer at model.rotary_emb whose cos/sin tables [L, d_k/2] are a buffer shared by all layers; HF keeps only inv_freq [d_k/2] and recomputes cos/sin [1, L, d_k] each forward (saved by its rope multiplications); memspec's rope pairs features (even, odd) where HF rotates halves: the same memory"
assume "the sliding-window causal mask is a bool [L, L] per layer saved by masked_fill; HF adds one float [B, 1, L, L] mask built per forward, which autograd does not save"
assume "no dropout (attention_dropout = 0); targets are the next tokens, given pre-shifted: HF shifts the labels inside its loss and ignores the last position, the same memory"
assume "the weights ship in bf16, but the spec trains in fp32 unless --precision says otherwise; under bf16 HF's eager path upcasts RMSNorm, softmax and the logits to fp32, which the spec does not model"

train { precision fp32; optimizer adamw; use math }
