# Mixtral 8x7B v0.1 as transformers 4.x wrote it (one nn.Module per expert, the eager loop):
# specs/mixtral.mspec follows transformers 5.x (3-D experts, grouped_mm). A test fixture of
# `route` over an expert bank. Mistral's decoder (pre-norm RMSNorm,
# no biases, RoPE, grouped-query attention 32/8, untied LM head) in which every MLP is a
# sparse mixture of experts: a router `gate` (D -> E, no bias), softmax over the E experts,
# the top k = 2 weights renormalized, and E = 8 SwiGLU experts (w1 gate, w3 up, w2 down),
# each applied to the tokens routed to it, weighted and added back (HF's
# MixtralSparseMoeBlock). The expert bank is an ordinary `repeat num_experts of ...`: one
# region of multiplicity E, so the experts' parameters, gradients and optimizer state exist
# E times; `route(...)` runs it on routed token slots, k*B*L/E per expert under balanced
# routing. Unlike Mistral 7B v0.1, Mixtral's config has no sliding window
# (sliding_window: null): attention is plain causal. Member names follow HF's state_dict
# (model.layers.0.block_sparse_moe.experts.3.w1.weight, lm_head.weight). Compile:
#   memspec compile tests/specs/mixtral_per_expert.mspec --format md --preset mixtral_8x7b --set B=1
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim num_heads      as H
dim num_kv_heads   as KV
dim d_ff           as F                  # intermediate_size, each expert's width (14336)
dim num_experts    as E                  # num_local_experts
dim top_k          as k                  # num_experts_per_tok

# HF MixtralAttention (eager): Mistral's attention without a window.
layer MixtralAttention(d_model, num_heads, num_kv_heads) {
    let head_dim = d_model / num_heads
    let n_rep = num_heads / num_kv_heads
    q_proj = Linear(d_model, num_heads * head_dim)
    k_proj = Linear(d_model, num_kv_heads * head_dim)
    v_proj = Linear(d_model, num_kv_heads * head_dim)
    o_proj = Linear(num_heads * head_dim, d_model)
    # cos, sin: the model's rotary tables (MixtralModel.rotary_emb), shared by every layer.
    forward(x: [b, s, d_model], cos: [t, half], sin: [t, half]) -> [b, s, d_model] {
        q = rope(rearrange(q_proj(x), "b s (h d) -> b h s d", h = num_heads), cos, sin)
        k = rope(rearrange(k_proj(x), "b s (h d) -> b h s d", h = num_kv_heads), cos, sin)
        v = rearrange(v_proj(x), "b s (h d) -> b h s d", h = num_kv_heads)
        # repeat_kv: expand + reshape, a real copy of K and V (n_rep = 4 at Mixtral 8x7B).
        k_rep = repeat(k, "b kv s d -> b (kv r) s d", r = n_rep)   : [b, num_heads, s, head_dim]
        v_rep = repeat(v, "b kv s d -> b (kv r) s d", r = n_rep)   : [b, num_heads, s, head_dim]
        o = attention(q, k_rep, v_rep, causal = true)
        return o_proj(rearrange(o, "b h s d -> b s (h d)"))   # transpose + reshape: a copy
    }
}

# HF MixtralBlockSparseTop2MLP, one expert: w2(silu(w1(x)) * w3(x)) on its routed tokens.
layer MixtralBlockSparseTop2MLP(d_model, d_ff) {
    w1 = Linear(d_model, d_ff)
    w2 = Linear(d_ff, d_model)
    w3 = Linear(d_model, d_ff)
    forward(x: [t, d_model]) -> [t, d_model] {
        return w2(silu(w1(x)) * w3(x))
    }
}

# HF MixtralSparseMoeBlock: the router, then the experts on the tokens routed to them.
layer MixtralSparseMoeBlock(d_model, d_ff, num_experts, top_k) {
    gate    = Linear(d_model, num_experts)
    experts = repeat num_experts of MixtralBlockSparseTop2MLP(d_model, d_ff)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        hidden_states = rearrange(x, "b s d -> (b s) d")                # a view
        router_logits = gate(hidden_states)                 : [b * s, num_experts]
        probs = softmax(router_logits)                      # F.softmax(..., dtype=float)
        top_weights, selected_experts = topk(probs, top_k)
        # routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        weight_sum = einsum(top_weights, "t c -> t")
        routing_weights = top_weights / rearrange(weight_sum, "t -> t 1")
        out = route(experts, hidden_states, routing_weights, selected_experts)
        return rearrange(out, "(b s) d -> b s d", b = b)                # a view
    }
}

layer MixtralDecoderLayer(d_model, num_heads, num_kv_heads, d_ff, num_experts, top_k, eps) {
    input_layernorm          = RMSNorm(d_model, eps)
    self_attn                = MixtralAttention(d_model, num_heads, num_kv_heads)
    post_attention_layernorm = RMSNorm(d_model, eps)
    block_sparse_moe         = MixtralSparseMoeBlock(d_model, d_ff, num_experts, top_k)
    forward(x: [b, s, d_model], cos: [t, half], sin: [t, half]) -> [b, s, d_model] {
        x = x + self_attn(input_layernorm(x), cos, sin)
        return x + block_sparse_moe(post_attention_layernorm(x))
    }
}

layer MixtralModel(vocab_size, d_model, num_layers, num_heads, num_kv_heads, d_ff,
                   num_experts, top_k, max_len, eps = 1e-5, theta = 1000000) {
    embed_tokens = Embedding(vocab_size, d_model)
    layers       = repeat num_layers of MixtralDecoderLayer(d_model, num_heads, num_kv_heads,
                                                            d_ff, num_experts, top_k, eps)
    norm         = RMSNorm(d_model, eps)
    rotary_emb   = RoPE(d_model / num_heads, max_len, theta)
    forward(tokens: int64[b, s]) -> [b, s, d_model] {
        x = layers(embed_tokens(tokens), rotary_emb.cos, rotary_emb.sin)
        return norm(x)
    }
}

model MixtralForCausalLM {
    model   = MixtralModel(V, D, N, H, KV, F, E, k, L)
    lm_head = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        logits = lm_head(model(tokens))        : [B, L, V]
        return cross_entropy(logits, targets)
    }
}

# mistralai/Mixtral-8x7B-v0.1 config.json: num_local_experts 8, num_experts_per_tok 2,
# max_position_embeddings 32768, the context the paper trains with ("a fully dense context
# length of 32k tokens"). The counts are sum(p.numel() for p in model.parameters()) of the
# HF model, and the same with only k of every layer's E experts.
preset mixtral_8x7b { V = 32_000, L = 32_768, D = 4_096, N = 32, H = 32, KV = 8, F = 14_336,
                      E = 8, k = 2 }

# Embedding and head (2VD), final norm (D); per layer q and o (D^2 each), k and v
# (D * KV * D/H each), the router (DE), E experts of three matrices (3DF each) and two norms.
expect params == 2*V*D + D + N*(2*D**2 + 2*D*KV*(D/H) + D*E + 3*D*F*E + 2*D)
expect params == 46_702_792_704 at mixtral_8x7b
# Active: a token passes through k of the E experts; everything else it uses in full.
expect active_params == 2*V*D + D + N*(2*D**2 + 2*D*KV*(D/H) + D*E + 3*D*F*k + 2*D)
expect active_params == 12_879_925_248 at mixtral_8x7b

assume "HF MixtralForCausalLM: Mistral's block with a sparse MoE MLP; no biases anywhere (gate and experts included); pre-norm RMSNorm, weight only, eps 1e-5; untied lm_head"
assume "no sliding window: Mixtral-8x7B-v0.1's config has sliding_window null, so attention is plain causal over L and the fused (flash) variant applies"
assume "balanced routing: every expert receives k*B*L/E of the k*B*L token slots (E divides k*B*L); no capacity factor, no token dropping, no padding; real routing is uneven and its per-expert sizes vary step to step"
assume "verify's lowering keeps the router (gate, softmax, top-k, renormalization: their saved tensors exist) but replaces its choice of experts by the balanced assignment slot t*k + j -> expert (t*k + j) mod E, so measured sizes equal the prediction"
assume "each expert runs HF's eager loop body: torch.where on the one-hot mask (idx and top_x, one int64 [2, k*B*L/E] storage), hidden_states[top_x] (a copy), the SwiGLU, times routing_weights[top_x, idx, None], index_add_ into a zeros [B*L, D] buffer (which saves top_x and its source)"
assume "router softmax in fp32 as HF's dtype=torch.float: the activation dtype under fp32 training; under bf16 precisions the spec keeps the router in the activation dtype"
assume "no auxiliary load-balancing loss: output_router_logits is false by default, so router_aux_loss_coef (0.02) adds nothing to the training step and the router logits are not kept beyond the softmax"
assume "RoPE (rope_theta 1e6): one std RoPE layer at model.rotary_emb whose cos/sin tables [L, d_k/2] are a buffer shared by all layers; HF keeps only inv_freq and recomputes cos/sin each forward"
assume "no dropout (attention_dropout = 0, router_jitter_noise = 0); targets are the next tokens, given pre-shifted"
assume "the weights ship in bf16, but the spec trains in fp32 unless --precision says otherwise"

train { precision fp32; optimizer adamw; use math }
