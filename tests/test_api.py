"""README.md's "Python API: the whole workflow" example runs as written: on a tiny model (the model
name swapped, nothing else) and, marked slow, verbatim on the real default model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOAD = 'sv.load_model("smollm2-135m")'


def readme_example() -> str:
    """The code block between the api-example markers of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- api-example:start -->\s*```python\n(.*?)```\s*<!-- api-example:end -->", text, re.S)
    assert found, "README.md lost its api-example markers"
    return found.group(1)


def _run(code: str) -> dict:
    scope: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md (api-example)", "exec"), scope)
    return scope


def _check(scope: dict) -> None:
    """The example's numbers against each other: each step agrees with the ones it builds on."""
    import numpy as np

    sv, lm, task, res, sweep, sim = (scope[k] for k in ("sv", "lm", "task", "res", "sweep", "sim"))
    L = lm.num_layers
    assert isinstance(res, sv.Analysis) and {"tuned_lens", "linear_spade"} <= set(res.decoders)
    # at layer L every decoder reads the model's own output
    assert int(res.answer["logit_lens"].top1[L, 0]) == int(res.answer["spade"].top1[L, 0]) == res.final_answer_id
    assert len(scope["fig"].data) == 1  # the answer heatmap
    assert sweep.example_ids == [e.id for e in task.examples] and "linear_spade" in sweep.decoders
    assert (sweep.top1["spade"][:, L] == sweep.final_ids).all()
    assert res.final_answer_id == sweep.final_ids[0]  # the same prompt, analysed and swept

    fastest, curve, full = scope["fastest"], sim.curve(), sim.full_model()
    allowed = curve[curve.accuracy >= full.accuracy - 0.01 - 1e-12]  # within 1 point of the full model
    assert fastest["accuracy"] >= full.accuracy - 0.01 - 1e-12
    assert fastest["speedup"] == pytest.approx(allowed.speedup.max())
    point = sim.at(fastest["threshold"]).point
    assert fastest["compute_fraction"] == pytest.approx(point.compute_fraction)
    assert fastest["speedup"] == pytest.approx(1 / point.compute_fraction)

    real = scope["real"]
    rows = [sweep.example_ids.index(i) for i in real.example_ids]
    assert real.example_ids == [e.id for e in task.examples[:4]]
    assert real.full_answers.tolist() == sweep.final_ids[rows].tolist()  # the plain pass: the sweep's final answer
    # the real exit answers with SPADE from the layer it left at: the sweep's SPADE there
    assert real.answers.tolist() == sweep.top1["spade"][rows, real.exit_layers].tolist()
    assert ((0 <= real.exit_layers) & (real.exit_layers <= L)).all() and np.isfinite(real.measured_speedup)
    assert real.measured_speedup == pytest.approx(real.full_seconds / real.exit_seconds)
    assert real.simulated_speedup == pytest.approx(1 / real.simulated_fraction)


def test_the_readme_example_runs_on_a_tiny_model(tiny_folders, isolated_cache, capsys):
    code = readme_example()
    assert DEFAULT_LOAD in code
    scope = _run(code.replace(DEFAULT_LOAD, f"sv.load_model({str(tiny_folders['llama'])!r})"))
    _check(scope)
    assert "measured" in capsys.readouterr().out


@pytest.mark.slow
def test_the_readme_example_runs_on_the_default_model(tmp_path, monkeypatch):
    from spade_viz.models.loading import cache_dir

    models = cache_dir() / "models"  # the converted default model is reused; lenses and sweeps go to tmp
    models.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(models, target_is_directory=True)
    monkeypatch.setenv("SPADE_VIZ_CACHE", str(tmp_path / "cache"))
    scope = _run(readme_example())
    _check(scope)
    assert scope["lm"].num_layers == 30
