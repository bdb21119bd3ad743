"""The package's layers hold: figures, the decoder table and the exit simulation import without
torch, and `import spade_viz` is cheap (its public names load their module on first use)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "streamlit")


def _imports_nothing_heavy(*modules: str) -> None:
    """Import `modules` in a fresh interpreter and fail if any heavy library came with them."""
    code = (f"import sys\nimport {', '.join(modules)}\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "assert not heavy, heavy")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_figures_and_the_decoder_table_import_without_torch():
    _imports_nothing_heavy("spade_viz", "spade_viz.viz", "spade_viz.decoders", "spade_viz.viz.compare",
                           "spade_viz.viz.exit_figures", "spade_viz.viz.inputs", "spade_viz.compare",
                           "spade_viz.errors")


def test_the_exit_simulation_imports_without_torch():
    _imports_nothing_heavy("spade_viz.exit.simulate", "spade_viz.exit.arrays", "spade_viz.exit.study",
                           "spade_viz.exit.session")


def test_public_names_load_lazily_and_all_resolve():
    code = (
        "import sys\n"
        "import spade_viz as sv\n"
        "assert 'torch' not in sys.modules\n"
        "assert sv.ExitSimulator.__module__ == 'spade_viz.exit.simulate' and 'torch' not in sys.modules\n"
        "assert set(sv.__all__) <= set(dir(sv)) and {'viz', 'decoders'} <= set(dir(sv))\n"
        "assert sv.viz.answer_heatmap and sv.decoders.label('spade') == 'SPADE'\n"
        "missing = [name for name in sv.__all__ if getattr(sv, name, None) is None]\n"
        "assert not missing, missing\n"
        "assert 'torch' in sys.modules  # the model-side names did load their modules\n"
        "try:\n"
        "    sv.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('an unknown name must raise AttributeError')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.parametrize("name", ["load_model", "analyze", "run_sweep", "SweepSettings", "fit_linear_spade",
                                  "train_tuned_lens", "ExitArrays", "ExitSimulator", "operating_points",
                                  "Checkpoints", "CostModel", "run_real_exit", "load_builtin", "load_dataset",
                                  "builtin_tasks"])
def test_the_workflow_is_public(name):
    import spade_viz as sv

    assert name in sv.__all__ and callable(getattr(sv, name))
