# LLaMA-2 (Hugging Face LlamaForCausalLM): pre-norm RMSNorm blocks, no biases, SwiGLU MLP
# (gate_proj = w1, up_proj = w3, down_proj = w2), grouped-query attention with RoPE, untied
# LM head. d_ff follows Meta's rule: 8D/3 rounded up to a multiple of 256.
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim num_heads      as H
dim num_kv_heads   as KV
dim d_ff           as F = 256 * ceil(floor(8 * D / 3) / 256)

layer LlamaAttention(d_model, num_heads, num_kv_heads, max_len, window = 0, theta = 10000) {
    let head_dim = d_model / num_heads
    q_proj = Linear(d_model, num_heads * head_dim)
    k_proj = Linear(d_model, num_kv_heads * head_dim)
    v_proj = Linear(d_model, num_kv_heads * head_dim)
    o_proj = Linear(num_heads * head_dim, d_model)
    rotary = RoPE(head_dim, max_len, theta)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        q = rotary(rearrange(q_proj(x), "b s (h d) -> b h s d", h = num_heads))
        k = rotary(rearrange(k_proj(x), "b s (h d) -> b h s d", h = num_kv_heads))
        v = rearrange(v_proj(x), "b s (h d) -> b h s d", h = num_kv_heads)
        # HF's repeat_kv: expand each K/V head to num_heads / num_kv_heads query heads (a copy).
        k_rep = repeat(k, "b kv s d -> b (kv r) s d", r = num_heads / num_kv_heads)
        v_rep = repeat(v, "b kv s d -> b (kv r) s d", r = num_heads / num_kv_heads)
        o = attention(q, k_rep, v_rep, window = window)     # window > 0: Mistral's sliding window
        return o_proj(rearrange(o, "b h s d -> b s (h d)"))
    }
}

layer LlamaMLP(d_model, d_ff) {
    gate_proj = Linear(d_model, d_ff)
    up_proj   = Linear(d_model, d_ff)
    down_proj = Linear(d_ff, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        gated = silu(gate_proj(x)) * up_proj(x)
        return down_proj(gated)
    }
}

layer LlamaDecoderLayer(d_model, num_heads, num_kv_heads, d_ff, max_len, window = 0) {
    input_layernorm          = RMSNorm(d_model, 1e-5)
    self_attn                = LlamaAttention(d_model, num_heads, num_kv_heads, max_len, window)
    post_attention_layernorm = RMSNorm(d_model, 1e-5)
    mlp                      = LlamaMLP(d_model, d_ff)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        x = x + self_attn(input_layernorm(x))
        return x + mlp(post_attention_layernorm(x))
    }
}

model LlamaForCausalLM {
    embed_tokens = Embedding(V, D)
    layers       = repeat N of LlamaDecoderLayer(D, H, KV, F, L)
    norm         = RMSNorm(D, 1e-5)
    lm_head      = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        x = layers(embed_tokens(tokens))
        logits = lm_head(norm(x))       : [B, L, V]
        return cross_entropy(logits, targets)
    }
}

preset llama2_7b { V = 32_000, L = 4_096, D = 4_096, N = 32, H = 32, KV = 32, F = 11_008 }
expect params == 2*V*D + N*(2*D**2 + 2*D**2*KV/H + 3*D*F + 2*D) + D
expect params == 6_738_415_616 at llama2_7b

assume "no biases anywhere; pre-norm RMSNorm (weight only); untied lm_head"
assume "GQA: K and V projections have num_kv_heads heads; repeat_kv materializes expanded copies"
assume "RoPE cos/sin tables as a buffer per layer (HF recomputes them from a d_k/2 inv_freq buffer)"
assume "trained in fp32 unless --precision says otherwise (the weights ship in fp16/bf16)"
train { use math }
