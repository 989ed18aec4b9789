"""The true peak of a training step, split by job:

- `moments.py`: the vocabulary (phases, positions relative to a region, `Point`);
- `ledger.py`: memory blocks, reference-counted, and the moments recorded;
- `forward.py` / `backward.py`: the step's forward as a reading of the step
  interpreter (`ir/interpreter.py`), and backward replayed from its records;
- `replay.py`: the two run as one step, and what a middle repetition holds;
- `repeats.py`: the repetitions the replay leaves out, added back at every moment;
- `optimizer_step.py`: the moments of `optimizer.step()`;
- `true_peak.py`: the pass: all of them combined, pruned to the moments that can peak.
"""

from memspec.passes.peak.replay import PeakUnavailable
from memspec.passes.peak.result import CATEGORIES, PeakCandidate, PeakResult, StepOptions
from memspec.passes.peak.true_peak import peak_memory

__all__ = [
    "CATEGORIES",
    "PeakCandidate",
    "PeakResult",
    "PeakUnavailable",
    "StepOptions",
    "peak_memory",
]
