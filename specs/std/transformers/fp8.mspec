# transformers' FP8Linear, as FineGrainedFP8Config() loads a model (its defaults:
# weight_block_size (128, 128), dynamic activation scales, float32 weight scales):
# `--weights fp8` puts it where the spec has a Linear (not the output layer, lm_head,
# which transformers keeps). The weight is float8_e4m3fn [out, in], one byte a weight;
# weight_scale_inv, float32 [ceil(out / 128), ceil(in / 128)], scales each [128, 128]
# block. Both are parameters that get no gradient (FP8LinearFunction returns none), nor
# does the bias, which stays in the model's dtype. Its forward (integrations/
# finegrained_fp8.py, transformers 5.24):
#     return _apply_if_grad(FP8LinearFunction, fp8_linear, input, self.weight,
#                           self.weight_scale_inv, self.block_size, self.bias, ...)
# fp8_linear runs one fused kernel (the Triton one: x quantized per 128 columns inside
# it, the output in x's dtype, the bias added in place). DeepGEMM, which transformers
# prefers where it is installed (SM90+, blocks of 128), quantizes x first: an fp8 copy
# of x and its scales beside the product, not modelled here.
layer FP8Linear(in_features, out_features, bias = false, block = 128) {
    let has_bias = bias
    param weight: float8_e4m3fn[out_features, in_features] frozen
    param weight_scale_inv: float32[ceil(out_features / block), ceil(in_features / block)] frozen
    if has_bias { param bias: [out_features] frozen }
    forward(x: [..., in_features]) -> [..., out_features] {
        if has_bias {
            return matmul_fp8(x, weight, weight_scale_inv, bias, block = block)
        }
        return matmul_fp8(x, weight, weight_scale_inv, block = block)
    }
}
