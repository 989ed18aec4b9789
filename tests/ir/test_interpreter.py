"""The step interpreter: one walk, read three ways (a trace here, torch in `lower/`, memory
in `passes/peak/`). A new reading overrides only the events it cares about."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.ir.interpreter import Interpreter
from memspec.ir.schedule import Loop, schedule
from tests.conftest import SPECS

NESTED = """
use std

dim batch_size as B
dim d_model as D
dim outer as N
dim inner as M

layer Inner(d) {
    fc = Linear(d, d)  # no bias
    forward(x: [b, d]) -> [b, d] { return relu(fc(x)) }
}

layer Outer(d) {
    inners = repeat M of Inner(d)
    forward(x: [b, d]) -> [b, d] { return inners(x) + x }
}

model Nested {
    blocks = repeat N of Outer(D)
    forward(x: [B, D], labels: int64[B]) {
        return cross_entropy(blocks(x), labels)
    }
}
"""


class Trace(Interpreter[str]):
    """Names each value after the op that made it and where the walk was."""

    def __init__(self, graph, counts):
        super().__init__(graph)
        self.counts = counts
        self.events: list[str] = []

    def repetitions(self, region):
        return self.counts[region.path]

    def enter_region(self, region, repetition):
        self.events.append(f"enter {region.path} {repetition}")

    def exit_region(self, region):
        self.events.append(f"exit {region.path}")

    def parameter(self, value, index):
        return f"{value.path}{list(index)}"

    def run_op(self, op, inputs, index):
        self.events.append(f"{op.op}({', '.join(inputs)})")
        return [f"{op.path}{list(index)}" for _ in op.outputs]


def test_the_walk_nests_loops_and_carries_each_output_into_the_next_repetition():
    graph = compile_spec(NESTED).graph
    trace = Trace(graph, {"blocks": 2, "blocks.inners": 2})
    (loss,) = trace.run(["x", "labels"])
    assert loss == "cross_entropy[]"
    # parameters per instance; a repetition reads the previous one's output, the first
    # one reads the region's input; a block's residual add reads that block's input
    assert [e for e in trace.events if not e.startswith("relu")] == [
        "enter blocks 0",
        "enter blocks.inners 0",
        "linear(x, blocks.inners.fc.weight[0, 0])",
        "enter blocks.inners 1",
        "linear(blocks.inners[0, 0], blocks.inners.fc.weight[0, 1])",
        "exit blocks.inners",
        "add(blocks.inners[0, 1], x)",
        "enter blocks 1",
        "enter blocks.inners 0",
        "linear(blocks[0], blocks.inners.fc.weight[1, 0])",
        "enter blocks.inners 1",
        "linear(blocks.inners[1, 0], blocks.inners.fc.weight[1, 1])",
        "exit blocks.inners",
        "add(blocks.inners[1, 1], blocks[0])",
        "exit blocks",
        "log_softmax(blocks[1])",
        "nll_loss(cross_entropy.log_probs[], labels)",
    ]


def test_the_schedule_drops_a_value_read_in_a_loop_only_after_the_loop():
    graph = compile_spec(NESTED).graph
    plan = schedule(graph)
    (outer,) = [item for item in plan.items if isinstance(item, Loop)]
    x = graph.inputs[0]
    # the model's input is the loop's first input (carried), so it is never dropped early
    assert all(x not in vids for vids in plan.drop_after_op.values())
    inner = next(item for item in outer.body if isinstance(item, Loop))
    assert graph.regions[inner.region].path == "blocks.inners"


def test_a_repeated_layer_called_twice_is_refused_by_each_reading():
    text = (SPECS / "cs336_lm.mspec").read_text()
    once = "layers(token_embeddings(tokens))"
    text = text.replace(once, f"layers({once})")
    assert "layers(layers(" in text
    text = text.replace("expect params", "# expect params")
    result = compile_spec(text)
    assert result.peak is None and "called more than once" in result.peak_unavailable
    trace = Trace(result.graph, {"layers": 1})
    with pytest.raises(NotImplementedError, match="called more than once"):
        trace.run(["tokens", "targets"])
