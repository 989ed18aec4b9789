# GPT-2 (Hugging Face GPT2LMHeadModel, OpenAI weights): learned positions, pre-LN blocks,
# LayerNorm with bias, biases on every linear (HF's Conv1D: weight stored [in, out]),
# fused QKV, GELU (tanh) MLP of width 4D, final LayerNorm, LM head tied to the token
# embedding, dropout 0.1.
use std

dim batch_size              as B
dim context_length          as L
dim max_position_embeddings as P
dim vocab_size              as V
dim d_model                 as D
dim num_layers              as N
dim num_heads               as H
dim d_ff                    as F = 4 * D

# HF's Conv1D: y = x @ W + b with W stored [nx, nf] (transposed against nn.Linear).
layer Conv1D(nf, nx) {
    param weight: [nx, nf]
    param bias: [nf]
    forward(x: [..., nx]) -> [..., nf] {
        return matmul(x, weight) + bias
    }
}

layer GPT2Attention(d_model, num_heads, dropout_p) {
    c_attn = Conv1D(3 * d_model, d_model)
    c_proj = Conv1D(d_model, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        qkv = c_attn(x)
        q = rearrange(narrow(qkv, -1, 0, d_model), "b s (h d) -> b h s d", h = num_heads)
        k = rearrange(narrow(qkv, -1, d_model, d_model), "b s (h d) -> b h s d", h = num_heads)
        v = rearrange(narrow(qkv, -1, 2 * d_model, d_model), "b s (h d) -> b h s d", h = num_heads)
        o = attention(q, k, v, dropout_p = dropout_p)
        merged = rearrange(o, "b h s d -> b s (h d)")
        return dropout(c_proj(merged), dropout_p)
    }
}

layer GPT2MLP(d_model, d_ff, dropout_p) {
    c_fc   = Conv1D(d_ff, d_model)
    c_proj = Conv1D(d_model, d_ff)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        return dropout(c_proj(gelu(c_fc(x), "tanh")), dropout_p)
    }
}

layer GPT2Block(d_model, num_heads, d_ff, dropout_p) {
    ln_1 = LayerNorm(d_model)
    attn = GPT2Attention(d_model, num_heads, dropout_p)
    ln_2 = LayerNorm(d_model)
    mlp  = GPT2MLP(d_model, d_ff, dropout_p)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        x = x + attn(ln_1(x))
        return x + mlp(ln_2(x))
    }
}

model GPT2LMHeadModel {
    wte  = Embedding(V, D)
    wpe  = Embedding(P, D)
    h    = repeat N of GPT2Block(D, H, F, 0.1)
    ln_f = LayerNorm(D)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        x = dropout(wte(tokens) + wpe(arange(L)), 0.1)      : [B, L, D]
        x = h(x)
        logits = linear(ln_f(x), wte.weight)               : [B, L, V]
        return cross_entropy(logits, targets)
    }
}

preset small { V = 50_257, P = 1_024, L = 1_024, D = 768, N = 12, H = 12, F = 3_072 }
expect params == V*D + P*D + N*(4*D**2 + 2*D*F + F + 9*D) + 2*D
expect params == 124_439_808 at small

assume "LM head tied to wte: one parameter, one gradient, one optimizer state for two uses"
assume "every linear has a bias (HF Conv1D, weight stored [in, out]); LayerNorm with bias"
assume "pre-LN blocks; dropout 0.1 on embeddings, attention probabilities and residuals (masks saved)"
assume "attention in the math variant (dropout on probabilities); no causal-mask buffer (HF 5.x)"
assume "positions arange(L) with L <= max_position_embeddings"
train { use math }
