"""Exploring one prompt further: a cell's top-k and pinned tokens' trajectories at a position
(`cells`), two analyses side by side (`comparison`), the lens at every step of a greedy generation
(`generation`), and the view as a runnable script or notebook (`script`)."""

from .cells import PositionReading, read_position
from .comparison import Comparison, compare_analyses
from .generation import Generation, follow_generation
from .script import view_notebook, view_script

__all__ = ["Comparison", "Generation", "PositionReading", "compare_analyses", "follow_generation",
           "read_position", "view_notebook", "view_script"]
