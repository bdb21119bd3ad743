"""Early exit: dense arrays from a sweep, compute accounting, the simulated hybrid exit and its
baselines, and a real early-exit run that stops the forward pass (`spade_viz.exit.real`)."""

from .arrays import ExitArrays, SweepFormatError, read_sweep_meta
from .cost import Checkpoints, CostModel
from .simulate import CURVE_COLUMNS, ExitOutcome, ExitPoint, ExitSimulator, operating_points, search_checkpoints

__all__ = [
    "CURVE_COLUMNS",
    "Checkpoints",
    "CostModel",
    "ExitArrays",
    "ExitOutcome",
    "ExitPoint",
    "ExitSimulator",
    "SweepFormatError",
    "operating_points",
    "read_sweep_meta",
    "search_checkpoints",
]
