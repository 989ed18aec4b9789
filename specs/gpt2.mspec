# GPT-2 (Hugging Face GPT2LMHeadModel, OpenAI weights, as transformers 5.x trains it by
# default): learned positions, pre-LN blocks, LayerNorm with bias, biases on every linear
# (HF's Conv1D: weight stored [in, out]), fused QKV, HF's `gelu_new` MLP of width 4D,
# attention through SDPA, final LayerNorm, LM head tied to the token embedding, dropout
# 0.1. Variants: `--use gelu_tanh` (F.gelu(approximate="tanh"), the fused activation),
# `--use eager` / `--use math` (attention). Under --mode inference its generate block runs
# the model in eval mode (no dropout) with the K/V cache the run names. Compile with:
#   memspec compile specs/gpt2.mspec --format md --preset small --set B=1
use std

dim batch_size              as B
dim context_length          as L
dim max_position_embeddings as P
dim vocab_size              as V
dim d_model                 as D
dim num_layers              as N
dim num_heads               as H
dim d_ff                    as F = 4 * D          # HF n_inner = None: 4 * n_embd

# HF's Conv1D(nf, nx): y = x @ W + b with W stored [nx, nf] (transposed against nn.Linear),
# one torch.addmm over x viewed as [rows, nx].
layer Conv1D(nf, nx) {
    param weight: [nx, nf]
    param bias: [nf]
    forward(x: [..., nx]) -> [..., nf] {
        return addmm(bias, x, weight)
    }
}

layer GPT2Attention(d_model, num_heads, dropout_p) {
    c_attn = Conv1D(3 * d_model, d_model)          # fused Q, K, V
    c_proj = Conv1D(d_model, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        qkv = c_attn(x)                            : [b, s, 3 * d_model]
        # qkv.split(d_model, dim=2), then view + transpose to [b, h, s, d]: all views
        q = rearrange(narrow(qkv, -1, 0, d_model), "b s (h d) -> b h s d", h = num_heads)
        k = rearrange(narrow(qkv, -1, d_model, d_model), "b s (h d) -> b h s d", h = num_heads)
        v = rearrange(narrow(qkv, -1, 2 * d_model, d_model), "b s (h d) -> b h s d",
                      h = num_heads)
        p = dropout_p
        if generating { p = 0 }                    # eval mode: SDPA without dropout
        if generating and quantized_kv {
            k_cached, v_cached = kv_fp8_cache(k, v)  # QuantizedCache(backend="fp8")
        } else {
            k_cached = kv_cache(k)                   # DynamicCache or StaticCache
            v_cached = kv_cache(v)
        }
        o = attention(q, k_cached, v_cached, causal = true, dropout_p = p)
        merged = rearrange(o, "b h s d -> b s (h d)")   # transpose + reshape: a copy
        if generating {
            # eval mode: no dropout; x (the caller's normed states) and the fused QKV
            # (query_states, a view of it, is a local) alive until the attention returns
            return hold(c_proj(merged), x, qkv)
        }
        return dropout(c_proj(merged), dropout_p)       # resid_dropout
    }
}

# config.activation_function: "gelu_new" (GPT-2's, HF's default) or "gelu_pytorch_tanh"
fn gpt2_activation(x: [..., f]) -> [..., f]
variant gelu_new {
    return gelu_new(x)
}
variant gelu_tanh {
    return gelu(x, "tanh")
}

layer GPT2MLP(d_model, d_ff, dropout_p) {
    c_fc   = Conv1D(d_ff, d_model)
    c_proj = Conv1D(d_model, d_ff)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        if generating {  # eval mode: no dropout; x, the caller's, alive until it returns
            return hold(c_proj(gpt2_activation(c_fc(x))), x)
        }
        return dropout(c_proj(gpt2_activation(c_fc(x))), dropout_p)
    }
}

layer GPT2Block(d_model, num_heads, d_ff, dropout_p) {
    ln_1 = LayerNorm(d_model, 1e-5)
    attn = GPT2Attention(d_model, num_heads, dropout_p)
    ln_2 = LayerNorm(d_model, 1e-5)
    mlp  = GPT2MLP(d_model, d_ff, dropout_p)
    forward(x: [b, s, d_model], mask) -> [b, s, d_model] {
        # GPT2Model passes the causal mask positionally: a checkpoint of the block saves it
        # with its input
        held = hold(x, mask)
        a = attn(ln_1(held))                       # pre-LN; attn_output, a local
        x = held + a
        if generating {  # the model's loop holds the block's input until it returns
            return hold(x + mlp(ln_2(x)), held, a)
        }
        return hold(x + mlp(ln_2(x)), a)
    }
}

model GPT2LMHeadModel {
    wte  = Embedding(V, D)
    wpe  = Embedding(P, D)
    h    = repeat N of GPT2Block(D, H, F, 0.1)
    ln_f = LayerNorm(D, 1e-5)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        position_ids = arange(L)
        embeds = hf_input_embeds(wte(tokens)) + wpe(rearrange(position_ids, "s -> 1 s"))
        mask = hf_causal_mask(position_ids, B)     # a local of GPT2Model's forward
        x = dropout(embeds, 0.1)                                   : [B, L, D]
        x = h(x, mask)
        logits = linear(hold(ln_f(x), mask), wte.weight)           : [B, L, V]
        logits = returned(logits)                   # in the outputs object (--keep-outputs)
        return cross_entropy(logits, hf_shift_labels(targets))   # labels = input_ids
    }
    # --mode inference, GPT2Model's forward in eval mode (no dropout) and the tied head on
    # the last position only (logits_to_keep=1); inputs_embeds, position_embeds, the
    # position ids and the mask are locals until GPT2Model returns
    generate(tokens: int64[B, L]) {
        # wpe has P rows: the positions a forward reads, past to past + L, must be among
        # them (torch's embedding raises an IndexError past the table)
        past = 0
        if decoding { past = past_length }
        table = narrow(wpe.weight, 0, past, L)   # a view: the check, no memory
        inputs_embeds = hf_input_embeds(wte(tokens))
        if hf_generate {
            # generate's [B, L] position ids (generate's tensors, counted with its
            # bookkeeping): the tokens, of that shape, stand for them in wpe's lookup
            position_ids = select(tokens, 0, 0)
            position_embeds = wpe(tokens)
        } else {
            position_ids = arange(L)  # arange(L) + past_seen_tokens, unsqueezed
            position_embeds = wpe(rearrange(position_ids, "s -> 1 s"))
        }
        mask = hf_causal_mask(position_ids, B)
        x = h(inputs_embeds + position_embeds, mask)
        hidden = hold(ln_f(x), inputs_embeds, position_embeds, position_ids, mask, table)
        return returned(linear(narrow(hidden, 1, L - 1, 1), wte.weight))
    }
}

# gpt2 (124M): n_vocab 50257, n_positions 1024, n_embd 768, n_layer 12, n_head 12.
# --hf-config: transformers' GPT2Config (openai-community/gpt2's config.json names; n_inner
# null is 4 * n_embd); the head is tied to wte (tie_word_embeddings, true by default).
hf_config "gpt2" {
    V = vocab_size, D = n_embd, N = n_layer, H = n_head, P = n_positions, L = n_positions
    F = default(n_inner, 4 * n_embd)
    require default(tie_word_embeddings, true)
}

preset small { V = 50_257, P = 1_024, L = 1_024, D = 768, N = 12, H = 12, F = 3_072 }
expect params == V*D + P*D + N*(4*D**2 + 2*D*F + F + 9*D) + 2*D
expect params == 124_439_808 at small

assume "LM head tied to wte (no bias): one parameter, one gradient, one optimizer state for two uses"
assume "every linear is HF's Conv1D with a bias (weight stored [in, out], x @ W + b); LayerNorm eps 1e-5 with bias"
assume "pre-LN blocks; d_ff = 4 d_model; gelu_new as HF writes it (its tanh approximation in Python ops)"
assume "dropout 0.1 after wte + wpe, on the attention probabilities, after attn.c_proj and after mlp.c_proj: each saves its mask"
assume "attention through SDPA on the CPU (HF's default): with dropout its math path, QK^T / sqrt(d), an additive causal mask (not saved), softmax, dropout"
assume "no causal-mask buffer (recent HF versions register none); positions arange(L), L <= max_position_embeddings"
assume "targets are HF's labels (the input ids): the loss pads them by one ignored position and shifts them, a contiguous copy saved by nll_loss (a view of the padded labels at B = 1); logits stay [B, L, V]"
train { use sdpa; use gelu_new }
