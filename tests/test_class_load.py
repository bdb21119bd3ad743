"""A class on day one: the warm start fills the very pool and store the sessions use, and (browser)
four tabs opening four presets at once on a warm server in server mode all get their right answer."""

from __future__ import annotations

import sys

import pytest

from apptest import open_page
from browser import CHROMIUM, ROOT, chromium_available

sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.slow
def test_the_warm_start_fills_what_the_sessions_use(cache_without_lenses, default_lm):
    from spade_viz.app import analyses, models
    from spade_viz.app.command import warm_up
    from spade_viz.app.datasets import presets
    from spade_viz.serve import ServeSettings

    said = []
    warm_up(ServeSettings.from_env({}), say=said.append)
    assert any(line.startswith("loaded smollm2-135m") for line in said)
    warmed = models.model_pool(1).resident((default_lm.name, "auto", "fp32"))
    assert warmed is not None
    loads, runs = models.MODEL_LOADS, analyses.ANALYSIS_RUNS
    at = open_page("pages/explore.py").run()  # a first visitor: the first preset, on the warmed model
    assert not at.exception
    assert models.MODEL_LOADS == loads and analyses.ANALYSIS_RUNS == runs  # nothing loaded or analysed again
    assert analyses.analysis(warmed, presets()[0].text) is analyses.analysis(warmed, presets()[0].text)
    assert any("Final answer" in m.value for m in at.markdown)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not chromium_available(), reason=f"{CHROMIUM} is not installed")
def test_four_tabs_at_once_get_no_error_and_the_serial_answers(cache_without_lenses):
    import class_load

    found = class_load.run(4, timeout=600)
    assert not found["errors"]
    assert sorted(found["shown"]) == [0, 1, 2, 3]
    assert len(set(found["presets"])) == 4
    assert class_load.equal_to_serial(found) == []
    assert found["server_cpu_s"] > 0 and found["peak_mb"] > 0
