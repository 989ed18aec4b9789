# A small model that uses every layer of the standard library not in the CS336 specs:
# LayerNorm with and without bias, a GELU MLP with biased Linears, dropout, flash
# attention, and an output layer tied to the token embedding.
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim num_heads      as H
dim d_ff           as F = 4 * D

layer Block(d, h, f, max_len) {
    ln_1 = LayerNorm(d)
    attn = MultiHeadSelfAttention(d, h, max_len)
    ln_2 = LayerNorm(d, bias = false)
    mlp  = GeluMLP(d, f)
    forward(x: [b, s, d]) -> [b, s, d] {
        x = x + dropout(attn(ln_1(x)), 0.1)
        return x + mlp(ln_2(x))
    }
}

model TinyGPT {
    wte    = Embedding(V, D)
    layers = repeat N of Block(D, H, F, L)
    ln_f   = LayerNorm(D)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        x = layers(wte(tokens))
        logits = linear(ln_f(x), wte.weight)      # tied to the token embedding
        return cross_entropy(logits, targets)
    }
}

expect params == V*D + N*(4*D**2 + 2*D*F + F + 4*D) + 2*D
train { use flash }
