"""Explore's further views in Streamlit's AppTest (tiny model): a clicked cell's top-10, pinned tokens,
two prompts compared, a generation followed, the view as code; and their link."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import spade_viz as sv
from apptest import open_page
from spade_viz import viz
from spade_viz.app import datasets, links, models
from spade_viz.app.state import ExplorePage

TIMEOUT = 180
PROMPT = datasets.presets()[0].text


@pytest.fixture(scope="module")
def tiny_folder(tiny_folders):
    return tiny_folders["llama"]


def _explore(folder) -> AppTest:
    at = open_page("pages/explore.py", TIMEOUT)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(folder)
    return at.run()


def _specs(at: AppTest) -> dict[str, dict]:
    """Each plotly chart's figure by its title (its first words)."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"].get("title", {}).get("text", "")] = spec
    return out


def _array(values) -> np.ndarray:
    if isinstance(values, dict):  # plotly's packed array
        flat = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
        return flat.reshape([int(n) for n in values["shape"].split(",")]) if "shape" in values else flat
    return np.asarray(values, dtype=float)


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not [e.value for e in at.error]


def test_a_clicked_cell_shows_every_decoders_top_10(tiny_folder, tiny_lm):
    at = _explore(tiny_folder)
    _ok(at)
    page: ExplorePage = at.session_state["_sv_explore"]
    res = sv.analyze(tiny_lm, PROMPT)
    # what Streamlit puts in the chart's selection state for a click on the cell (layer 2, position 3)
    page.take_click("positions", {"points": [{"x": 3, "y": 2, "curve_number": 0, "point_index": [2, 3]}]},
                    res.answer_position)
    at.run()
    _ok(at)
    reading = sv.read_position(tiny_lm, res, 3, k=10)
    table = next(t for t in at.table if "logit lens" in t.value.columns)
    for name in ("logit_lens", "spade"):
        labels = viz.distinct_labels(reading.top_ids[name][2], reading.token)
        expected = [f"{t}  {p:.2%}" for t, (*_, p) in zip(labels, reading.top(name, 2))]
        shown = [re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", cell) for cell in table.value[sv.decoders.label(name)]]
        assert shown == expected  # as Markdown reads the cells: punctuation is escaped, so "-" is no list
    # a click on the answer heatmap opens the answer position at that layer, whichever decoder's column
    page.take_click("answer", {"points": [{"x": 1, "y": 0}]}, res.answer_position)
    at.run()
    _ok(at)
    assert page.cell == (0, res.answer_position)
    assert any("input embeddings read by the lens" in m.value for m in at.markdown)
    at.button(key="cell_close").click().run()
    assert page.cell is None


def test_pinned_tokens_draw_their_trajectories(tiny_folder, tiny_lm):
    at = _explore(tiny_folder)
    res = sv.analyze(tiny_lm, PROMPT)
    second = int(res.answer["logit_lens"].top_ids[-1, 0, 1])
    at.text_input(key="pin_box").input(f"#{res.final_answer_id}")
    at.button(key="pin_add").click().run()
    at.text_input(key="pin_box").input(f"#{second}")
    at.button(key="pin_add").click().run()
    _ok(at)
    page = at.session_state["_sv_explore"]
    assert page.pins == [f"#{res.final_answer_id}", f"#{second}"]
    reading = sv.read_position(tiny_lm, res, pins=page.pins)
    spec = _specs(at)[f"Pinned tokens at position {res.answer_position}"]
    lines = {tuple(t["meta"]): _array(t["y"]) for t in spec["data"]}
    assert len(lines) == 2 * len(reading.decoders)  # one line per token and decoder
    for (pin, name), y in lines.items():
        np.testing.assert_allclose(y, reading.pin_probs[pin][name], rtol=1e-5)
    at.toggle(key="pin_rank").set_value(True).run()
    spec = _specs(at)[f"Pinned tokens at position {res.answer_position}"]
    assert spec["layout"]["yaxis"]["type"] == "log"
    first = next(t for t in spec["data"] if t["meta"] == [page.pins[0], "spade"])
    np.testing.assert_array_equal(_array(first["y"]), reading.pin_ranks[page.pins[0]]["spade"])
    # a sixth pin is refused with a reason, and a link carries the pins
    assert page.pin("#1") == "" and page.pin("#2") == "" and page.pin("#3") == ""
    assert "at most 5" in page.pin("#4")
    query = links.encode(page.query("", {}), links.explore_params(["p"], ["entropy"], 512))
    again = ExplorePage(preset="p", prompt="", request=None, metric="entropy", max_tokens=512)
    again.take_link(links.decode(query, links.explore_params(["p"], ["entropy"], 512)), {})
    assert again.pins == page.pins and again.pin_rank


def test_two_prompts_side_by_side(tiny_folder, tiny_lm):
    at = _explore(tiny_folder)
    at.radio(key="compare").set_value("prompt").run()
    other = "Italy: Rome\nSpain:"
    at.text_area(key="compare_prompt").input(other).run()
    _ok(at)
    specs = _specs(at)
    a_title = next(t for t in specs if t.startswith("A: this prompt"))
    b_title = next(t for t in specs if t.startswith("B: the second prompt"))
    a, b = specs[a_title]["data"][0], specs[b_title]["data"][0]
    assert (a["zmin"], a["zmax"]) == (b["zmin"], b["zmax"])  # one colour scale
    res_b = sv.analyze(tiny_lm, other)
    z = _array(b["z"])
    np.testing.assert_allclose(z[:, 1], res_b.answer["spade"].entropy[:, 0], rtol=1e-5)
    diff = next(s for t, s in specs.items() if t.startswith("At the answer position"))
    res_a = sv.analyze(tiny_lm, PROMPT)
    line = next(t for t in diff["data"] if t["name"] == "SPADE" and t["xaxis"] == "x")
    expected = res_b.answer["spade"].entropy[:, 0] - res_a.answer["spade"].entropy[:, 0]
    np.testing.assert_allclose(_array(line["y"]), expected, atol=1e-5)
    assert at.session_state["_sv_explore"].query("", {})["compare_prompt"] == other


def test_a_generation_followed_layer_by_layer(tiny_folder, tiny_lm):
    at = _explore(tiny_folder)
    at.number_input(key="generate_length").set_value(4).run()
    at.button(key="generate_run").click().run()
    _ok(at)
    gen = sv.follow_generation(tiny_lm, PROMPT, 4)
    specs = _specs(at)
    spade = next(s for t, s in specs.items() if t.startswith("SPADE: each generated token"))
    assert len(spade["data"][0]["x"]) == len(gen.token_ids)
    np.testing.assert_allclose(_array(spade["data"][0]["z"]), gen.grids["spade"].target_prob, rtol=1e-5)
    line = next(m.value for m in at.markdown if "block-token units" in m.value)
    spent = gen.exit_blocks(1.0)
    assert f"{spent['hybrid_blocks']:,.0f}" in line and f"{spent['full_blocks']:,.0f}" in line
    table = next(t for t in at.table if "first layer · SPADE" in t.value.columns)
    assert list(table.value["first layer · SPADE"]) == gen.first_layer("spade")
    assert at.session_state["_sv_explore"].query("", {})["generate"] == 4
    labels = [b.proto.label for b in at.get("download_button")]
    assert "This view · Python script" in labels and "This view · notebook" in labels


def test_old_links_still_open_and_new_fields_round_trip():
    params = links.explore_params(["p"], ["entropy"], 512)
    old = links.decode({"prompt": "Germany:", "metric": "entropy"}, params)
    page = ExplorePage(preset="p", prompt="", request=None, metric="entropy", max_tokens=512)
    page.take_link(old, {})
    assert page.request == "Germany:" and page.pins == [] and page.cell is None and page.generate == 0
    page.cell, page.pins, page.generate, page.compare, page.compare_model = (3, 1), [" Paris", "#7"], 8, "model", "m"
    query = links.encode(page.query("", {}), params)
    assert query["cell"] == "3,1" and json.loads(query["pins"]) == [" Paris", "#7"] and query["gen"] == "8"
    again = ExplorePage(preset="p", prompt="", request=None, metric="entropy", max_tokens=512)
    again.take_link(links.decode(query, params), {})
    assert (again.cell, again.pins, again.generate, again.compare, again.compare_model) == \
        ((3, 1), [" Paris", "#7"], 8, "model", "m")
    bad = links.decode({"cell": "x,1", "pins": "{not json"}, params)
    page.take_link(bad, {})
    assert page.cell is None and page.pins == []
