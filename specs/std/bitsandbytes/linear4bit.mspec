# bitsandbytes' Linear4bit, as transformers builds it for BitsAndBytesConfig(
# load_in_4bit=True, bnb_4bit_quant_type="nf4" or "fp4", bnb_4bit_use_double_quant,
# bnb_4bit_compute_dtype): `--weights nf4|fp4` puts it where the spec has a Linear (not
# the output layer, lm_head, which transformers keeps). The weight is a frozen Params4bit
# of ceil(out * in / 2) bytes, [ceil(n/2), 1] uint8 (an odd n pads half a byte), with its
# quant_state beside it: one block maximum per 64 elements (a partial last block has its
# own), as uint8 codes under double quantization with a float32 maximum per 256 of them,
# their 256-entry float32 code and float32 offset, and the format's 16-entry float32 code.
# The quant_state tensors are no module's buffers (model.get_memory_footprint() leaves them
# out); they are counted here as buffers of the layer. Its forward (nn/modules.py):
#     x = x.to(compute_dtype); bias = self.bias.to(compute_dtype)
#     return bnb.matmul_4bit(x, weight.t(), bias).to(inp_dtype)
# A product of at most `fused_rows` rows runs bitsandbytes' fused kernel, of more the
# weight is dequantized first (--bnb-fused-rows; matmul_4bit's rules say which GPUs do
# what).
layer Linear4bit(in_features, out_features, bias = false, compute = "bfloat16",
                 double_quant = true, fused_rows = 4) {
    let has_bias = bias
    let blocks = ceil(in_features * out_features / 64)
    param weight: uint8[ceil(in_features * out_features / 2), 1] frozen
    if has_bias { param bias: [out_features] }                # trained, as nn.Linear's
    if double_quant {
        buffer absmax: uint8[blocks]
        buffer nested_absmax: float32[ceil(blocks / 256)]
        buffer nested_code: float32[256]
        buffer offset: float32[]
    } else {
        buffer absmax: float32[blocks]
    }
    buffer code: float32[16]
    forward(x: [..., in_features]) -> [..., out_features] {
        if has_bias {
            return type_as(matmul_4bit(to_dtype(x, compute), weight, to_dtype(bias, compute),
                                       out_features, in_features, double_quant, fused_rows), x)
        }
        return type_as(matmul_4bit(to_dtype(x, compute), weight, out_features, in_features,
                                   double_quant, fused_rows), x)
    }
}
