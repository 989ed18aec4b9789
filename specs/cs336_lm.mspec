# The CS336 assignment-1 Transformer LM, with the FFN as the "AdamW accounting" question
# lists it: W1, SiLU, W2 (d_ff = 4 d_model). Pre-norm blocks, RoPE, untied output embedding,
# everything float32, AdamW. Compile with:
#   memspec compile specs/cs336_lm.mspec --format md
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim num_heads      as H
dim d_ff           as F = 4 * D   # formulas use 4D unless --set or a preset binds F

layer Block(d_model, num_heads, d_ff, max_len) {
    ln1  = RMSNorm(d_model)
    attn = MultiHeadSelfAttention(d_model, num_heads, max_len)
    ln2  = RMSNorm(d_model)
    ffn  = FFN_SiLU(d_model, d_ff)
    forward(x: [batch, seq, d_model]) -> [batch, seq, d_model] {
        x = x + attn(ln1(x))
        return x + ffn(ln2(x))
    }
}

model TransformerLM {
    token_embeddings = Embedding(V, D)
    layers   = repeat N of Block(D, H, F, L)   # one region of multiplicity N, never unrolled
    ln_final = RMSNorm(D)
    lm_head  = Linear(D, V)                    # untied from token_embeddings
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        x      = layers(token_embeddings(tokens))   : [B, L, D]
        logits = lm_head(ln_final(x))               : [B, L, V]
        return cross_entropy(logits, targets)
    }
}

# Tensor parallelism (--tp N): std's attention and FFN plans, the embedding
# vocab-parallel and the LM head's logits kept sharded into the loss (loss_parallel).
tp_plan TransformerLM { token_embeddings vocab_parallel; lm_head loss_parallel }

# GPT-2 XL's shape with d_ff = 4 d_model, as in the question's part (b).
preset gpt2_xl { V = 50_257, L = 1_024, D = 1_600, N = 48, H = 25, F = 6_400 }

# The question's answer, checked symbolically at every compile.
expect params == 2*V*D + N*(12*D**2 + 2*D) + D
expect params == 1_635_537_600 at gpt2_xl

assume "the question's FFN: W1, SiLU, W2 (d_ff = 4 d_model by default); no biases anywhere"
assume "pre-norm blocks with RMSNorm (gain only); no dropout"
assume "untied output embedding: lm_head is separate from token_embeddings"
assume "RoPE: each attention layer keeps its own cos/sin tables, a buffer without gradient"
assume "attention materializes QK^T and softmax (variant math); --use flash stores neither"

train { precision fp32; optimizer adamw; convention course; use math }
