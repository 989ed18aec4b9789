# BERT (Hugging Face BertModel as transformers 5.x trains it, bert-base-uncased): word +
# token-type + position embeddings, LayerNorm and dropout; post-LN encoder blocks with
# biases everywhere and exact GELU; the pooler (dense + tanh on [CLS]). BertModel has no
# head, so the training loss below reuses the word embeddings as a tied decoder.
# Attention: transformers' default `sdpa`; `--use eager`, `--use math`. Compile with:
#   memspec compile specs/bert.mspec --format md --preset base --set B=1
use std

dim batch_size              as B
dim context_length          as L
dim max_position_embeddings as P
dim type_vocab_size         as T = 2
dim vocab_size              as V
dim d_model                 as D
dim num_layers              as N
dim num_heads               as H
dim d_ff                    as F = 4 * D          # intermediate_size

layer BertEmbeddings(vocab, max_len, types, d_model, seq) {
    word_embeddings       = Embedding(vocab, d_model)
    position_embeddings   = Embedding(max_len, d_model)
    token_type_embeddings = Embedding(types, d_model)
    LayerNorm             = LayerNorm(d_model, 1e-12)
    buffer position_ids:   int64[1, max_len]     # HF: arange(P).expand(1, -1), non-persistent
    buffer token_type_ids: int64[1, max_len]     # HF: zeros, non-persistent
    forward(tokens: [b, s]) -> [b, s, d_model] {
        positions = narrow(position_ids, 1, 0, seq)                       # a view of the buffer
        # token types default to the buffer's zeros gathered at the positions (transformers
        # 5.x): a new [1, s] int64 tensor per forward, expanded to [b, s], which the
        # token-type embedding saves
        type_ids = repeat(gather(token_type_ids, positions, dim = 1), "1 s -> b s", b = b)
        x = hf_input_embeds(word_embeddings(tokens)) + token_type_embeddings(type_ids)
        x = x + position_embeddings(positions)                            # [1, s, d] broadcast
        return dropout(LayerNorm(x), 0.1)
    }
}

layer BertSelfAttention(d_model, num_heads, dropout_p) {
    query = Linear(d_model, d_model, bias = true)
    key   = Linear(d_model, d_model, bias = true)
    value = Linear(d_model, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        q = rearrange(query(x), "b s (h d) -> b h s d", h = num_heads)
        k = rearrange(key(x), "b s (h d) -> b h s d", h = num_heads)
        v = rearrange(value(x), "b s (h d) -> b h s d", h = num_heads)
        o = attention(q, k, v, causal = false, dropout_p = dropout_p)    # bidirectional
        return rearrange(o, "b h s d -> b s (h d)")                      # a copy
    }
}

# BertSelfOutput and BertOutput: dense, dropout, then LayerNorm(x + residual) (post-LN).
layer BertOutput(d_in, d_model, dropout_p) {
    dense     = Linear(d_in, d_model, bias = true)
    LayerNorm = LayerNorm(d_model, 1e-12)
    forward(h: [b, s, d_in], residual: [b, s, d_model]) -> [b, s, d_model] {
        return LayerNorm(dropout(dense(h), dropout_p) + residual)
    }
}

layer BertAttention(d_model, num_heads, dropout_p) {
    self   = BertSelfAttention(d_model, num_heads, dropout_p)
    output = BertOutput(d_model, d_model, dropout_p)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        return output(self(x), x)
    }
}

layer BertIntermediate(d_model, d_ff) {
    dense = Linear(d_model, d_ff, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_ff] {
        return gelu(dense(x), "none")                # exact (erf) GELU
    }
}

layer BertLayer(d_model, num_heads, d_ff, dropout_p) {
    attention    = BertAttention(d_model, num_heads, dropout_p)
    intermediate = BertIntermediate(d_model, d_ff)
    output       = BertOutput(d_ff, d_model, dropout_p)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        x = attention(x)                  # post-LN: the LayerNorm output is the residual
        return output(intermediate(x), x)
    }
}

layer BertEncoder(num_layers, d_model, num_heads, d_ff, dropout_p) {
    layer = repeat num_layers of BertLayer(d_model, num_heads, d_ff, dropout_p)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        return layer(x)
    }
}

layer BertPooler(d_model) {
    dense = Linear(d_model, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, d_model] {
        return tanh(dense(select(x, 1, 0)))          # the [CLS] token
    }
}

model BertModel {
    embeddings = BertEmbeddings(V, P, T, D, L)
    encoder    = BertEncoder(N, D, H, F, 0.1)
    pooler     = BertPooler(D)
    forward(tokens: int64[B, L], targets: int64[B, L], labels: int64[B]) {
        x = encoder(embeddings(tokens))                            : [B, L, D]
        pooled = pooler(x)                                         : [B, D]
        words = embeddings.word_embeddings.weight                  # tied decoder
        mlm = cross_entropy(linear(x, words), targets)             : []
        cls = cross_entropy(linear(pooled, words), labels)         : []
        return mlm + cls
    }
}

# bert-base-uncased: vocab 30522, 512 positions, 2 token types, hidden 768, 12 layers,
# 12 heads, intermediate 3072.
preset base { V = 30_522, P = 512, L = 512, T = 2, D = 768, N = 12, H = 12, F = 3_072 }
expect params == (V + P + T)*D + 2*D + N*(4*D**2 + 2*D*F + F + 9*D) + D**2 + D
expect params == 109_482_240 at base

assume "post-LN blocks: LayerNorm(x + dropout(sublayer(x))); LayerNorm eps 1e-12 with bias; biases on every linear"
assume "GELU exact (erf); dropout 0.1 after the embedding LayerNorm, on the attention probabilities and on both residual branches: each saves its mask"
assume "position_ids and token_type_ids are int64 buffers [1, P] (HF registers them non-persistent); token types all zero, gathered from the buffer at the positions each forward ([1, L] int64, saved by the token-type embedding)"
assume "no attention mask (every token attends to every token): transformers builds none for an unpadded bidirectional batch, under sdpa and eager alike"
assume "BertModel has no head: the training loss is masked-LM cross-entropy of the sequence output through the word embeddings (tied decoder, no bias) plus cross-entropy of the pooled output through the same tied weights, summed; it adds no parameters"
assume "attention as transformers runs it by default (sdpa: with dropout on the probabilities torch takes SDPA's math path on the CPU, scaling q and k before their product); `--use eager` is HF's eager attention (QK^T / sqrt(d), softmax, dropout), `--use math` the same written out; flash is not offered because the fused kernel is modelled without dropout on the probabilities"
train { use sdpa }
