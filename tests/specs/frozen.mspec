# Frozen parameters: counted in the parameters as model.parameters() holds them, with
# no gradient and no optimizer state (torch's requires_grad=False).
use std
dim batch_size as B = 2
dim seq_len as L = 4
dim vocab as V = 16
dim d_model as D = 8

# a fixed position table, added to a tensor that needs a gradient
layer FixedPositions(max_len, d) {
    param table: [max_len, d] frozen
    forward(x: [b, s, d]) {
        return x + rearrange(narrow(table, 0, 0, s), "s d -> 1 s d")
    }
}

layer FrozenLinear(d_in, d_out) {
    param weight: [d_out, d_in] frozen
    forward(x: [..., d_in]) { return linear(x, weight) }
}

model M {
    wte = Embedding(V, D)
    wpe = FixedPositions(L, D)
    features = FrozenLinear(D, D)
    mix = FrozenLinear(D, D)
    proj = Linear(D, D)
    forward(tokens: int64[B, L], feats: [B, L, D], targets: int64[B, L]) {
        # only frozen weights and inputs: no backward node, nothing saved
        extra = relu(features(feats))
        # a frozen weight beside an activation: the input's gradient, no weight gradient
        h = mix(wpe(wte(tokens))) + extra
        return cross_entropy(linear(proj(h), wte.weight), targets)
    }
}
