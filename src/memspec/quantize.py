"""`--weights FORMAT`: the Linear layers' weights stored quantized, as transformers'
BitsAndBytesConfig loads them (`load_in_4bit`).

Every `Linear` of the spec but the kept ones (`--weights-skip`: by default the output
layer, `lm_head`, which transformers' `get_keys_to_not_convert` keeps in the load dtype
with any module of tied weights and the module of the model's last parameter; for
another model name those, as `llm_int8_skip_modules`) is instantiated as std's
`Linear4bit` (specs/std/bitsandbytes/linear4bit.mspec): a frozen packed weight with its quant_state,
multiplied by `matmul_4bit` in the compute dtype (`memspec.ops.quantized`). Under LoRA the
wrapped Linear, `base_layer`, is the quantized one: QLoRA.
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.errors import UsageError
from memspec.ir.types import DType

__all__ = ["FORMATS", "QUANTIZED_LAYER", "SKIPPED", "Weights"]

QUANTIZED_LAYER = "Linear4bit"
SKIPPED = ("lm_head",)  # transformers' modules_to_not_convert: the output embeddings
# the 4-bit formats bitsandbytes has; both store two codes a byte and differ in the code
FORMATS = {
    "nf4": "4-bit NormalFloat (QLoRA's)",
    "fp4": "4-bit float",
}
# formats a user may ask for that memspec does not model yet, and why
UNMODELLED = {
    "int8": "LLM.int8()'s CUDA matmul (int8 products with fp16 outliers) is not modelled yet",
    "fp8": "FP8 weights (transformers' FP8Linear, torchao) are not modelled yet",
}
COMPUTE = ("bfloat16", "float16", "float32")


@dataclass(frozen=True, slots=True)
class Weights:
    """How the Linear layers' weights are stored (BitsAndBytesConfig's settings)."""

    format: str
    compute: str = "bfloat16"  # bnb_4bit_compute_dtype (QLoRA's; transformers' is float32)
    double_quant: bool = True  # bnb_4bit_use_double_quant (QLoRA's; transformers' is False)
    skip: tuple[str, ...] = SKIPPED  # Linear modules kept unquantized (names or last parts)

    def __post_init__(self) -> None:
        if self.format in UNMODELLED:
            raise UsageError(f"--weights {self.format}: {UNMODELLED[self.format]}")
        if self.format not in FORMATS:
            known = ", ".join([*FORMATS, *UNMODELLED])
            raise UsageError(f"--weights takes one of {known}, not {self.format!r}")
        if self.compute not in COMPUTE:
            raise UsageError(f"--compute-dtype takes one of {', '.join(COMPUTE)}")

    @property
    def compute_dtype(self) -> DType:
        dtype = DType.parse(self.compute)
        assert dtype is not None
        return dtype

    def describe(self) -> str:
        quant = (
            "block maxima double-quantized (uint8, a float32 maximum per 256)"
            if self.double_quant
            else "float32 block maxima"
        )
        return (
            f"{self.format}: {FORMATS[self.format]}, every Linear but {', '.join(self.skip)} as "
            f"bitsandbytes' Linear4bit: half a byte per weight (an odd count pads half a "
            f"byte), one block maximum per 64 weights ({quant}); products in "
            f"{self.compute} on the dequantized weight"
        )

    def skips(self, name: str) -> bool:
        """Whether the Linear named `name` (its path) stays unquantized."""
        return any(name == s or name.endswith("." + s) for s in self.skip)
