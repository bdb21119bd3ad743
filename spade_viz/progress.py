"""How long work says how far it has come: one callback, `progress(done, total, message)`.

`done` of `total` units (examples, tokens, batches; a share of 1 where a job weighs its phases),
or `total` 0 for a step without a count (a model being fetched, converted, placed). The CLI turns
it into tqdm bars, the pages into progress bars and status lines. Plain Python: bottom layer.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """A callback told, now and then, how far a long job has come."""

    def __call__(self, done: float, total: float, message: str) -> None:
        """`done` of `total` (0: no count), and what is being done."""


def no_progress(done: float, total: float, message: str) -> None:
    """The default callback: nobody is told."""


def within(progress: Progress, start: float, width: float) -> Progress:
    """`progress` for one phase of a job reported as a share of 1: the phase's own (done, total)
    lands in [start, start + width]."""
    return lambda done, total, message: progress(min(1.0, start + width * done / max(total, 1e-12)), 1, message)
