# Mamba (Hugging Face MambaForCausalLM, state-spaces/mamba-*-hf): N residual blocks, each an
# RMSNorm (weight only) and a MambaMixer: in_proj D -> 2ED split into x and the gate z; a
# depthwise causal conv1d over the sequence (ED channels, kernel d_conv, bias) and SiLU;
# x_proj ED -> R + 2S split into dt, B and C; dt_proj R -> ED with bias and softplus; the
# selective scan with A = -exp(A_log) [ED, S] and the skip D [ED]; the SiLU gate; out_proj
# ED -> D. A final norm_f, and the LM head tied to the embedding. Member names follow HF's
# state_dict (backbone.layers.0.mixer.in_proj.weight, backbone.norm_f.weight). The scan has
# two implementations (std/ssm.mspec): `slow`, HF's slow_forward (the CPU path), verified
# against PyTorch; `fused`, mamba_ssm's CUDA selective_scan_fn. Compile:
#   memspec compile specs/mamba.mspec --format md --preset mamba_130m --set B=1
use std

dim batch_size     as B
dim context_length as L
dim vocab_size     as V
dim d_model        as D
dim num_layers     as N
dim d_state        as S
dim d_conv         as K
dim expand         as E
dim dt_rank        as R = ceil(D / 16)      # HF time_step_rank = "auto": ceil(hidden_size / 16)

# mamba_ssm's MambaLMHeadModel rounds the vocabulary up to a multiple of 8 (HF's configs
# ship it rounded: 50280 = 8 * 6285 for the GPT-NeoX tokenizer's 50277 tokens).
let pad_vocab_size_multiple = 8
let padded_vocab = pad_vocab_size_multiple * ceil(V / pad_vocab_size_multiple)

# HF MambaMixer (slow_forward's layout: [b, channels, s] between in_proj and out_proj).
layer MambaMixer(d_model, d_inner, d_state, d_conv, dt_rank) {
    conv1d   = Conv1d(d_inner, d_inner, d_conv, padding = d_conv - 1, groups = d_inner)
    in_proj  = Linear(d_model, 2 * d_inner)
    x_proj   = Linear(d_inner, dt_rank + 2 * d_state)
    dt_proj  = Linear(dt_rank, d_inner, bias = true)
    param A_log: [d_inner, d_state]
    param D: [d_inner]
    out_proj = Linear(d_inner, d_model)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        xz = rearrange(in_proj(x), "b s c -> b c s")        # projected_states: a view
        h = narrow(xz, 1, 0, d_inner)                       # .chunk(2, dim=1): views
        gate = narrow(xz, 1, d_inner, d_inner)
        h = silu(narrow(conv1d(h), 2, 0, s))                # causal: the first s outputs
        ssm = x_proj(rearrange(h, "b c s -> b s c"))        : [b, s, dt_rank + 2 * d_state]
        dt = narrow(ssm, 2, 0, dt_rank)                     # torch.split: views
        B = narrow(ssm, 2, dt_rank, d_state)
        C = narrow(ssm, 2, dt_rank + d_state, d_state)
        y = selective_scan(h, dt, -exp(A_log), B, C, D, gate, dt_proj.weight, dt_proj.bias)
        return out_proj(rearrange(y, "b c s -> b s c"))
    }
}

layer MambaBlock(d_model, d_inner, d_state, d_conv, dt_rank, eps) {
    norm  = RMSNorm(d_model, eps)
    mixer = MambaMixer(d_model, d_inner, d_state, d_conv, dt_rank)
    forward(x: [b, s, d_model]) -> [b, s, d_model] {
        return x + mixer(norm(x))
    }
}

layer MambaModel(vocab_size, d_model, num_layers, d_inner, d_state, d_conv, dt_rank,
                 eps = 1e-5) {
    embeddings = Embedding(vocab_size, d_model)
    layers     = repeat num_layers of MambaBlock(d_model, d_inner, d_state, d_conv, dt_rank,
                                                 eps)
    norm_f     = RMSNorm(d_model, eps)
    forward(tokens: int64[b, s]) -> [b, s, d_model] {
        return norm_f(layers(hf_input_embeds(embeddings(tokens))))
    }
}

model MambaForCausalLM {
    backbone = MambaModel(padded_vocab, D, N, E * D, S, K, R)
    forward(tokens: int64[B, L], targets: int64[B, L]) {
        logits = linear(backbone(tokens), backbone.embeddings.weight)   # tied lm_head
        return cross_entropy(logits, hf_shift_labels(targets))   # labels = input_ids
    }
}

# state-spaces/mamba-130m-hf config.json: vocab_size 50280, hidden_size 768,
# num_hidden_layers 24, state_size 16, conv_kernel 4, expand 2, time_step_rank "auto" (48).
# The count is sum(p.numel() for p in model.parameters()) of the HF model.
preset mamba_130m { V = 50_280, L = 2_048, D = 768, N = 24, S = 16, K = 4, E = 2 }

# Embedding (tied head) and norm_f; per layer the norm (D), in_proj (2ED^2), conv1d
# (ED*K + ED), x_proj (ED(R + 2S)), dt_proj (RED + ED), A_log (EDS), D (ED), out_proj (ED^2).
expect params == 8*ceil(V/8)*D + D + N*(D + 3*E*D**2 + E*D*(K + 1) + E*D*(2*R + 2*S) + 2*E*D + E*D*S)
expect params == 129_135_360 at mamba_130m

assume "HF MambaForCausalLM: lm_head tied to backbone.embeddings (one parameter, one gradient, one optimizer state for two uses)"
assume "vocab padded up to a multiple of 8 (pad_vocab_size_multiple, mamba_ssm's rule); HF's configs ship it already padded (50280)"
assume "dt_rank R = ceil(D / 16) (time_step_rank auto) unless set; inner width E*D with E = expand"
assume "no biases except conv1d's and dt_proj's (use_bias = false, use_conv_bias = true); RMSNorm weight only, eps 1e-5"
assume "scan variant slow = HF MambaMixer.slow_forward with use_mambapy = false (the path without the CUDA kernels): dA and dB*u [B, E*D, L, S] materialized, L + 1 states [B, E*D, S] kept by the Python loop"
assume "scan variant fused = mamba_ssm selective_scan_fn (CUDA, z given, delta_softplus): inputs (contiguous copies of the strided B, C and z), fp32 checkpoints [B, E*D, ceil(L/2048), 2S] and the un-gated output; the conv stays torch's conv1d + SiLU (HF would call causal_conv1d_fn, which keeps no [B, E*D, L + K - 1] output) and the projections stay as in the slow path; not verifiable on the CPU (memspec verify refuses it)"
assume "HF's CUDA training path calls mamba_inner_fn instead, which also fuses the conv and the projections and recomputes the conv output and delta in backward: not modelled"
assume "fp32 throughout (residual_in_fp32 is then a no-op); no dropout; targets are HF's labels (the input ids): the loss pads them by one ignored position and shifts them, a contiguous copy saved by nll_loss (a view of the padded labels at B = 1)"

train { precision fp32; optimizer adamw; use slow }
