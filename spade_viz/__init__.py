r"""spade-viz: see, layer by layer, what a language model is about to say.

    import spade_viz as sv
    lm = sv.load_model("smollm2-135m")
    res = sv.analyze(lm, "France: Paris\nJapan: Tokyo\nGermany:")

The whole workflow (a model, a task, one prompt, a sweep, the lenses, the exit curve, the real
exit) is reachable from here; README.md, "Python API: the whole workflow", runs it end to end.
Names load their module on first use (PEP 562), so `import spade_viz` and the torch-free parts
(`spade_viz.viz`, `spade_viz.decoders`, the exit simulation) never import torch.
"""

from __future__ import annotations

from importlib import import_module

from .errors import InputError as InputError
from .errors import ModelLoadError as ModelLoadError
from .errors import SpadeVizError as SpadeVizError
from .errors import UnsupportedArchitectureError as UnsupportedArchitectureError

# public name -> (module, attribute there); a module that moves changes one line here
_LAZY: dict[str, tuple[str, str]] = {
    # a model
    "DEFAULT_MODEL": ("spade_viz.models.loading", "DEFAULT_MODEL"),
    "DTYPES": ("spade_viz.models.loading", "DTYPES"),
    "LoadedModel": ("spade_viz.models.loading", "LoadedModel"),
    "load_model": ("spade_viz.models.loading", "load_model"),
    # a task: built-in or a user's JSONL/CSV file
    "Dataset": ("spade_viz.data.datasets", "Dataset"),
    "DatasetError": ("spade_viz.data.datasets", "DatasetError"),
    "builtin_tasks": ("spade_viz.data.datasets", "builtin_tasks"),
    "load_builtin": ("spade_viz.data.datasets", "load_builtin"),
    "load_dataset": ("spade_viz.data.datasets", "load_dataset"),
    # one prompt, every layer
    "Analysis": ("spade_viz.analysis", "Analysis"),
    "analyze": ("spade_viz.analysis", "analyze"),
    "retarget": ("spade_viz.analysis", "retarget"),
    "spade_grid": ("spade_viz.analysis_extras", "spade_grid"),
    "with_grid": ("spade_viz.analysis_extras", "with_grid"),
    "with_spade_no_bos": ("spade_viz.analysis_extras", "with_spade_no_bos"),
    "Cancelled": ("spade_viz.windows", "Cancelled"),
    "DECODER_LABELS": ("spade_viz.decoders", "DECODER_LABELS"),
    # further: a position read in full, two runs side by side, a generation, the view as code
    "PositionReading": ("spade_viz.explore", "PositionReading"),
    "read_position": ("spade_viz.explore", "read_position"),
    "Comparison": ("spade_viz.explore", "Comparison"),
    "compare_analyses": ("spade_viz.explore", "compare_analyses"),
    "Generation": ("spade_viz.explore", "Generation"),
    "follow_generation": ("spade_viz.explore", "follow_generation"),
    "view_script": ("spade_viz.explore", "view_script"),
    "view_notebook": ("spade_viz.explore", "view_notebook"),
    # a dataset, every layer, every decoder
    "SweepSettings": ("spade_viz.sweep", "SweepSettings"),
    "SweepResult": ("spade_viz.sweep", "SweepResult"),
    "run_sweep": ("spade_viz.sweep", "run_sweep"),
    "cached_sweep": ("spade_viz.sweep", "cached_sweep"),
    # fitted decoders: linear SPADE (saved for the model as it fits) and the tuned lens
    "fit_linear_spade": ("spade_viz.lenses.linear_spade", "fit_linear_spade"),
    "train_tuned_lens": ("spade_viz.lenses.tuned", "train_tuned_lens"),
    "default_lens_path": ("spade_viz.lenses.affine", "default_lens_path"),
    "find_lens": ("spade_viz.lenses.affine", "find_lens"),
    # the simulated early exit, from a sweep
    "ExitArrays": ("spade_viz.exit.arrays", "ExitArrays"),
    "Checkpoints": ("spade_viz.exit.cost", "Checkpoints"),
    "CostModel": ("spade_viz.exit.cost", "CostModel"),
    "ExitSimulator": ("spade_viz.exit.simulate", "ExitSimulator"),
    "operating_points": ("spade_viz.exit.simulate", "operating_points"),
    "search_checkpoints": ("spade_viz.exit.simulate", "search_checkpoints"),
    # the real early exit: the forward pass stops
    "prepare_prompts": ("spade_viz.exit.real", "prepare_prompts"),
    "run_real_exit": ("spade_viz.exit.real", "run_real_exit"),
    "RealExitReport": ("spade_viz.exit.real", "RealExitReport"),
}
_SUBMODULES = ("decoders", "viz", "exit", "data")  # `sv.viz.answer_heatmap(res)` without an import first

__all__ = sorted([*_LAZY, "InputError", "ModelLoadError", "SpadeVizError", "UnsupportedArchitectureError"])


def __getattr__(name: str):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(import_module(module), attribute)
    elif name in _SUBMODULES:
        value = import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
