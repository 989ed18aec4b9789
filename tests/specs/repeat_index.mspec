# Repetitions that differ by index (`repeat N as i of Layer(..., i)`), as real models
# write them: DeepSeek's dense first layer before its MoE-style layers (`i == 0`) and
# Gemma-2's alternating sliding-window and global attention (`i % 2 == 0`).
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim num_heads      as H
dim sliding_window as W

layer Block(d, h, dense = true, window = 0) {
    let head_dim = d / h
    norm = RMSNorm(d)
    qkv = Linear(d, 3 * d)
    out = Linear(d, d)
    if dense { mlp = SwiGLU(d, 4 * d) } else { mlp = SwiGLU(d, 2 * d) }
    forward(x: [b, s, d]) -> [b, s, d] {
        q = rearrange(qkv(norm(x)), "b s (three h e) -> three b h s e", three = 3, h = h)
        o = attention(select(q, 0, 0), select(q, 0, 1), select(q, 0, 2), causal = true,
                      window = window)
        x = x + out(rearrange(o, "b h s e -> b s (h e)"))
        return x + mlp(x)
    }
}

# Gemma-2's layer: HF decides `is_sliding` from layer_idx in __init__.
layer AlternatingBlock(d, h, window, layer_idx) {
    let sliding = layer_idx % 2 == 0
    if sliding { block = Block(d, h, window = window) } else { block = Block(d, h) }
    forward(x: [b, s, d]) -> [b, s, d] { return block(x) }
}

model RepeatIndex {
    embed = Embedding(V, D)
    first_dense = repeat N as i of Block(D, H, dense = i == 0)
    alternating = repeat N as i of AlternatingBlock(D, H, W, i)
    head = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        return cross_entropy(head(alternating(first_dense(embed(tokens)))), targets)
    }
}

preset tiny { B = 2, L = 8, V = 32, D = 16, N = 4, H = 2, W = 3 }
