# T5 v1.0 (Hugging Face T5ForConditionalGeneration): an encoder and a decoder of N blocks
# each, no biases, T5LayerNorm (RMS, gain only), ReLU feed-forward, relative position
# bias (a [32 buckets, H] table in the first block of each stack, one [1, H, Lq, Lk] bias
# reused by every block), cross-attention, one embedding shared by the encoder, the
# decoder and the LM head. Inner attention width H * d_kv need not equal D.
# Attention: transformers' default `sdpa`; `--use eager`. Compile with:
#   memspec compile specs/t5.mspec --format md --preset small --set B=1
use std

dim batch_size  as B
dim source_length as S
dim target_length as T
dim vocab_size  as V
dim d_model     as D
dim d_kv        as K
dim num_heads   as H
dim d_ff        as F
dim num_layers  as N
dim relative_attention_num_buckets as R = 32

# Scores are not scaled (T5 folds 1/sqrt(d) into its initialization); the position bias
# (self-attention) or a zero tensor (cross-attention) is added to them.
fn t5_attention(q: [b, h, s, d], k: [b, h, t, d], v: [b, h, t, d], bias, causal)
    -> [b, h, s, d]
variant sdpa {
    # sdpa_attention_forward: create_position_bias_mask turns the bias into SDPA's float
    # mask, torch.where(causal, bias, min) in the decoder (a new tensor; saves the bool
    # condition), else bias.contiguous() (a copy of the permuted bias, the zeros themselves).
    # With dropout on the probabilities, the CPU runs SDPA's math path: q and k multiplied
    # by sqrt(scale) = 1, their product, the mask added out of place, softmax, dropout.
    if causal { mask = causal_mask(bias) } else { mask = contiguous(bias) }
    scores = einsum(q * 1.0, k * 1.0, "b h s d, b h t d -> b h s t") + mask
    probs = dropout(softmax(scores), 0.1)
    return einsum(probs, v, "b h s t, b h t d -> b h s d")
}
variant eager {
    # eager_attention_forward: (q k^T) * scaling (1.0, a new tensor), + position_bias, +
    # the decoder's 0 / -inf float causal mask (autograd keeps neither), softmax, dropout.
    scores = einsum(q, k, "b h s d, b h t d -> b h s t") * 1.0 + bias
    if causal { scores = add_causal_mask(scores) }
    probs = dropout(softmax(scores), 0.1)
    return einsum(probs, v, "b h s t, b h t d -> b h s d")
}

layer T5Attention(d_model, d_kv, num_heads, causal) {
    q = Linear(d_model, num_heads * d_kv)
    k = Linear(d_model, num_heads * d_kv)
    v = Linear(d_model, num_heads * d_kv)
    o = Linear(num_heads * d_kv, d_model)
    forward(x: [b, s, d_model], kv: [b, t, d_model], bias) -> [b, s, d_model] {
        qh = rearrange(q(x), "b s (h d) -> b h s d", h = num_heads)
        kh = rearrange(k(kv), "b t (h d) -> b h t d", h = num_heads)
        vh = rearrange(v(kv), "b t (h d) -> b h t d", h = num_heads)
        out = t5_attention(qh, kh, vh, bias, causal)
        return o(rearrange(out, "b h s d -> b s (h d)"))
    }
}

layer T5FF(d_model, d_ff) {
    layer_norm = RMSNorm(d_model, 1e-6)
    wi = Linear(d_model, d_ff)
    wo = Linear(d_ff, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        return x + dropout(wo(dropout(relu(wi(layer_norm(x))), 0.1)), 0.1)
    }
}

layer EncoderBlock(d_model, d_kv, num_heads, d_ff) {
    layer_norm = RMSNorm(d_model, 1e-6)
    SelfAttention = T5Attention(d_model, d_kv, num_heads, false)
    ff = T5FF(d_model, d_ff)
    forward(x: [b, s, d_model], bias) -> [b, s, d_model] {
        h = layer_norm(x)
        x = x + dropout(SelfAttention(h, h, bias), 0.1)
        return ff(x)
    }
}

layer DecoderBlock(d_model, d_kv, num_heads, d_ff) {
    layer_norm = RMSNorm(d_model, 1e-6)
    SelfAttention = T5Attention(d_model, d_kv, num_heads, true)
    cross_layer_norm = RMSNorm(d_model, 1e-6)
    EncDecAttention = T5Attention(d_model, d_kv, num_heads, false)
    ff = T5FF(d_model, d_ff)
    forward(x: [b, t, d_model], enc: [b, s, d_model], bias, zeros) -> [b, t, d_model] {
        h = layer_norm(x)
        x = x + dropout(SelfAttention(h, h, bias), 0.1)
        x = x + dropout(EncDecAttention(cross_layer_norm(x), enc, zeros), 0.1)
        return ff(x)
    }
}

layer Encoder(d_model, d_kv, num_heads, d_ff, depth, buckets, seq) {
    relative_attention_bias = Embedding(buckets, num_heads)   # HF: block.0...relative_attention_bias
    block = repeat depth of EncoderBlock(d_model, d_kv, num_heads, d_ff)
    final_layer_norm = RMSNorm(d_model, 1e-6)
    forward(x: [b, seq, d_model]) -> [b, seq, d_model] {
        ids = position_buckets(seq, seq, buckets, 128, true)
        bias = rearrange(relative_attention_bias(ids), "qi kj nh -> 1 nh qi kj")
        return dropout(final_layer_norm(block(dropout(x, 0.1), bias)), 0.1)
    }
}

layer Decoder(d_model, d_kv, num_heads, d_ff, depth, buckets, seq) {
    relative_attention_bias = Embedding(buckets, num_heads)
    block = repeat depth of DecoderBlock(d_model, d_kv, num_heads, d_ff)
    final_layer_norm = RMSNorm(d_model, 1e-6)
    forward(x: [b, seq, d_model], enc: [b, s, d_model]) -> [b, seq, d_model] {
        ids = position_buckets(seq, seq, buckets, 128, false)
        bias = rearrange(relative_attention_bias(ids), "qi kj nh -> 1 nh qi kj")
        # HF: the first block's cross-attention makes torch.zeros((1, H, T, S)) as its
        # position bias and every later block reuses it (zeros of an expanded view)
        zeros = zeros_like(repeat(narrow(bias, 3, 0, 1), "1 h q 1 -> 1 h q s", s = s))
        return dropout(final_layer_norm(block(dropout(x, 0.1), enc, bias, zeros)), 0.1)
    }
}

model T5ForConditionalGeneration {
    shared  = Embedding(V, D)
    encoder = Encoder(D, K, H, F, N, R, S)
    decoder = Decoder(D, K, H, F, N, R, T)
    forward(input_ids: int64[B, S], labels: int64[B, T]) {
        # HF's _shift_right(labels): a new [B, T] tensor, the start token (pad, 0) first
        decoder_input_ids = pad(narrow(labels, 1, 0, T - 1), left = 1)
        enc = encoder(hf_input_embeds(shared(input_ids)))
        dec = decoder(hf_input_embeds(shared(decoder_input_ids)), enc)
        logits = linear(dec * D ** (-1/2), shared.weight)   # tied head, scaled (v1.0)
        return cross_entropy(logits, labels)
    }
}

preset small { V = 32_128, D = 512, K = 64, H = 8, F = 2_048, N = 6, R = 32, S = 512, T = 512 }
expect params == V*D + N*(4*D*H*K + 2*D*F + 2*D) + N*(8*D*H*K + 2*D*F + 3*D) + 2*R*H + 2*D
expect params == 60_506_624 at small

assume "one embedding (shared) ties the encoder input, the decoder input and the LM head (v1.0)"
assume "no biases; T5LayerNorm = RMS norm with gain only; ReLU feed-forward; dropout 0.1 everywhere HF has it"
assume "the relative position bias table lives at the stack level (HF: in block 0) and its [1, H, Lq, Lk] bias is reused by every block; cross-attention's position bias is a zero [1, H, T, S] tensor made once per decoder forward"
assume "attention scores are not scaled by 1/sqrt(d_kv); source and target lengths are separate dims"
assume "trained as T5ForConditionalGeneration(input_ids=..., labels=...): the decoder input is _shift_right(labels), a new tensor; the loss is CrossEntropyLoss over the flattened logits; no attention masks (an unpadded batch); use_cache=False"
assume "attention as transformers runs it by default (sdpa: the position bias as SDPA's float mask, with dropout on the probabilities the CPU's math path); `--use eager` is HF's eager_attention_forward"
train { use sdpa }
