"""Dataset sweeps: every example x every layer x every decoder, batched and cached on disk.

`results` holds what a sweep is asked and returns, `linear_plan` picks how it scores linear SPADE,
`passes` runs it, `cache` keeps it.
"""

from .cache import load_cached, save_cached, sweep_cache_dir
from .linear_plan import LinearPlan, plan_linear_spade
from .passes import cached_sweep, run_sweep, shipped_sweep_problem, sweep_cache_key
from .results import CSV_COLUMNS, SWEEP_FORMAT, SweepResult, SweepSettings

__all__ = [
    "CSV_COLUMNS",
    "SWEEP_FORMAT",
    "LinearPlan",
    "SweepResult",
    "SweepSettings",
    "cached_sweep",
    "load_cached",
    "plan_linear_spade",
    "run_sweep",
    "save_cached",
    "shipped_sweep_problem",
    "sweep_cache_dir",
    "sweep_cache_key",
]
