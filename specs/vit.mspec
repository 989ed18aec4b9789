# ViT-B/16 (torchvision.models.vit_b_16, Dosovitskiy et al., 2021): a strided-conv patch
# embedding, a class token, learned positions, pre-LN encoder blocks (LayerNorm eps 1e-6,
# nn.MultiheadAttention, an exact-GELU MLP, biases everywhere), a final LayerNorm and a
# linear classification head on the class token. Attention is torch's
# scaled_dot_product_attention, as torchvision trains it (the default, `sdpa`); `--use math`
# and `--use eager` are the explicit-softmax paths. Compile with:
#   memspec compile specs/vit.mspec --format md --preset b16 --set B=1
use std

dim batch_size  as B
dim image_size  as I
dim patch_size  as p
dim d_model     as D
dim num_layers  as N
dim num_heads   as H
dim d_ff        as F = 4 * D
dim num_classes as C

let S = (I / p) ** 2 + 1               # sequence length: the patches plus the class token

# torch.nn.MultiheadAttention (batch_first) as a self-attention: one packed input
# projection (in_proj_weight [3D, D], in_proj_bias [3D]) split into q, k, v, then the
# output projection out_proj.
layer MultiheadAttention(d_model, num_heads) {
    param in_proj_weight: [3 * d_model, d_model]
    param in_proj_bias: [3 * d_model]
    out_proj = Linear(d_model, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        qkv = linear(x, in_proj_weight, in_proj_bias)                 : [b, s, 3 * d_model]
        q = rearrange(narrow(qkv, -1, 0, d_model), "b s (h d) -> b h s d", h = num_heads)
        k = rearrange(narrow(qkv, -1, d_model, d_model), "b s (h d) -> b h s d", h = num_heads)
        v = rearrange(narrow(qkv, -1, 2 * d_model, d_model), "b s (h d) -> b h s d", h = num_heads)
        o = attention(q, k, v, causal = false)                        # bidirectional
        return out_proj(rearrange(o, "b h s d -> b s (h d)"))         # a copy: h, d not adjacent
    }
}

# torchvision's EncoderBlock: pre-LN, residuals around attention and the MLP.
layer EncoderBlock(d_model, num_heads, d_ff) {
    ln_1 = LayerNorm(d_model, 1e-6)
    self_attention = MultiheadAttention(d_model, num_heads)
    ln_2 = LayerNorm(d_model, 1e-6)
    mlp = GeluMLP(d_model, d_ff, "none")          # torch: mlp.0 and mlp.3 are fc1 and fc2
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        x = x + self_attention(ln_1(x))
        return x + mlp(ln_2(x))
    }
}

# torchvision's Encoder: learned positions, the blocks, the final LayerNorm.
layer Encoder(seq_length, d_model, num_layers, num_heads, d_ff) {
    param pos_embedding: [1, seq_length, d_model]
    layers = repeat num_layers of EncoderBlock(d_model, num_heads, d_ff)
    ln = LayerNorm(d_model, 1e-6)
    forward(x: [b, seq_length, d_model]) -> [b, seq_length, d_model] {
        return ln(layers(x + pos_embedding))
    }
}

# torchvision's heads: an nn.Sequential holding one Linear named `head`.
layer Heads(d_model, num_classes) {
    head = Linear(d_model, num_classes, bias = true)
    forward(x: [b, d_model]) -> [b, num_classes] {
        return head(x)
    }
}

model VisionTransformer {
    conv_proj = Conv2d(3, D, p, p)               # kernel p, stride p, padding 0, with bias
    param class_token: [1, 1, D]
    encoder = Encoder(S, D, N, H, F)
    heads = Heads(D, C)
    forward(images: [B, 3, I, I], labels: int64[B]) {
        patches = rearrange(conv_proj(images), "b d h w -> b (h w) d")   : [B, S - 1, D]
        cls = repeat(class_token, "1 1 d -> b 1 d", b = B)                # expand: a view
        x = encoder(cat(cls, patches, dim = 1))                          : [B, S, D]
        logits = heads(select(x, 1, 0))                                  : [B, C]
        return cross_entropy(logits, labels)
    }
}

preset b16 { I = 224, p = 16, D = 768, N = 12, H = 12, F = 3_072, C = 1_000 }

# conv_proj (3 p^2 D + D), class_token (D), pos_embedding (S D); per block: two
# LayerNorms (4D), in_proj (3D^2 + 3D), out_proj (D^2 + D), fc1 (DF + F), fc2 (FD + D);
# encoder.ln (2D); heads.head (DC + C).
expect params == 3*p**2*D + 2*D + S*D + N*(4*D**2 + 2*D*F + F + 9*D) + 2*D + D*C + C
expect params == 86_567_656 at b16

assume "patch embedding: Conv2d(3, D, kernel p, stride p) with bias; p divides the image size"
assume "pre-LN encoder blocks; LayerNorm eps 1e-6 with weight and bias; biases on every linear; exact (erf) GELU"
assume "no dropout: torchvision's dropout and attention_dropout default to 0"
assume "attention: nn.MultiheadAttention's packed in_proj applied once, narrowed into q, k, v; bidirectional; by default (sdpa) as torchvision trains it: nn.MultiheadAttention with need_weights=False calls scaled_dot_product_attention, whose CPU kernel without dropout is the fused one (the same step as --use flash), storing no [S, S] tensor; --use math and --use eager materialize the scores and probabilities"
assume "torchvision's nn.MultiheadAttention copies the packed projection (unflatten, transpose, contiguous) before splitting it; this spec splits it by views, so autograd-saved bytes follow this spec's lowering, not torchvision's internals"
assume "state_dict names: encoder.layers.K stands for encoder.layers.encoder_layer_K and mlp.fc1, mlp.fc2 for mlp.0, mlp.3; the rest match torchvision"

train { precision fp32; optimizer adamw; convention course; use sdpa }
