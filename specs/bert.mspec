# BERT (Hugging Face BertModel, bert-base-uncased): word + position + token-type
# embeddings, LayerNorm, post-LN encoder blocks with biases everywhere and exact GELU,
# and the pooler (dense + tanh on [CLS]).
use std

dim batch_size              as B
dim context_length          as L
dim max_position_embeddings as P
dim type_vocab_size         as T = 2
dim vocab_size              as V
dim d_model                 as D
dim num_layers              as N
dim num_heads               as H
dim d_ff                    as F = 4 * D

layer BertEmbeddings(vocab, max_len, types, d_model, seq) {
    word_embeddings       = Embedding(vocab, d_model)
    position_embeddings   = Embedding(max_len, d_model)
    token_type_embeddings = Embedding(types, d_model)
    LayerNorm             = LayerNorm(d_model, 1e-12)
    buffer position_ids:   int64[1, max_len]     # HF registers both as buffers
    buffer token_type_ids: int64[1, max_len]
    forward(tokens: [b, s]) -> [b, s, d_model] {
        positions = position_embeddings(narrow(position_ids, 1, 0, seq))
        types = token_type_embeddings(narrow(token_type_ids, 1, 0, seq))
        return dropout(LayerNorm(word_embeddings(tokens) + positions + types), 0.1)
    }
}

layer BertSelfAttention(d_model, num_heads) {
    query = Linear(d_model, d_model, bias = true)
    key   = Linear(d_model, d_model, bias = true)
    value = Linear(d_model, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        q = rearrange(query(x), "b s (h d) -> b h s d", h = num_heads)
        k = rearrange(key(x), "b s (h d) -> b h s d", h = num_heads)
        v = rearrange(value(x), "b s (h d) -> b h s d", h = num_heads)
        o = attention(q, k, v, causal = false, dropout_p = 0.1)
        return rearrange(o, "b h s d -> b s (h d)")
    }
}

layer BertOutput(d_in, d_model) {            # dense, dropout, then LayerNorm(x + residual)
    dense     = Linear(d_in, d_model, bias = true)
    LayerNorm = LayerNorm(d_model, 1e-12)
    forward(h: [b, s, d_in], residual: [b, s, d_model]) -> [b, s, d_model] {
        return LayerNorm(dropout(dense(h), 0.1) + residual)
    }
}

layer BertAttention(d_model, num_heads) {
    self   = BertSelfAttention(d_model, num_heads)
    output = BertOutput(d_model, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] { return output(self(x), x) }
}

layer BertIntermediate(d_model, d_ff) {
    dense = Linear(d_model, d_ff, bias = true)
    forward(x: [b, s, d_model]) -> [b, s, d_ff] { return gelu(dense(x), "none") }
}

layer BertLayer(d_model, num_heads, d_ff) {
    attention    = BertAttention(d_model, num_heads)
    intermediate = BertIntermediate(d_model, d_ff)
    output       = BertOutput(d_ff, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        x = attention(x)                        # post-LN: the LN output is the residual stream
        return output(intermediate(x), x)
    }
}

layer BertPooler(d_model) {
    dense = Linear(d_model, d_model, bias = true)
    forward(x: [b, s, d_model]) -> [b, d_model] { return tanh(dense(select(x, 1, 0))) }
}

model BertModel {
    embeddings = BertEmbeddings(V, P, T, D, L)
    layer      = repeat N of BertLayer(D, H, F)
    pooler     = BertPooler(D)
    forward(tokens: int64[B, L], targets: int64[B, L], labels: int64[B]) {
        x = layer(embeddings(tokens))                          : [B, L, D]
        words = embeddings.word_embeddings.weight
        mlm = cross_entropy(linear(x, words), targets)        # masked-LM logits, tied
        pooled = cross_entropy(linear(pooler(x), words), labels)
        return mlm + pooled
    }
}

preset base { V = 30_522, P = 512, L = 512, T = 2, D = 768, N = 12, H = 12, F = 3_072 }
expect params == V*D + P*D + T*D + 2*D + N*(4*D**2 + 2*D*F + F + 9*D) + D**2 + D
expect params == 109_482_240 at base

assume "post-LN blocks: LN(x + dropout(sublayer(x))); LayerNorm eps 1e-12 with bias; biases on every linear"
assume "GELU exact (erf); dropout 0.1 on embeddings, attention probabilities and both residual branches"
assume "position_ids and token_type_ids are int64 buffers [1, P]; token types all zero"
assume "BertModel has no head: the training loss reuses the word embeddings as a tied decoder for the sequence output and the pooled output, adding no parameters"
assume "bidirectional attention in the math variant (dropout on probabilities)"
train { use math }
