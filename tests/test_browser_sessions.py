"""Four browser sessions at once on one real `streamlit run` server and its one shared model: each
analyses its own preset at the same time and sees its own, correct result: the final answer and
the SPADE column of its layers x decoders heatmap equal a serial `sv.analyze` of the same prompt
(the bug this guards against showed other sessions' SPADE curves, off by 1 to 6 nats)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

import spade_viz as sv
import spade_viz.viz
from browser import CHROMIUM, chromium_available, chromium_browser, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not chromium_available(), reason=f"{CHROMIUM} is not installed")]

WAIT_MS = 300_000  # four sessions analysing at once on a busy 2-core machine
PRESETS = ["Translation: English to French", "Simple arithmetic", "Multiple choice (answer with a letter)",
           "Yes/no question"]

ANSWER_HEATMAP_JS = """() => {
    const plot = document.querySelectorAll('.js-plotly-plot')[1];
    return {labels: Array.from(plot.layout.xaxis.ticktext),
            z: Array.from(plot._fullData[0].z, row => Array.from(row))};
}"""


def preset_texts() -> dict[str, str]:
    data = json.loads((resources.files("spade_viz") / "assets" / "presets.json").read_text(encoding="utf-8"))
    return {p["name"]: p["text"] for p in data["presets"]}


def test_four_sessions_at_once_each_see_their_own_correct_analysis(cache_without_lenses, default_lm):
    texts = preset_texts()
    expected = {name: sv.analyze(default_lm, texts[name]) for name in PRESETS}
    with streamlit_server(timeout=120) as url, chromium_browser() as browser:
        pages = [browser.new_page(viewport={"width": 1280, "height": 900}) for _ in PRESETS]
        for page in pages:
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{url}/Explore")
        for page in pages:  # the first preset is analysed on arrival (and then cached for all)
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4")
        for page, name in zip(pages, PRESETS):  # now each picks its own: four analyses at once
            page.locator(".st-key-preset").click()
            page.get_by_role("option", name=name).click()
        for page, name in zip(pages, PRESETS):
            res = expected[name]
            final = spade_viz.viz.visible_token(res.token(res.final_answer_id))
            page.get_by_text(f"Final answer: {final}").wait_for()
            page.wait_for_function(
                "() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')")
            assert page.locator("[data-testid='stException']").count() == 0, name
            assert page.locator("[data-testid='stAlertContentError']").count() == 0, name
            shown = page.evaluate(ANSWER_HEATMAP_JS)
            column = shown["labels"].index("SPADE")
            spade_entropy = np.array([row[column] for row in shown["z"]], dtype=float)
            assert len(spade_entropy) == default_lm.num_layers + 1, name
            np.testing.assert_allclose(spade_entropy, res.answer["spade"].entropy[:, 0], atol=1e-3, err_msg=name)
