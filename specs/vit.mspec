# ViT-B/16 (torchvision vit_b_16): a strided-conv patch embedding, a class token, learned
# positions, pre-LN encoder blocks with biases and exact GELU, a final LayerNorm, and a
# classification head on the class token.
use std

dim batch_size  as B
dim image_size  as I
dim patch_size  as p
dim d_model     as D
dim num_layers  as N
dim num_heads   as H
dim d_ff        as F = 4 * D
dim num_classes as C

let S = (I / p) ** 2 + 1               # patches plus the class token

# torch.nn.MultiheadAttention's parameters: one packed input projection, one output.
layer SelfAttention(d_model, num_heads) {
    param in_proj_weight: [3 * d_model, d_model]
    param in_proj_bias: [3 * d_model]
    out_proj = Linear(d_model, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        qkv = linear(x, in_proj_weight, in_proj_bias)
        q = rearrange(narrow(qkv, -1, 0, d_model), "b s (h d) -> b h s d", h = num_heads)
        k = rearrange(narrow(qkv, -1, d_model, d_model), "b s (h d) -> b h s d", h = num_heads)
        v = rearrange(narrow(qkv, -1, 2 * d_model, d_model), "b s (h d) -> b h s d", h = num_heads)
        o = attention(q, k, v, causal = false)
        return out_proj(rearrange(o, "b h s d -> b s (h d)"))
    }
}

layer EncoderBlock(d_model, num_heads, d_ff) {
    ln_1 = LayerNorm(d_model, 1e-6)
    self_attention = SelfAttention(d_model, num_heads)
    ln_2 = LayerNorm(d_model, 1e-6)
    mlp = GeluMLP(d_model, d_ff, "none")
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        x = x + self_attention(ln_1(x))
        return x + mlp(ln_2(x))
    }
}

layer Encoder(seq, d_model, depth, num_heads, d_ff) {
    param pos_embedding: [1, seq, d_model]
    layers = repeat depth of EncoderBlock(d_model, num_heads, d_ff)
    ln = LayerNorm(d_model, 1e-6)
    forward(x: [b, seq, d_model]) -> [b, seq, d_model] {
        return ln(layers(x + pos_embedding))
    }
}

layer Heads(d_model, classes) {
    head = Linear(d_model, classes, bias = true)
    forward(x: [b, d_model]) -> [b, classes] { return head(x) }
}

model VisionTransformer {
    conv_proj = Conv2d(3, D, p, p)               # kernel p, stride p, with bias
    param class_token: [1, 1, D]
    encoder = Encoder(S, D, N, H, F)
    heads = Heads(D, C)
    forward(images: [B, 3, I, I], labels: int64[B]) {
        patches = rearrange(conv_proj(images), "b d h w -> b (h w) d")
        cls = repeat(class_token, "1 1 d -> b 1 d", b = B)
        x = encoder(cat(cls, patches, dim = 1))          : [B, S, D]
        logits = heads(select(x, 1, 0))                  : [B, C]
        return cross_entropy(logits, labels)
    }
}

preset b16 { I = 224, p = 16, D = 768, N = 12, H = 12, F = 3_072, C = 1_000 }
expect params == 3*p**2*D + D + D + S*D + N*(4*D**2 + 2*D*F + F + 9*D) + 2*D + D*C + C
expect params == 86_567_656 at b16

assume "patch embedding: Conv2d(3, D, p, stride p) with bias; p divides the image size"
assume "pre-LN blocks, LayerNorm eps 1e-6 with bias, biases on every linear, exact GELU; no dropout (torchvision's default 0)"
assume "attention with nn.MultiheadAttention's packed in_proj; bidirectional"
