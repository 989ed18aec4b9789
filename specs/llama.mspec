# LLaMA-2 (Hugging Face LlamaForCausalLM): pre-norm decoder blocks with RMSNorm (weight
# only), no biases anywhere, a SwiGLU MLP (gate_proj = w1, up_proj = w3, down_proj = w2),
# grouped-query attention with rotary embeddings on q and k, a final RMSNorm and an untied
# LM head. Member names follow HF's state_dict: model.layers.0.self_attn.q_proj.weight,
# lm_head.weight. d_ff follows Meta's rule, 8D/3 rounded up to a multiple of 256. Compile:
#   memspec compile specs/llama.mspec --format md --preset llama2_7b --set B=1
use std
use std.transformers.llama   # LlamaAttention: the attention Llama, Mixtral and their kin share

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

# HF LlamaMLP: down_proj(silu(gate_proj(x)) * up_proj(x)).
layer LlamaMLP(d_model, d_ff) {
    gate_proj = Linear(d_model, d_ff)
    up_proj   = Linear(d_model, d_ff)
    down_proj = Linear(d_ff, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        # x, the caller's normed hidden states, is alive until the MLP returns
        return hold(down_proj(silu(gate_proj(x)) * up_proj(x)), x)
    }
}

layer LlamaDecoderLayer(d_model, num_heads, num_kv_heads, d_ff, eps) {
    input_layernorm          = RMSNorm(d_model, eps, hf = true)
    self_attn                = LlamaAttention(d_model, num_heads, num_kv_heads)
    post_attention_layernorm = RMSNorm(d_model, eps, hf = true)
    mlp                      = LlamaMLP(d_model, d_ff)
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

# HF LlamaModel: embeddings, the position ids and the causal mask, one rotary table per
# forward, the decoder stack, the norm; the ids and the mask are locals until it returns.
layer LlamaModel(vocab_size, d_model, num_layers, num_heads, num_kv_heads, d_ff,
                 eps = 1e-5, theta = 10000) {
    embed_tokens = Embedding(vocab_size, d_model)
    layers       = repeat num_layers of LlamaDecoderLayer(d_model, num_heads, num_kv_heads,
                                                          d_ff, eps)
    norm         = RMSNorm(d_model, eps, hf = true)
    rotary_emb   = HFRotaryEmbedding(d_model / num_heads, theta)
    forward(tokens: int64[b, s]) -> [b, s, d_model] {
        inputs_embeds = embed_tokens(tokens)
        inputs_embeds = hf_input_embeds(inputs_embeds)
        if hf_generate {
            # transformers' generate passes its own position ids, [b, s] int64 (a slice of
            # the cumsum of its attention mask; a clone in decode): generate's tensors,
            # counted with its bookkeeping. A view of the tokens, [s] int64, stands for
            # them where the layers take them; the rotary tables are [b, s, d].
            position_ids = select(tokens, 0, 0)
            rows = b
        } else {
            position_ids = arange(s)  # arange(s) + past_seen_tokens (0), unsqueezed: one [s]
            rows = 1
        }
        mask = hf_causal_mask(position_ids, b)
        rope_cos, rope_sin = hf_rotary_tables(rotary_emb.inv_freq, position_ids,
                                              inputs_embeds, rows)
        x = layers(inputs_embeds, rope_cos, rope_sin, position_ids, mask)
        return hold(norm(x), position_ids, mask, inputs_embeds)
    }
}

model LlamaForCausalLM {
    model   = LlamaModel(V, D, N, H, KV, F)
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

# Tensor parallelism (--tp N) as torchtitan's Llama plan runs it through torch's
# parallelize_module: Megatron's attention and MLP (q, k, v, gate and up column-parallel,
# o and down row-parallel), a vocab-parallel embedding, and the LM head's logits kept
# sharded on the vocabulary into the loss (loss_parallel).
tp_plan LlamaAttention { q_proj colwise; k_proj colwise; v_proj colwise; o_proj rowwise }
tp_plan LlamaMLP { gate_proj colwise; up_proj colwise; down_proj rowwise }
tp_plan LlamaModel { embed_tokens vocab_parallel }
tp_plan LlamaForCausalLM { lm_head loss_parallel }

# --hf-config: transformers' LlamaConfig (config.json's fields). head_dim is hidden_size /
# num_attention_heads here (q and o are D x D), and the head is untied.
hf_config "llama" {
    V = vocab_size, D = hidden_size, N = num_hidden_layers, H = num_attention_heads
    KV = default(num_key_value_heads, num_attention_heads), F = intermediate_size
    L = max_position_embeddings
    require default(head_dim, hidden_size / num_attention_heads)
            == hidden_size / num_attention_heads
    require not default(tie_word_embeddings, false)
    require not default(attention_bias, false) and not default(mlp_bias, false)
}

# meta-llama/Llama-2-{7b,13b,70b}-hf config.json; the counts are sum(p.numel() for p in
# model.parameters()) of the HF models (70B: ffn_dim_multiplier 1.3, multiple_of 4096).
preset llama2_7b  { V = 32_000, L = 4_096, D = 4_096, N = 32, H = 32, KV = 32, F = 11_008 }
preset llama2_13b { V = 32_000, L = 4_096, D = 5_120, N = 40, H = 40, KV = 40, F = 13_824 }
preset llama2_70b { V = 32_000, L = 4_096, D = 8_192, N = 80, H = 64, KV = 8,  F = 28_672 }
# meta-llama/Meta-Llama-3-8B: the same LlamaForCausalLM, a 128K vocabulary, GQA with 8 KV
# heads, F from ffn_dim_multiplier 1.3 (rope_theta 500000 changes no size).
preset llama3_8b  { V = 128_256, L = 8_192, D = 4_096, N = 32, H = 32, KV = 8, F = 14_336 }

# Embedding and head (2VD), final norm (D); per layer q and o (D^2 each), k and v
# (D * KV * D/H each), the three SwiGLU matrices (3DF) and two norms (2D).
expect params == 2*V*D + D + N*(2*D**2 + 2*D*KV*(D/H) + 3*D*F + 2*D)
expect params == 6_738_415_616 at llama2_7b
expect params == 13_015_864_320 at llama2_13b
expect params == 68_976_648_192 at llama2_70b
expect params == 8_030_261_248 at llama3_8b

assume "HF LlamaForCausalLM: no biases anywhere (attention_bias = mlp_bias = false); pre-norm RMSNorm, weight only, eps 1e-5; untied lm_head"
assume "GQA: k_proj and v_proj are D x KV*D/H, smaller than q_proj by H/KV; attention through SDPA (transformers' default) with enable_gqa: torch's CPU flash kernel keeps K and V at KV heads and stores no [L, L] scores; --use eager repeats K and V to H heads (repeat_kv) and materializes scores and probabilities; --use math / flash are std's attention after repeat_kv"
assume "rotary embedding as HF computes it: inv_freq and original_inv_freq [d_k/2] are buffers; cos and sin [1, L, d_k] are made once per forward without gradient and saved, once, by every layer's q and k products; rotate_half is cat(-x2, x1)"
assume "no dropout (attention_dropout = 0); targets are HF's labels (the input ids): the loss pads them by one ignored position and shifts them, a contiguous copy saved by nll_loss (a view of the padded labels at B = 1)"
assume "the weights ship in fp16/bf16, but the spec trains in fp32 unless --precision says otherwise; under bf16 HF's eager path upcasts RMSNorm, softmax and the logits to fp32, which the spec does not model"

train { precision fp32; optimizer adamw; use sdpa }
