# LoRA (Hu et al., 2021) as PEFT injects it (peft.tuners.lora.layer.Linear, adapter
# "default"): `--lora R` puts this layer where the spec has a targeted Linear, with the
# Linear's own arguments. The Linear becomes `base_layer` (its state_dict keys gain
# `.base_layer`, frozen like every parameter whose name lacks `lora_`), beside
# A [r, in] and B [out, r] in ModuleDicts keyed by adapter name:
# `q_proj.lora_A.default.weight`. The adapters are float32 whatever the model's dtype
# (get_peft_model's autocast_adapter_dtype=True upcasts bfloat16 and float16 ones).
# PEFT's forward:
#     result = self.base_layer(x)
#     x = self._cast_input_dtype(x, lora_A.weight.dtype)   # x.to(float32), or x itself
#     result = result + lora_B(lora_A(dropout(x))) * scaling
#     result = result.to(torch_result_dtype)
# with dropout nn.Identity at lora_dropout = 0 and scaling = lora_alpha / r.
layer LoraWeight(in_features, out_features) {
    param weight: float32[out_features, in_features]
    forward(x: [..., in_features]) -> [..., out_features] {
        return linear(x, weight)
    }
}

# PEFT's nn.ModuleDict of one adapter's Linear, keyed by the adapter's name.
layer LoraAdapters(in_features, out_features) {
    default = LoraWeight(in_features, out_features)
    forward(x: [..., in_features]) -> [..., out_features] {
        return default(x)
    }
}

layer LoraLinear(in_features, out_features, bias = false, r = 8, lora_alpha = 8,
                 lora_dropout = 0) {
    let scaling = lora_alpha / r
    base_layer = Linear(in_features, out_features, bias)
    lora_A = LoraAdapters(in_features, r)
    lora_B = LoraAdapters(r, out_features)
    forward(x: [..., in_features]) -> [..., out_features] {
        result = base_layer(x)
        cast = type_as(x, lora_A.default.weight)
        h = cast
        if lora_dropout > 0 { h = dropout(cast, lora_dropout) }
        # PEFT's local x (the cast) and the caller's argument live until it returns
        return hold(type_as(result + scale(lora_B(lora_A(h)), scaling), result), x, cast)
    }
}
