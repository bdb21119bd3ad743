"""Engine passes over a loaded model: prepared examples, hidden rows read from one forward, and
rows continued from an injected state through the upper blocks. Lenses build on these."""

from .examples import PreparedExample, batches, prepare_examples
from .passes import continue_rows, continue_rows_in_bands, pad_right, read_rows, skip_is_exact

__all__ = [
    "PreparedExample",
    "batches",
    "continue_rows",
    "continue_rows_in_bands",
    "pad_right",
    "prepare_examples",
    "read_rows",
    "skip_is_exact",
]
