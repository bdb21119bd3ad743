"""Explore's further views in a real browser (`streamlit run app.py` + headless chromium) on the default
model: a link opens a prompt with two pinned tokens, a second prompt to compare and a generation of 8
tokens; then a real mouse click on a cell of the positions heatmap opens that cell's top 10. Each view is
checked against the library's own numbers. Screenshots go to test-artifacts/.
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


TABLES_JS = """() => Array.from(document.querySelectorAll('[data-testid="stTable"] table')).map(t => ({
    head: Array.from(t.querySelectorAll('thead th'), th => th.innerText.trim()),
    rows: Array.from(t.querySelectorAll('tbody tr'),
                     tr => Array.from(tr.querySelectorAll('td'), td => td.innerText.trim())),
}))"""
CELL_JS = """([layer, position]) => {  // where the positions heatmap draws cell (layer, position), in page pixels
    const el = document.querySelector('.js-plotly-plot'), box = el.getBoundingClientRect();
    const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis, heat = el._fullData[0];
    const column = Array.from(heat.x).findIndex(x => Number(x) === position || String(x).startsWith(position + ':'));
    const row = Array.from(heat.y).findIndex(y => Number(y) === layer);
    return {x: box.x + xa._offset + xa.d2p(heat.x[column]), y: box.y + ya._offset + ya.d2p(heat.y[row])};
}"""


def click_cell_and_read(page, lm, res, layer: int, position: int) -> None:
    """Click cell (layer, position) of the positions heatmap with the mouse; check that the cell panel opens
    on it and shows, for every decoder, the library's top 10 with their probabilities."""
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    where = page.evaluate(CELL_JS, [layer, position])
    page.mouse.move(where["x"], where["y"])
    page.wait_for_timeout(300)
    hover = page.locator(".hovertext").first.text_content()
    assert f"layer {layer} · position {position}" in hover, hover
    page.mouse.click(where["x"], where["y"])
    page.get_by_role("button", name="Close the cell").wait_for()
    _wait_idle(page)
    assert page.get_by_text(f"Position {position} (").count() >= 1
    reading = sv.read_position(lm, res, position)
    names = decoders.ordered(reading.decoders)
    heads = [decoders.label(d) for d in names]
    tables = [t for t in page.evaluate(TABLES_JS) if t["head"][-len(heads):] == heads]
    assert len(tables) == 1, page.evaluate(TABLES_JS)
    rows = tables[0]["rows"]
    assert len(rows) == 10
    for column, name in enumerate(names):
        labels = sv.viz.distinct_labels(reading.top_ids[name][layer], reading.token)
        expected = [f"{t}  {p:.2%}" for t, (_, _, p) in zip(labels, reading.top(name, layer))]
        shown = [row[-len(heads) + column] for row in rows]
        assert [" ".join(s.split()) for s in shown] == [" ".join(e.split()) for e in expected], (name, shown, expected)


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

            # a real click on a cell of the positions heatmap opens its top 10 by every decoder
            click_cell_and_read(page, default_lm, res, layer=17, position=res.answer_position - 2)
            assert page.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(ARTIFACTS / "explore-views.png"), full_page=True)


def test_a_long_spade_grid_stops_from_the_page_and_keeps_what_it_finished(cache_without_lenses, default_lm):
    """SPADE at every position on a 200-token prompt takes seconds a window: its Stop button ends the work at
    the next chunk, the page says so and falls back to the logit lens, and asking again finishes the window."""
    prompt = " ".join(["river stone light music garden paper window market"] * 25)
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit-explore-stop.log") as url:
        with chromium_page(1280, 900) as page:
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{url}/Explore?{urlencode({'prompt': prompt, 'grid': 1})}")
            stop = page.get_by_role("button", name="Stop SPADE at every position")
            stop.click()
            page.get_by_text("Stopped SPADE at every position; what was finished is kept.").wait_for()
            page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(el => "
                                   "el.layout && String(el.layout.title.text).startsWith('Logit lens: top-1'))")
            _wait_idle(page)
            assert page.locator("[data-testid='stException']").count() == 0
            titles = [f["title"] for f in page.evaluate(FIGURES_JS)]
            assert any(t.startswith("Logit lens: top-1") for t in titles), titles
            assert not any(t.startswith("SPADE") for t in titles), titles  # the grid's request withdrawn
            assert "grid=1" not in page.url

            page.get_by_role("button", name="Decode SPADE at every position").click()
            page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(el => "
                                   "el.layout && String(el.layout.title.text).startsWith('SPADE'))")
            _wait_idle(page)
            assert page.locator("[data-testid='stException']").count() == 0
