# Mistral 7B v0.1 (Hugging Face MistralForCausalLM): the LLaMA block (llama.mspec) with
# grouped-query attention 32/8, d_ff 14336, and a 4096-token sliding window, which is a
# mask: the parameters are those of LLaMA's shape.
use std
use "llama.mspec"        # its layers and dims; its model, presets and expects stay there

dim sliding_window as W

model MistralForCausalLM {
    embed_tokens = Embedding(V, D)
    layers       = repeat N of LlamaDecoderLayer(D, H, KV, F, L, W)
    norm         = RMSNorm(D, 1e-5)
    lm_head      = Linear(D, V)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        x = layers(embed_tokens(tokens))
        logits = lm_head(norm(x))       : [B, L, V]
        return cross_entropy(logits, targets)
    }
}

preset mistral_7b { V = 32_000, L = 8_192, D = 4_096, N = 32, H = 32, KV = 8, F = 14_336,
                    W = 4_096 }
expect params == 2*V*D + N*(2*D**2 + 2*D**2*KV/H + 3*D*F + 2*D) + D
expect params == 7_241_732_096 at mistral_7b

assume "the LLaMA block: no biases, RMSNorm, SwiGLU, GQA with materialized repeat_kv, RoPE tables as buffers"
assume "sliding window W: a mask in the math variant; the attention scores stay [L, L] in memory"
assume "untied lm_head; trained in fp32 unless --precision says otherwise"
train { use math }
