# Megatron-LM's GPT (megatron/core GPTModel with the local transformer layer), as
# Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
# Models", arXiv 2205.05198, section 4) count its activations: 16-bit activations and
# weights (mixed_bf16: a float32 master copy in the optimizer), 1-byte dropout masks
# (CUDA's dropout kernel, torch.native_dropout), pre-LN blocks with LayerNorm, a fused
# QKV projection, the attention core with a fused scale-mask-softmax (its mask added, not
# saved), GELU in a 4h MLP, and dropout after attention, after each residual branch and
# on the embeddings. Their per-layer count, with s = L, b = B, h = D, a = H:
#   no recomputation  sbh (34 + 5as/h)      selective  34 sbh      full  2 sbh
# which memspec reproduces (tests/verify/test_korthikanti.py) with PyTorch's one addition
# named: LayerNorm's float32 mean and rstd per token, 16 sb bytes a layer. Compile with:
#   memspec compile specs/megatron_gpt.mspec --preset gpt3_175b --set B=1 --set N=96
use std

dim micro_batch_size as B      # b
dim seq_length       as L      # s
dim hidden_size      as D      # h
dim num_heads        as H      # a
dim num_layers       as N
dim vocab_size       as V
dim ffn_hidden_size  as F = 4 * D

# The fused QKV's output is laid out per head, [s, b, np, 3 hn] (Megatron's
# mixed_x_layer), and split on its last dim: each tensor-parallel rank's columns are
# whole heads' q, k and v.
layer ParallelAttention(d_model, num_heads, p) {
    let head_dim = d_model / num_heads
    query_key_value = Linear(d_model, 3 * d_model, bias = true)
    dense           = Linear(d_model, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        qkv = query_key_value(x)                  : [b, s, 3 * d_model]
        heads = rearrange(qkv, "b s (h e) -> b h s e", h = num_heads)
        q = narrow(heads, -1, 0, head_dim)
        k = narrow(heads, -1, head_dim, head_dim)
        v = narrow(heads, -1, 2 * head_dim, head_dim)
        o = megatron_core_attention(q, k, v, p)
        return dense(rearrange(o, "b h s d -> b s (h d)"))
    }
}

layer ParallelMLP(d_model, d_ff) {
    dense_h_to_4h = Linear(d_model, d_ff, bias = true)
    dense_4h_to_h = Linear(d_ff, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        return dense_4h_to_h(gelu(dense_h_to_4h(x)))
    }
}

layer ParallelTransformerLayer(d_model, num_heads, d_ff, p) {
    input_layernorm          = LayerNorm(d_model)
    self_attention           = ParallelAttention(d_model, num_heads, p)
    post_attention_layernorm = LayerNorm(d_model)
    mlp                      = ParallelMLP(d_model, d_ff)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        x = x + native_dropout(self_attention(input_layernorm(x)), p)  # bias-dropout-add
        return x + native_dropout(mlp(post_attention_layernorm(x)), p)
    }
}

model GPTModel {
    word_embeddings     = Embedding(V, D)
    position_embeddings = Embedding(L, D)
    layers              = repeat N of ParallelTransformerLayer(D, H, F, 0.1)
    final_layernorm     = LayerNorm(D)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        positions = rearrange(arange(L), "s -> 1 s")
        # under --sp the sum enters the sequence-parallel region (Megatron's scatter)
        embeddings = sequence_scatter(word_embeddings(tokens) + position_embeddings(positions))
        x = native_dropout(embeddings, 0.1)
        x = layers(x)                                              : [B, L, D]
        logits = linear(final_layernorm(x), word_embeddings.weight)  : [B, L, V]
        return cross_entropy(logits, targets)
    }
}

# Megatron-LM's tensor parallelism (--tp N): the fused QKV and the first MLP projection
# column-parallel, the attention's dense and the second projection row-parallel, the
# embedding vocab-parallel (the tied LM head's logits sharded with it, the loss
# vocab-parallel). With --sp the activations between them are sharded on the sequence;
# --sp-convention megatron keeps the shard of a gathered input, as Megatron-LM does.
tp_plan ParallelAttention { query_key_value colwise; dense rowwise }
tp_plan ParallelMLP { dense_h_to_4h colwise; dense_4h_to_h rowwise }
tp_plan GPTModel { word_embeddings vocab_parallel replicated }

# GPT-3 175B's shape (Korthikanti et al.'s Table 3 row): a = 96, h = 12288, s = 2048.
preset gpt3_175b { V = 51_200, L = 2_048, D = 12_288, H = 96, N = 96 }

assume "Megatron-LM's local layer: LayerNorm with bias, biased linears, fused QKV, GELU"
assume "dropout 0.1 as CUDA runs it (torch.native_dropout): a 1-byte mask per element"
assume "the causal mask is added inside the fused softmax: no saved mask"

train { precision mixed_bf16; optimizer adamw; convention autograd }
