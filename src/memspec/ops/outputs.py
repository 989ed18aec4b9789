"""`returned(x)`: x is also returned to the training loop in the model's outputs object.

transformers' causal LMs return `logits` and, with `use_cache=True`, the K/V cache in
their outputs; a loop that keeps the object (`out = model(...); out.loss.backward()`)
holds those tensors until the step ends, while a Trainer keeps only the loss. The op
is x itself (no autograd node, no memory); the peak pass holds it to the step's end
when `StepOptions.keep_outputs` says the loop keeps its outputs.
"""

from __future__ import annotations

from memspec.ops.registry import Grad, InferContext, OpDef, OpKind, OutputSpec, register

__all__ = ["RETURNED"]

RETURNED = "returned"


def _returned_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    (x,) = ctx.inputs
    return (OutputSpec(x.shape, x.dtype, view_of=0, strides=x.strides),)


register(
    OpDef(
        RETURNED,
        "x, also returned in the model's outputs: held until the step ends when the loop "
        "keeps them (--keep-outputs)",
        ("x",),
        _returned_infer,
        lower=lambda t, a: t[0],
        grads=lambda op, graph: (Grad.THROUGH,),
        grads_doc="the output's gradient itself",
        kind=OpKind.LAYOUT,
        shape_doc="x itself",
        saved_doc="nothing",
    )
)
