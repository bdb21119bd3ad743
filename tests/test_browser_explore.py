"""Explore's further views in a real browser (`streamlit run app.py` + headless chromium) on the default
model: a link opens a prompt with two pinned tokens, a second prompt to compare and a generation of 8
tokens; each view is checked against the library's own numbers. Screenshots go to test-artifacts/.
(A click on a cell is covered by tests/test_explore_views.py through the chart's selection state; a
real click in chromium does not open the cell yet.)
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
import torch

import spade_viz as sv
from browser import CHROMIUM, chromium_available, chromium_page, streamlit_server
from spade_viz import decoders

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 300_000  # the model's first load, an analysis, a comparison and a generation on a busy machine
PROMPT = "France: Paris\nJapan: Tokyo\nGermany:"
OTHER = "France: Paris\nJapan: Tokyo\nItaly:"
PINS = [" Berlin", " Rome"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,  # chromium on the real default model
              pytest.mark.skipif(not chromium_available(), reason=f"{CHROMIUM} is not installed")]

FIGURES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
    title: el.layout && el.layout.title ? String(el.layout.title.text) : '',
    traces: el._fullData.map(t => ({type: t.type, name: t.name || '', meta: t.meta || null,  // arrays decoded
                                    y: t.type === 'heatmap' ? null : Array.from(t.y || []),
                                    rows: t.z ? t.z.length : null, cols: t.z && t.z[0] ? t.z[0].length : null,
                                    z: t.type === 'heatmap' ? Array.from(t.z, r => Array.from(r)) : null})),
    ticks: el.layout && el.layout.xaxis && el.layout.xaxis.ticktext ? Array.from(el.layout.xaxis.ticktext) : [],
}))"""


def _wait_idle(page) -> None:
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"],"
        " [data-testid=\"stStatusWidgetRunningManIcon\"]')"
    )
    page.wait_for_timeout(800)


def _figure(figures: list[dict], title_start: str) -> dict:
    found = [f for f in figures if f["title"].startswith(title_start)]
    assert found, [f["title"] for f in figures]
    return found[0]


def test_explore_views_in_chromium(cache_without_lenses, default_lm):
    ARTIFACTS.mkdir(exist_ok=True)
    res = sv.analyze(default_lm, PROMPT)
    reading = sv.read_position(default_lm, res, pins=PINS)
    gen = sv.follow_generation(default_lm, PROMPT, 8)
    query = urlencode({"prompt": PROMPT, "pins": json.dumps(PINS), "vs": OTHER, "gen": 8})
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit-explore.log") as url:
        with chromium_page(1280, 900) as page:
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{url}/Explore?{query}")
            page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(el => "
                                   "el.layout && String(el.layout.title.text).startsWith('SPADE: each generated'))")
            _wait_idle(page)
            assert page.locator("[data-testid='stException']").count() == 0
            figures = page.evaluate(FIGURES_JS)

            # two pinned tokens: one line per decoder each, the library's trajectories, ending at the model's own
            pins = _figure(figures, f"Pinned tokens at position {res.answer_position}")
            lines = {tuple(t["meta"]): np.array(t["y"]) for t in pins["traces"]}
            assert set(lines) == {(pin, name) for pin in PINS for name in ("logit_lens", "spade")}
            with torch.no_grad():
                own = torch.softmax(default_lm.model(input_ids=torch.tensor([res.token_ids])).logits[0, -1].float(), -1)
            for (pin, name), y in lines.items():
                np.testing.assert_allclose(y, reading.pin_probs[pin][name], rtol=1e-4)
                assert y[-1] == pytest.approx(float(own[reading.pins[pin]]), rel=1e-4)

            # two prompts side by side, on one colour scale, and their difference
            other = sv.analyze(default_lm, OTHER)
            a, b = _figure(figures, "A: this prompt"), _figure(figures, "B: the second prompt")
            assert a["traces"][0]["rows"] == b["traces"][0]["rows"] == default_lm.num_layers + 1
            np.testing.assert_allclose(np.array(b["traces"][0]["z"])[:, 1], other.answer["spade"].entropy[:, 0],
                                       rtol=1e-4)
            _figure(figures, "At the answer position: B minus A")

            # a generation of 8 tokens: the layers x tokens heatmap of each decoder
            for name in ("logit_lens", "spade"):
                heat = _figure(figures, f"{decoders.label(name)[:1].upper()}{decoders.label(name)[1:]}: each generated")
                assert (heat["traces"][0]["rows"], heat["traces"][0]["cols"]) == (default_lm.num_layers + 1, 8)
                np.testing.assert_allclose(np.array(heat["traces"][0]["z"]), gen.grids[name].target_prob, rtol=1e-4)
            assert len(_figure(figures, "SPADE: each generated")["ticks"]) == 8
            page.screenshot(path=str(ARTIFACTS / "explore-views.png"), full_page=True)
