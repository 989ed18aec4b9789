# bitsandbytes' Linear8bitLt (LLM.int8()), as transformers builds it for
# BitsAndBytesConfig(load_in_8bit=True): has_fp16_weights=False, llm_int8_threshold 6.
# `--weights int8` puts it where the spec has a Linear (not the output layer, lm_head,
# which transformers keeps). The weight is a frozen Int8Params, int8 [out, in]: one byte
# a weight, each row scaled by its absmax. Those scales, SCB, float32 [out], are the
# weight's attribute (then the layer's `state`'s), no module's buffer
# (model.get_memory_footprint() leaves them out); they are counted here as a buffer of
# the layer, under the name state_dict gives them. Its forward (nn/modules.py,
# autograd/_functions.py), as CUDA runs it:
#     if self.bias is not None and self.bias.dtype != x.dtype:
#         self.bias.data = self.bias.data.to(x.dtype)      # the parameter itself changes
#     return bnb.matmul(x, self.weight, bias=self.bias, state=self.state)   # MatMul8bitLt
# The bias's cast is a copy here (the parameter keeps its dtype): bitsandbytes replaces
# the parameter's data with it, so after the first step the bias holds x's dtype.
layer Linear8bitLt(in_features, out_features, bias = false, threshold = 6) {
    let has_bias = bias
    param weight: int8[out_features, in_features] frozen
    if has_bias { param bias: [out_features] }                # trained, as nn.Linear's
    buffer SCB: float32[out_features]
    forward(x: [..., in_features]) -> [..., out_features] {
        rows, scales = int8_vectorwise_quant(x, threshold)
        if has_bias {
            return matmul_8bit(x, rows, scales, weight, type_as(bias, x))
        }
        return matmul_8bit(x, rows, scales, weight)
    }
}
