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
    sv = scope["sv"]
    assert isinstance(scope["res"], sv.Analysis) and {"tuned_lens", "linear_spade"} <= set(scope["res"].decoders)
    assert len(scope["fig"].data) == 1  # the answer heatmap
    assert scope["sweep"].num_examples > 0 and "linear_spade" in scope["sweep"].decoders
    assert 0 < scope["fastest"]["compute_fraction"] and scope["real"].measured_speedup > 0


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
