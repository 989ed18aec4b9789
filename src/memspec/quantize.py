"""`--weights FORMAT`: the Linear layers' weights stored quantized, as transformers'
BitsAndBytesConfig loads them (`load_in_4bit`, `load_in_8bit`) or its
FineGrainedFP8Config (fp8).

Every `Linear` of the spec but the kept ones (`--weights-skip`: by default the output
layer, `lm_head`, which transformers' `get_keys_to_not_convert` keeps in the load dtype
with any module of tied weights and the module of the model's last parameter; for
another model name those, as `llm_int8_skip_modules`) is instantiated as std's
`Linear4bit` (nf4, fp4: specs/std/bitsandbytes/linear4bit.mspec): a frozen packed weight
with its quant_state, multiplied by `matmul_4bit` in the compute dtype; or as std's
`Linear8bitLt` (int8, LLM.int8(): specs/std/bitsandbytes/linear8bit.mspec): a frozen int8
weight with its float32 row scales, x quantized to int8 rows for each product
(`int8_vectorwise_quant`, `matmul_8bit`; `memspec.ops.quantized`); or as std's
`FP8Linear` (fp8: specs/std/transformers/fp8.mspec): a float8_e4m3fn weight with float32
scales per [128, 128] block, multiplied by one fused kernel (`matmul_fp8`). Under LoRA
the wrapped Linear, `base_layer`, is the quantized one: QLoRA, or LoRA on an 8-bit or
FP8 base.
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.errors import UsageError
from memspec.ir.types import DType

__all__ = ["FORMATS", "FP8_BLOCK", "FUSED_ROWS_MAX", "QUANTIZED_LAYERS", "SKIPPED", "Weights"]

SKIPPED = ("lm_head",)  # transformers' modules_to_not_convert: the output embeddings
# the formats bitsandbytes has: the two 4-bit ones store two codes a byte and differ in
# the code; int8 is LLM.int8()'s row-wise absmax quantization
FORMATS = {
    "nf4": "4-bit NormalFloat (QLoRA's)",
    "fp4": "4-bit float",
    "int8": "LLM.int8() (load_in_8bit)",
    "fp8": "FP8 e4m3 with a float32 scale per 128 x 128 block (FineGrainedFP8Config)",
}
# the std layer each format's Linear becomes, and the std module that declares it
QUANTIZED_LAYERS = {
    "nf4": ("Linear4bit", "bitsandbytes.linear4bit"),
    "fp4": ("Linear4bit", "bitsandbytes.linear4bit"),
    "int8": ("Linear8bitLt", "bitsandbytes.linear8bit"),
    "fp8": ("FP8Linear", "transformers.fp8"),
}
# formats a user may ask for that memspec does not model yet, and why
UNMODELLED: dict[str, str] = {}
COMPUTE = ("bfloat16", "float16", "float32")
# FineGrainedFP8Config's weight_block_size, (128, 128): a float32 scale per block
FP8_BLOCK = 128
# transformers' llm_int8_threshold: an activation column with any |x| >= 6 is an outlier
INT8_THRESHOLD = 6
# bitsandbytes 0.50's gemm_4bit on CUDA (backends/cuda/ops.py): a product of at most 4
# rows (7 in float32) runs its fused kernel on every GPU, one of more than 1,536 rows
# dequantizes the weight first on every GPU; between, the GPU's architecture, SM count
# and the weight's shape decide (`_gemm_4bit_use_custom_cuda`)
FUSED_ROWS = {"float32": 7}
FUSED_ROWS_DEFAULT = 4
FUSED_ROWS_MAX = 1536


@dataclass(frozen=True, slots=True)
class Weights:
    """How the Linear layers' weights are stored (BitsAndBytesConfig's settings)."""

    format: str
    # 4-bit only (None: the defaults, QLoRA's; int8 has neither): bnb_4bit_compute_dtype,
    # bfloat16 (transformers' is float32), and bnb_4bit_use_double_quant, True (its False)
    compute: str | None = None
    double_quant: bool | None = None
    skip: tuple[str, ...] = SKIPPED  # Linear modules kept unquantized (names or last parts)
    # 4-bit only: the most rows a product runs bitsandbytes' fused kernel at (no
    # dequantized weight); None: what every CUDA GPU does, 4 (7 in float32 compute)
    fused_rows: int | None = None

    def __post_init__(self) -> None:
        if self.format in UNMODELLED:
            raise UsageError(f"--weights {self.format}: {UNMODELLED[self.format]}")
        if self.format not in FORMATS:
            known = ", ".join([*FORMATS, *UNMODELLED])
            raise UsageError(f"--weights takes one of {known}, not {self.format!r}")
        if self.int8 or self.fp8:
            # transformers reads no bnb_4bit_* setting under load_in_8bit or FP8:
            # Linear8bitLt and FP8Linear have no compute dtype (x's dtype around their
            # products) and no block maxima, so a flag that would change nothing is taken
            # for a mistake
            how = (
                "LLM.int8() multiplies in int8 and returns x's dtype"
                if self.int8
                else "FP8Linear's kernel returns x's dtype"
            )
            for flag, value in (
                ("--compute-dtype", self.compute),
                ("--no-double-quant", self.double_quant),
                ("--bnb-fused-rows", self.fused_rows),
            ):
                if value is not None:
                    raise UsageError(
                        f"{flag} is a 4-bit setting (bnb_4bit_*), which --weights "
                        f"{self.format} does not read: {how}"
                    )
            return
        if self.compute is None:
            object.__setattr__(self, "compute", "bfloat16")
        if self.double_quant is None:
            object.__setattr__(self, "double_quant", True)
        if self.compute not in COMPUTE:
            raise UsageError(f"--compute-dtype takes one of {', '.join(COMPUTE)}")
        if self.fused_rows is None:
            object.__setattr__(self, "fused_rows", self.fused_everywhere)
        if not 0 <= self.fused_rows <= FUSED_ROWS_MAX:
            raise UsageError(
                f"--bnb-fused-rows takes 0 to {FUSED_ROWS_MAX:,}: bitsandbytes dequantizes "
                f"the weight for a product of more rows on every GPU, not {self.fused_rows}"
            )

    @property
    def fused_everywhere(self) -> int:
        """The most rows every CUDA GPU's gemm_4bit fuses in this compute dtype."""
        return FUSED_ROWS.get(str(self.compute), FUSED_ROWS_DEFAULT)

    @property
    def int8(self) -> bool:
        return self.format == "int8"

    @property
    def fp8(self) -> bool:
        return self.format == "fp8"

    @property
    def layer(self) -> str:
        """The std layer a quantized Linear becomes."""
        return QUANTIZED_LAYERS[self.format][0]

    @property
    def module(self) -> str:
        """The std module (`bitsandbytes.linear4bit`) that declares it."""
        return QUANTIZED_LAYERS[self.format][1]

    @property
    def compute_dtype(self) -> DType:
        dtype = DType.parse(str(self.compute))
        assert dtype is not None
        return dtype

    def describe(self) -> str:
        if self.fp8:
            return (
                f"{self.format}: {FORMATS[self.format]}, every Linear but "
                f"{', '.join(self.skip)} as transformers' FP8Linear: one float8_e4m3fn byte "
                "per weight and a float32 scale per [128, 128] block, all frozen; each product "
                "one fused kernel (Triton's: x quantized inside it), its output in x's dtype; "
                "backward dequantizes the weight to x's dtype for x's gradient. Where "
                "DeepGEMM serves the products (SM90+, installed), each also holds x in fp8 "
                "and its scales (not modelled)"
            )
        if self.int8:
            return (
                f"{self.format}: {FORMATS[self.format]}, every Linear but {', '.join(self.skip)} "
                "as bitsandbytes' Linear8bitLt: one int8 byte per weight and a float32 scale "
                "per output row; x quantized to int8 rows for each product, CUDA's "
                f"MatMul8bitLt at threshold {INT8_THRESHOLD} with no outlier column (the "
                "outliers are the data's: each adds its column of x and of the weight in "
                "floating point)"
            )
        quant = (
            "block maxima double-quantized (uint8, a float32 maximum per 256)"
            if self.double_quant
            else "float32 block maxima"
        )
        return (
            f"{self.format}: {FORMATS[self.format]}, every Linear but {', '.join(self.skip)} as "
            f"bitsandbytes' Linear4bit: half a byte per weight (an odd count pads half a "
            f"byte), one block maximum per 64 weights ({quant}); products in "
            f"{self.compute}, {self.kernels()}"
        )

    def kernels(self) -> str:
        """Which of bitsandbytes' two 4-bit products runs at which row counts."""
        dequantized = "the weight dequantized first"
        if self.fused_rows == 0:
            return f"each on {dequantized} (bitsandbytes' default kernel, the CPU's)"
        every = self.fused_everywhere
        rows = "row" if self.fused_rows == 1 else "rows"
        start = max(self.fused_rows, every) + 1
        between = (
            f"; from {start:,} to {FUSED_ROWS_MAX:,} bitsandbytes 0.50 chooses by the GPU's "
            "architecture and SM count and the weight's shape: counted dequantized, the "
            "larger (--bnb-fused-rows N says the GPU fuses up to N)"
            if self.fused_rows < FUSED_ROWS_MAX
            else ""
        )
        if self.fused_rows < every:  # below the every-GPU floor: as the user says
            between += (
                f"; {self.fused_rows + 1:,} to {every} rows counted dequantized, as "
                "--bnb-fused-rows says"
            )
        return (
            f"a product of at most {self.fused_rows:,} {rows} (x's rows) in bitsandbytes' "
            f"fused kernel (every CUDA GPU's to {every}), of more on {dequantized} (every "
            f"GPU's above {FUSED_ROWS_MAX:,} rows{between})"
        )

    def skips(self, name: str) -> bool:
        """Whether the Linear named `name` (its path) stays unquantized."""
        return any(name == s or name.endswith("." + s) for s in self.skip)
