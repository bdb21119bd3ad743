"""Figure builders (spade_viz.viz): pure functions from an Analysis to plotly figures."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

import spade_viz as sv
from spade_viz import viz

PROMPT = "France: Paris\nJapan: Tokyo\nItaly: Rome\nGermany:"


@pytest.fixture(scope="module")
def res(tiny_lm) -> sv.Analysis:
    return sv.analyze(tiny_lm, PROMPT)


def _trace(fig: go.Figure) -> dict:
    """The first trace as plain JSON (what the browser receives)."""
    return json.loads(fig.to_json())["data"][0]


# ------------------------------------------------------------------ visible tokens


@pytest.mark.parametrize("token, shown", [
    (" Paris", "␣Paris"),
    ("Paris", "Paris"),
    ("\n", "↵"),
    ("\n\n", "↵↵"),
    ("  x", "␣␣x"),
    (" ", "␣"),
    ("\t", "⇥"),
    ("", "∅"),
    ("<s>", "⟨s⟩"),
    ("</s>", "⟨/s⟩"),
    ("<|im_start|>", "⟨im_start⟩"),
    ("a\x01", "a\\x01"),
    ("abcdefghijklmnopqrstuvwxyz", "abcdefghijklm…"),
])
def test_visible_token(token, shown):
    assert viz.visible_token(token) == shown


def test_visible_tokens_marks_the_start_token():
    shown = viz.visible_tokens(["<|endoftext|>", "a", " b", "a"])
    assert shown[0] == "⟨endoftext⟩"
    assert viz.visible_tokens(["BOS", "x"])[0] == "⟨BOS⟩"  # position 0 is the start token whatever its text


# ------------------------------------------------------------------ heatmaps


@pytest.mark.parametrize("metric", list(viz.METRICS))
def test_layer_position_heatmap_shape_text_and_hover(res, metric):
    fig = viz.layer_position_heatmap(res, metric)
    trace = _trace(fig)
    rows, cols = res.num_layers + 1, len(res.tokens)
    assert trace["type"] == "heatmap"
    assert trace["y"] == list(range(rows))
    assert trace["x"] == list(range(cols))
    z = np.asarray(fig.data[0].z)
    assert z.shape == (rows, cols)
    np.testing.assert_allclose(z, viz.METRICS[metric].values(res.logit_lens), rtol=1e-6)
    # cell text: the top-1 token of each (layer, position)
    assert np.asarray(fig.data[0].text).shape == (rows, cols)
    assert fig.data[0].text[-1][res.answer_position] == viz.visible_token(res.token(res.final_answer_id),
                                                                         max_len=7).replace("<", "&lt;")
    # hover: the top-5 with probabilities
    custom = np.asarray(fig.data[0].customdata, dtype=object)
    assert custom.shape == (rows, cols, 2)
    assert custom[0, 0, 1].count("<br>") == res.top_k - 1 and "%" in custom[0, 0, 1]
    assert "customdata[1]" in trace["hovertemplate"]
    # axis: one tick per position, with the token strings
    assert list(fig.layout.xaxis.tickvals) == list(range(cols))
    assert len(fig.layout.xaxis.ticktext) == cols
    # a colour scale with a legend
    assert fig.data[0].colorbar.title.text == viz.METRICS[metric].label
    lo, hi = viz.metric_range(res, metric)
    assert fig.data[0].zmin == lo and fig.data[0].zmax == hi


def test_repeated_tokens_stay_distinct_columns(tiny_lm):
    res = sv.analyze(tiny_lm, "a a a a")
    fig = viz.layer_position_heatmap(res)
    assert len(set(res.tokens)) < len(res.tokens)  # the prompt repeats tokens
    assert list(fig.data[0].x) == list(range(len(res.tokens)))  # numeric positions: repeats never merge
    assert list(fig.layout.xaxis.tickvals) == list(range(len(res.tokens)))


def test_window_limits_columns_and_outlines_the_answer(res):
    start, stop = viz.default_window(len(res.tokens), res.answer_position, 5)
    assert (start, stop) == (len(res.tokens) - 5, len(res.tokens))
    fig = viz.layer_position_heatmap(res, window=(start, stop))
    assert list(fig.data[0].x) == list(range(start, stop))
    assert np.asarray(fig.data[0].z).shape == (res.num_layers + 1, 5)
    outline = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(outline) == 1 and outline[0].x0 == res.answer_position - 0.5
    assert "positions" in fig.layout.title.text
    early = viz.layer_position_heatmap(res, window=(0, 3))
    assert not [s for s in early.layout.shapes if s.type == "rect"]  # the answer is not in view
    assert viz.default_window(4, 3, 10) == (0, 4)


def test_answer_heatmap_columns_are_decoders(res):
    fig = viz.answer_heatmap(res, "target_prob")
    names = viz.ordered_decoders(res.decoders)
    assert names[0] == "logit_lens" and "spade" in names
    z = np.asarray(fig.data[0].z)
    assert z.shape == (res.num_layers + 1, len(names))
    np.testing.assert_allclose(z[:, names.index("spade")], res.answer["spade"].target_prob[:, 0], rtol=1e-6)
    assert list(fig.layout.xaxis.ticktext) == [viz.decoder_label(n).replace("<", "&lt;").replace(">", "&gt;")
                                               for n in names]
    # the top layer of every decoder is the model's own answer
    assert len(set(fig.data[0].text[-1])) == 1
    only_two = viz.answer_heatmap(res, decoders=["spade", "logit_lens"])
    assert np.asarray(only_two.data[0].z).shape[1] == 2
    assert list(only_two.layout.xaxis.ticktext) == ["logit lens", "SPADE"]  # fixed reading order


def test_shared_colour_range_covers_both_heatmaps(res):
    lo, hi = viz.metric_range(res, "entropy")
    values = [viz.METRICS["entropy"].values(s) for s in [*res.grids.values(), *res.answer.values()]]
    assert lo == 0 and hi == pytest.approx(max(float(v.max()) for v in values))
    assert viz.metric_range(res, "top1_prob") == (0.0, 1.0)


def test_special_and_markup_tokens_are_escaped(res):
    fig = viz.layer_position_heatmap(res)
    assert fig.layout.xaxis.ticktext[0] == "⟨s⟩"
    assert "<s>" not in json.dumps(list(fig.layout.xaxis.ticktext))
    from spade_viz.viz.tokens import html_token

    assert html_token("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"  # plotly renders tags: token text must not


# ------------------------------------------------------------------ curves


def test_entropy_curves_one_line_per_decoder_and_stable_marks(res):
    fig = viz.entropy_curves(res)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.legendgroup for t in lines] == viz.ordered_decoders(res.decoders)
    for trace in lines:
        np.testing.assert_allclose(trace.y, res.answer[trace.legendgroup].entropy[:, 0], rtol=1e-6)
        first = res.first_stable_layer(trace.legendgroup)
        assert f"from layer {first}" in trace.name
    stars = [t for t in fig.data if t.mode == "markers"]
    assert {t.legendgroup for t in stars} == {n for n in res.decoders if res.first_stable_layer(n) is not None}
    assert len([s for s in fig.layout.shapes if s.type == "line"]) == len(stars)


def test_target_curves_probability_and_log_rank(res, tiny_lm):
    other = sv.retarget(tiny_lm, res, "#5")
    fig = viz.target_curves(other)
    assert fig.layout.yaxis2.type == "log"
    assert fig.layout.yaxis2.range[0] > fig.layout.yaxis2.range[1]  # rank 1 on top
    probs = [t for t in fig.data if t.mode == "lines+markers" and t.xaxis == "x"]
    ranks = [t for t in fig.data if t.mode == "lines+markers" and t.xaxis == "x2"]
    assert len(probs) == len(ranks) == len(res.decoders)
    spade = next(t for t in ranks if t.legendgroup == "spade")
    np.testing.assert_array_equal(spade.y, other.answer["spade"].target_rank[:, 0])
    assert viz.visible_token(other.token(5)).replace("<", "&lt;").replace(">", "&gt;") in fig.layout.title.text


def test_figures_export_as_standalone_html(res):
    for fig in (viz.layer_position_heatmap(res), viz.answer_heatmap(res), viz.entropy_curves(res),
                viz.target_curves(res)):
        html = fig.to_html(include_plotlyjs=True, full_html=True)
        assert "plotly" in html and "<html>" in html and len(html) > 1_000_000  # plotly.js embedded


def test_many_layers_stay_readable():
    from spade_viz.viz.heatmaps import _layout_sizes

    assert _layout_sizes(30) == (18, 11)
    row_px, font_px = _layout_sizes(80)
    assert 9 <= row_px < 18 and row_px * 81 <= 760
