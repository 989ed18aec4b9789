"""The loss under torch's `loss_parallel()`: log-softmax and nll_loss of logits sharded
on the vocabulary (the LM head's `loss_parallel` style), as DTensor's own handlers run
them (torch/distributed/tensor/parallel/loss.py). The elaborator uses these in place
of `log_softmax` and `nll_loss` when their input is sharded on the class dim.

What each keeps for backward is what the ordinary op keeps (autograd records the aten
op); what differs is memory inside them, counted here with C the local classes, N the
targets, X the bytes of the logits' dtype and T of the targets':

- log-softmax: the max all-reduced, x - max (a tensor of x's size), its exp summed and
  all-reduced, the log; at its largest, beside the output: x - max and three [N, 1]
  tensors (12 N bytes in float32). A float16 or bfloat16 x is computed in float32 (the
  handler's `elementwise_dtypes`): x's float32 copy, x - max and the float32 result stay
  until it returns, beside the output cast back: 12 C N + 12 N bytes.
- nll_loss: the targets masked to this rank's classes (`_MaskPartial`: the safe targets,
  the mask, the shifted targets), the picked log-probabilities all-reduced, negated and
  masked: (2 T + 4 X + 1) N bytes at once at its largest (or 3 T + 1 while it shifts).
- backward: nll_loss's handler makes the log-softmax's input gradient itself (the
  gradient of log-softmax's output is handed on as it is): zeros like x, exp(x), their
  sum and that times the output's gradient, three of x's size at once, beside the masked
  targets, the mask, the update, an arange and the masked output gradient
  ((3 T + 1 + 2 X) N bytes).
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.graph import Graph, OpApply
from memspec.ir.types import numel
from memspec.ops.reductions import _nll_infer, _nll_lower, _nll_saved, _same_shape
from memspec.ops.registry import BackwardMoment, Grad, OpDef, OpKind, Saved, register

__all__ = ["PARALLEL_LOSS"]

# the op each ordinary op becomes when its input is sharded on the class dim
PARALLEL_LOSS = {"log_softmax": "parallel_log_softmax", "nll_loss": "parallel_nll_loss"}


def _sizes(op: OpApply, graph: Graph) -> tuple[sp.Expr, sp.Expr, int, int]:
    """(elements of the logits, of the targets, bytes of a logit, of a target)."""
    x = graph.value(op.inputs[0])
    if len(op.inputs) > 1:
        target = graph.value(op.inputs[1])
        return numel(x.shape), numel(target.shape), x.dtype.itemsize, target.dtype.itemsize
    return numel(x.shape), numel(x.shape[:-1]), x.dtype.itemsize, 8


def _log_softmax_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    elements, rows, logit, _ = _sizes(op, graph)
    if logit >= 4:  # float32 (float64): computed in x's dtype, x itself
        return elements * logit + 3 * rows * logit
    # float16 / bfloat16: computed in float32 (elementwise_dtypes' DEFAULT): x's float32
    # copy, x - max and the float32 result, all locals until it returns, beside the
    # output cast back to x's dtype
    return 3 * elements * 4 + 3 * rows * 4


def _nll_workspace(op: OpApply, graph: Graph) -> sp.Expr:
    _, rows, logit, target = _sizes(op, graph)
    return rows * sp.Max(2 * target + 4 * logit + 1, 3 * target + 1)


def _nll_backward(op: OpApply, graph: Graph, sums_in_place: bool) -> tuple[BackwardMoment, ...]:
    elements, rows, logit, target = _sizes(op, graph)
    return (BackwardMoment(3 * elements * logit + (3 * target + 1 + 2 * logit) * rows),)


def _saves_output(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    return (Saved("output", op.outputs[0]),)


register(
    OpDef(
        PARALLEL_LOSS["log_softmax"],
        "log-softmax over the last dim, sharded across the tensor-parallel ranks (loss_parallel)",
        ("x",),
        _same_shape,
        _saves_output,
        lower=lambda t, a: t[0].log_softmax(-1),
        grads=lambda op, graph: (Grad.THROUGH,),
        grads_doc="the output's gradient itself (nll_loss's backward made x's)",
        workspace=_log_softmax_workspace,
        kind=OpKind.SOFTMAX,
        shape_doc="x's shape",
        saved_doc="the output",
    )
)
register(
    OpDef(
        PARALLEL_LOSS["nll_loss"],
        "mean negative log-likelihood of integer targets, the classes sharded across the "
        "tensor-parallel ranks (loss_parallel)",
        ("log_probs", "targets"),
        _nll_infer,
        _nll_saved,
        lower=_nll_lower,
        workspace=_nll_workspace,
        backward_moments=_nll_backward,
        kind=OpKind.LOSS,
        shape_doc="log_probs [..., C], integer targets [...] -> [] in log_probs' dtype",
        saved_doc="input, targets and a scalar total_weight in the input's dtype",
    )
)
