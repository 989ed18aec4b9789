# Attention whose value heads are narrower than its query/key heads, as DeepSeek-V2's
# multi-head latent attention has them (q/k: 16 "nope" + 8 rope features = 24; v: 16).
use std
dim batch_size as B = 2
dim seq_len    as L = 6
dim vocab      as V = 32
dim d_model    as D = 16
dim num_heads  as H = 2
dim qk_dim     as Q = 24
dim v_dim      as E = 16

layer LatentishAttention(d_model, heads, qk_dim, v_dim) {
    q_proj = Linear(d_model, heads * qk_dim)
    k_proj = Linear(d_model, heads * qk_dim)
    v_proj = Linear(d_model, heads * v_dim)
    o_proj = Linear(heads * v_dim, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        q = rearrange(q_proj(x), "b s (h d) -> b h s d", h = heads)
        k = rearrange(k_proj(x), "b s (h d) -> b h s d", h = heads)
        v = rearrange(v_proj(x), "b s (h e) -> b h s e", h = heads)
        o = attention(q, k, v)                                     : [b, heads, s, v_dim]
        return o_proj(rearrange(o, "b h s e -> b s (h e)"))
    }
}

model MLA {
    embed = Embedding(V, D)
    attn  = LatentishAttention(D, H, Q, E)
    head  = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        x = embed(tokens)
        return cross_entropy(head(x + attn(x)), targets)
    }
}

train { use sdpa }
