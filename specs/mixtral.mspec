# Mixtral 8x7B v0.1 (Hugging Face MixtralForCausalLM, transformers 5.x): Mistral's decoder
# (pre-norm RMSNorm, no biases, RoPE, grouped-query attention 32/8, untied LM head) in which
# every MLP is a sparse mixture of experts: a router `gate` (D -> E, no bias), softmax over
# the E experts, the top k = 2 weights renormalized, and E = 8 SwiGLU experts stored as two
# 3-D parameters per layer (gate_up_proj [E, 2F, D]: w1 and w3 stacked; down_proj
# [E, D, F]: w2). transformers runs them with `grouped_mm` by default: the k*B*L
# (token, choice) pairs sorted by expert, one grouped product per projection, the weighted
# outputs put back in token order and summed over the k choices. Every tensor it makes has
# k*B*L, B*L or E rows whichever experts the router picks, so the memory does not depend on
# the routing. Mixtral's config has no sliding window (sliding_window: null): attention is
# plain causal, LLaMA's (std.transformers.llama); under --mode inference the generate
# block runs it with the caches as llama.mspec does. Member names follow HF's state_dict
# (model.layers.0.mlp.experts.gate_up_proj, model.layers.0.mlp.gate.weight,
# lm_head.weight). Compile:
#   memspec compile specs/mixtral.mspec --format md --preset mixtral_8x7b --set B=1
use std
use std.transformers.llama   # LlamaAttention: HF's MixtralAttention, at Mixtral's config

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

# HF MixtralExperts with transformers' grouped_mm_experts_forward (integrations/moe.py). Its
# locals live until it returns: `hold` keeps the sorted ids and histc's float input and
# counts to the end, as Python does.
layer MixtralExperts(d_model, d_ff, num_experts) {
    param gate_up_proj: [num_experts, 2 * d_ff, d_model]
    param down_proj: [num_experts, d_model, d_ff]
    forward(x: [t, d_model], top_k_index: int64[t, c], top_k_weights: [t, c]) -> [t, d_model] {
        sample_weights = rearrange(top_k_weights, "t c -> (t c)")            # views
        expert_ids = rearrange(top_k_index, "t c -> (t c)")
        expert_ids_g, perm = sort(expert_ids)
        selected = index(x, floor_divide(perm, c))                          # saves perm // k
        sample_weights_g = index(sample_weights, perm)                      # saves perm
        histc_input = expert_ids_g * 1.0                                    # .float()
        tokens_per_expert = expert_counts(histc_input, num_experts)         # histc
        offsets = expert_offsets(tokens_per_expert)                         # int32 cumsum
        gate, up = chunk(grouped_mm(selected, gate_up_proj, offsets, c), 2, dim = -1)
        out = grouped_mm(silu(gate) * up, down_proj, offsets, c)
        weighted = out * rearrange(sample_weights_g, "s -> s 1")
        inv_perm = inverse_permutation(perm, arange(t * c))
        restored = index(weighted, inv_perm)                                # saves inv_perm
        # in float32 (the float32 routing weights promote the product), then x's dtype
        final = type_as(einsum(rearrange(restored, "(t c) d -> t c d", c = c), "t c d -> t d"), x)
        # proj_out (the down projection's output), selected_hidden_states_g and offsets
        # are locals too
        return hold(final, expert_ids_g, histc_input, tokens_per_expert, out, selected,
                    offsets)
    }
}

# HF MixtralTopKRouter's weight: a module of its own, not an nn.Linear, so --weights
# (bitsandbytes, FP8Linear) and --lora's all-linear leave it, as transformers and PEFT do.
layer MixtralTopKRouter(d_model, num_experts) {
    param weight: [num_experts, d_model]
    forward(x: [t, d_model]) -> [t, num_experts] {
        return linear(x, weight)
    }
}

# HF MixtralSparseMoeBlock: the router (MixtralTopKRouter: logits, softmax in float32, a
# no-op under fp32 training; the top k, renormalized in place: in training div_ saves a
# clone of the top values and the sum, under --mode inference it writes them in place),
# then the experts on every (token, choice) pair.
layer MixtralSparseMoeBlock(d_model, d_ff, num_experts, top_k) {
    gate    = MixtralTopKRouter(d_model, num_experts)
    experts = MixtralExperts(d_model, d_ff, num_experts)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        hidden_states = rearrange(x, "b s d -> (b s) d")                # a view
        router_logits = gate(hidden_states)                 : [b * s, num_experts]
        # softmax(router_logits.float()): the weights in float32 whatever the model's dtype
        probs = softmax(to_dtype(router_logits, "float32"))
        top_value, top_k_index = topk(probs, top_k)
        weight_sum = einsum(top_value, "t c -> t")
        if generating {
            top_k_weights = div_(top_value, rearrange(weight_sum, "t -> t 1"))
        } else {
            top_k_weights = top_value / rearrange(weight_sum, "t -> t 1")
        }
        out = experts(hidden_states, top_k_index, top_k_weights)
        # `_, top_k_weights, top_k_index = self.gate(...)`: the logits, the weights and the
        # indices stay alive as locals until the block returns, as does x, the caller's
        out = hold(out, router_logits, top_k_weights, top_k_index, x)
        return rearrange(out, "(b s) d -> b s d", b = b)                # a view
    }
}

layer MixtralDecoderLayer(d_model, num_heads, num_kv_heads, d_ff, num_experts, top_k, eps) {
    input_layernorm          = RMSNorm(d_model, eps, hf = true)
    self_attn                = LlamaAttention(d_model, num_heads, num_kv_heads)
    post_attention_layernorm = RMSNorm(d_model, eps, hf = true)
    mlp                      = MixtralSparseMoeBlock(d_model, d_ff, num_experts, top_k)
    forward(x: [b, s, d_model], cos: [r, 1, s, hd], sin: [r, 1, s, hd], position_ids: int64[s],
            mask) -> [b, s, d_model] {
        # the layer's keyword arguments (position_ids, attention_mask) and its input
        # (hidden_states, the model loop's) are alive until it returns
        held = hold(x, position_ids, mask)
        x = held + self_attn(input_layernorm(held), cos, sin)
        return hold(x + mlp(post_attention_layernorm(x)), held)
    }
}

# HF MixtralModel: embeddings, the position ids and the causal mask, one rotary table per
# forward, the decoder stack, the norm; the ids and the mask are locals until it returns.
layer MixtralModel(vocab_size, d_model, num_layers, num_heads, num_kv_heads, d_ff,
                   num_experts, top_k, eps = 1e-5, theta = 1000000) {
    embed_tokens = Embedding(vocab_size, d_model)
    layers       = repeat num_layers of MixtralDecoderLayer(d_model, num_heads, num_kv_heads,
                                                            d_ff, num_experts, top_k, eps)
    norm         = RMSNorm(d_model, eps, hf = true)
    rotary_emb   = HFRotaryEmbedding(d_model / num_heads, theta)
    forward(tokens: int64[b, s]) -> [b, s, d_model] {
        inputs_embeds = embed_tokens(tokens)
        inputs_embeds = hf_input_embeds(inputs_embeds)
        if hf_generate {
            # generate's [b, s] position ids, as in llama.mspec: generate's tensors, a view
            # of the tokens standing for them; the rotary tables are [b, s, d]
            position_ids = select(tokens, 0, 0)
            rows = b
        } else {
            position_ids = arange(s)  # arange(s) + past_seen_tokens (0), unsqueezed: one [s]
            rows = 1
        }
        mask = hf_causal_mask(position_ids, b)
        # cos and sin in float32 from the float32 inv_freq, cast to the activations' dtype
        rope_cos, rope_sin = hf_rotary_tables(rotary_emb.inv_freq, position_ids,
                                              inputs_embeds, rows)
        x = layers(inputs_embeds, rope_cos, rope_sin, position_ids, mask)
        return hold(norm(x), position_ids, mask, inputs_embeds)
    }
}

model MixtralForCausalLM {
    model   = MixtralModel(V, D, N, H, KV, F, E, k)
    lm_head = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        logits = lm_head(model(tokens))        : [B, L, V]
        logits = returned(logits)              # in the outputs object (--keep-outputs)
        return cross_entropy(logits, hf_shift_labels(targets))   # labels = input_ids
    }
    # --mode inference, as llama.mspec's: the head on the last position only
    generate(tokens: int64[B, L]) {
        hidden = model(tokens)
        return returned(lm_head(narrow(hidden, 1, L - 1, 1)))
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

assume "HF MixtralForCausalLM: Mistral's block with a sparse MoE MLP; no biases anywhere (router and experts included); pre-norm RMSNorm, weight only, eps 1e-5; untied lm_head"
assume "experts as transformers 5.x stores and runs them by default: two 3-D parameters per layer and experts_implementation grouped_mm, whose tensors have k*B*L, B*L or E rows whatever the routing (the saved bytes and the peak do not depend on which experts the router picks); every expert's gradient and AdamW state exist in full"
assume "no sliding window: Mixtral-8x7B-v0.1's config has sliding_window null, so attention is plain causal over L; SDPA (transformers' default) with enable_gqa keeps K and V at KV heads; --use eager repeats them and materializes the [B, H, L, L] scores"
assume "the router's softmax in float32 as HF's router_logits.float() (a float32 copy of the logits under 16-bit activations): the routing weights are float32, so the experts' weighted outputs and their sum are too, cast back to the activations' dtype"
assume "no auxiliary load-balancing loss: output_router_logits is false by default, so router_aux_loss_coef (0.02) adds nothing to the loss and the router logits are not kept"
assume "rotary embedding as HF computes it (rope_theta 1e6): inv_freq and original_inv_freq [d_k/2] are buffers; cos and sin [1, L, d_k] are made once per forward without gradient and saved, once, by every layer's q and k products"
assume "no dropout (attention_dropout = 0, router_jitter_noise = 0); targets are HF's labels (the input ids), padded by one ignored position and shifted by the loss"
assume "the weights ship in bf16, but the spec trains in fp32 unless --precision says otherwise"

train { precision fp32; optimizer adamw; use sdpa }
