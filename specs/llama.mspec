# LLaMA-2 (Hugging Face LlamaForCausalLM): pre-norm decoder blocks with RMSNorm (weight
# only), no biases anywhere, a SwiGLU MLP (gate_proj = w1, up_proj = w3, down_proj = w2),
# grouped-query attention with rotary embeddings on q and k, a final RMSNorm and an untied
# LM head. Member names follow HF's state_dict: model.layers.0.self_attn.q_proj.weight,
# lm_head.weight. d_ff follows Meta's rule, 8D/3 rounded up to a multiple of 256. Compile:
#   memspec compile specs/llama.mspec --format md --preset llama2_7b --set B=1
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim num_heads      as H
dim num_kv_heads   as KV
# Meta's FeedForward: hidden = int(2 * 4D / 3), rounded up to a multiple of 256 (11008 at
# D = 4096, 13824 at D = 5120). LLaMA-2 70B scales by ffn_dim_multiplier; its preset binds F.
dim d_ff           as F = 256 * ceil(floor(8 * D / 3) / 256)     # multiple_of = 256

# HF LlamaAttention (eager): q, k, v projections viewed as heads, RoPE on q and k, K and V
# repeated to num_heads heads (repeat_kv), softmax(q k^T / sqrt(d)) v, o_proj.
layer LlamaAttention(d_model, num_heads, num_kv_heads) {
    let head_dim = d_model / num_heads
    let n_rep = num_heads / num_kv_heads
    q_proj = Linear(d_model, num_heads * head_dim)
    k_proj = Linear(d_model, num_kv_heads * head_dim)
    v_proj = Linear(d_model, num_kv_heads * head_dim)
    o_proj = Linear(num_heads * head_dim, d_model)
    # cos, sin: the model's rotary tables (LlamaModel.rotary_emb), shared by every layer.
    forward(x: [b, s, d_model], cos: [t, half], sin: [t, half]) -> [b, s, d_model] {
        q = rope(rearrange(q_proj(x), "b s (h d) -> b h s d", h = num_heads), cos, sin)
        k = rope(rearrange(k_proj(x), "b s (h d) -> b h s d", h = num_kv_heads), cos, sin)
        v = rearrange(v_proj(x), "b s (h d) -> b h s d", h = num_kv_heads)
        # repeat_kv: expand + reshape, a real copy when n_rep > 1 (a view when n_rep = 1).
        k_rep = repeat(k, "b kv s d -> b (kv r) s d", r = n_rep)   : [b, num_heads, s, head_dim]
        v_rep = repeat(v, "b kv s d -> b (kv r) s d", r = n_rep)   : [b, num_heads, s, head_dim]
        o = attention(q, k_rep, v_rep, causal = true)
        return o_proj(rearrange(o, "b h s d -> b s (h d)"))   # transpose + reshape: a copy
    }
}

# HF LlamaMLP: down_proj(silu(gate_proj(x)) * up_proj(x)).
layer LlamaMLP(d_model, d_ff) {
    gate_proj = Linear(d_model, d_ff)
    up_proj   = Linear(d_model, d_ff)
    down_proj = Linear(d_ff, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        return down_proj(silu(gate_proj(x)) * up_proj(x))
    }
}

layer LlamaDecoderLayer(d_model, num_heads, num_kv_heads, d_ff, eps) {
    input_layernorm          = RMSNorm(d_model, eps)
    self_attn                = LlamaAttention(d_model, num_heads, num_kv_heads)
    post_attention_layernorm = RMSNorm(d_model, eps)
    mlp                      = LlamaMLP(d_model, d_ff)
    forward(x: [b, s, d_model], cos: [t, half], sin: [t, half]) -> [b, s, d_model] {
        x = x + self_attn(input_layernorm(x), cos, sin)
        return x + mlp(post_attention_layernorm(x))
    }
}

# HF LlamaModel: embeddings, the decoder stack, the final norm, one rotary embedding.
layer LlamaModel(vocab_size, d_model, num_layers, num_heads, num_kv_heads, d_ff, max_len,
                 eps = 1e-5, theta = 10000) {
    embed_tokens = Embedding(vocab_size, d_model)
    layers       = repeat num_layers of LlamaDecoderLayer(d_model, num_heads, num_kv_heads,
                                                          d_ff, eps)
    norm         = RMSNorm(d_model, eps)
    rotary_emb   = RoPE(d_model / num_heads, max_len, theta)
    forward(tokens: int64[b, s]) -> [b, s, d_model] {
        x = layers(embed_tokens(tokens), rotary_emb.cos, rotary_emb.sin)
        return norm(x)
    }
}

model LlamaForCausalLM {
    model   = LlamaModel(V, D, N, H, KV, F, L)
    lm_head = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        logits = lm_head(model(tokens))        : [B, L, V]
        return cross_entropy(logits, targets)
    }
}

# meta-llama/Llama-2-{7b,13b,70b}-hf config.json; the counts are sum(p.numel() for p in
# model.parameters()) of the HF models (70B: ffn_dim_multiplier 1.3, multiple_of 4096).
preset llama2_7b  { V = 32_000, L = 4_096, D = 4_096, N = 32, H = 32, KV = 32, F = 11_008 }
preset llama2_13b { V = 32_000, L = 4_096, D = 5_120, N = 40, H = 40, KV = 40, F = 13_824 }
preset llama2_70b { V = 32_000, L = 4_096, D = 8_192, N = 80, H = 64, KV = 8,  F = 28_672 }

# Embedding and head (2VD), final norm (D); per layer q and o (D^2 each), k and v
# (D * KV * D/H each), the three SwiGLU matrices (3DF) and two norms (2D).
expect params == 2*V*D + D + N*(2*D**2 + 2*D*KV*(D/H) + 3*D*F + 2*D)
expect params == 6_738_415_616 at llama2_7b
expect params == 13_015_864_320 at llama2_13b
expect params == 68_976_648_192 at llama2_70b

assume "HF LlamaForCausalLM: no biases anywhere (attention_bias = mlp_bias = false); pre-norm RMSNorm, weight only, eps 1e-5; untied lm_head"
assume "GQA: k_proj and v_proj are D x KV*D/H, smaller than q_proj by H/KV; eager repeat_kv copies K and V to H heads, and the score and value matmuls save those expanded copies"
assume "at KV = H (7B, 13B) repeat_kv is a no-op, yet the math products still save [B, H, L, d_k] K and V (the value product copies the transposed V): the same bytes; memspec decides the copy on symbolic sizes, so with KV = 1 (MQA, not a LLaMA-2 shape) and --use flash it over-counts K and V by a factor H"
assume "RoPE (theta 10000): one std RoPE layer at model.rotary_emb whose cos/sin tables [L, d_k/2] are a buffer shared by all layers; HF keeps only inv_freq [d_k/2] and recomputes cos/sin [1, L, d_k] each forward (saved by its rope multiplications); memspec's rope pairs features (even, odd) where HF rotates halves: the same memory"
assume "attention variant math is HF's eager path (scores and probabilities [B, H, L, L] materialized and saved); --use flash is torch's fused scaled_dot_product_attention, which stores neither"
assume "the causal mask is a bool [L, L] per layer saved by masked_fill; HF adds one float [B, 1, L, L] mask built per forward, which autograd does not save"
assume "no dropout (attention_dropout = 0); targets are the next tokens, given pre-shifted: HF shifts the labels inside its loss and ignores the last position, the same memory"
assume "the weights ship in fp16/bf16, but the spec trains in fp32 unless --precision says otherwise; under bf16 HF's eager path upcasts RMSNorm, softmax and the logits to fp32, which the spec does not model"

train { precision fp32; optimizer adamw; use math }
