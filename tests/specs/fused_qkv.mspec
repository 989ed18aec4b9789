# Two fused QKV projections, the way Hugging Face writes them, in one small decoder:
#   GPT-NeoX (Pythia): query_key_value(x) viewed per head as [b, s, h, 3 d], transposed to
#     [b, h, s, 3 d], then chunked into q, k, v along the last dim;
#   Phi-3: qkv_proj(x) sliced into q, k, v of D each, then each viewed as heads and
#     transposed.
# Every q, k, v is a strided view of one projection's output; whether the attention
# products must copy them depends on the sizes (none at B = 1).
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim num_heads      as H

layer NeoXAttention(d_model, num_heads) {
    let head_dim = d_model / num_heads
    query_key_value = Linear(d_model, 3 * d_model, bias = true)
    dense = Linear(d_model, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        qkv = rearrange(query_key_value(x), "b s (h d) -> b h s d", h = num_heads)
        q = narrow(qkv, -1, 0, head_dim)
        k = narrow(qkv, -1, head_dim, head_dim)
        v = narrow(qkv, -1, 2 * head_dim, head_dim)
        o = attention(q, k, v, causal = true)
        return dense(rearrange(o, "b h s d -> b s (h d)"))
    }
}

layer Phi3Attention(d_model, num_heads) {
    qkv_proj = Linear(d_model, 3 * d_model)
    o_proj = Linear(d_model, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        qkv = qkv_proj(x)
        q = rearrange(narrow(qkv, -1, 0, d_model), "b s (h d) -> b h s d", h = num_heads)
        k = rearrange(narrow(qkv, -1, d_model, d_model), "b s (h d) -> b h s d", h = num_heads)
        v = rearrange(narrow(qkv, -1, 2 * d_model, d_model), "b s (h d) -> b h s d",
                      h = num_heads)
        o = attention(q, k, v, causal = true)
        return o_proj(rearrange(o, "b h s d -> b s (h d)"))
    }
}

layer Block(d, h) {
    ln_1 = LayerNorm(d)
    neox = NeoXAttention(d, h)
    ln_2 = RMSNorm(d)
    phi3 = Phi3Attention(d, h)
    forward(x: [b, s, d]) -> [b, s, d] {
        x = x + neox(ln_1(x))
        return x + phi3(ln_2(x))
    }
}

model FusedQKV {
    embed  = Embedding(V, D)
    layers = repeat N of Block(D, H)
    norm   = RMSNorm(D)
    head   = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        return cross_entropy(head(norm(layers(embed(tokens)))), targets)
    }
}
