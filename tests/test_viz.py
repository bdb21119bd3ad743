"""Figure builders (spade_viz.viz) on hand-made results: numpy arrays in, plotly figures out, no model.

`Prompt` and `Stats` below have the shape of an `Analysis` and its `DecodeStats`
(`spade_viz.viz.inputs`), so these tests need neither a model nor torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from spade_viz import decoders, viz
from spade_viz.viz import exit_figures
from spade_viz.viz.compare import comparison_figure, heldout_kl_figure
from spade_viz.viz.tokens import html_token

L = 6  # layers 0..6
K = 3  # top-k
FINAL = 1  # the model's final answer at the answer position
# token id -> text: the start token, words with and without spaces, a line break, markup
VOCAB = {0: "<s>", 1: " Berlin", 2: "France", 3: ":", 4: " Paris", 5: "<b>x</b>", 6: "\n", 7: "Japan",
         8: " Tokyo", 9: "Germany", 10: " Rome", 11: "a", 12: " a"}
PROMPT_IDS = [0, 2, 3, 4, 6, 7, 3, 8, 6, 9, 3]  # "<s>France: Paris\nJapan: Tokyo\nGermany:"
SETTLES = {"logit_lens": 5, "tuned_lens": 4, "spade": 2, "spade_no_bos": 4, "linear_spade": 3}


@dataclass
class Stats:
    """`DecodeStats`-shaped: arrays [layers, positions, ...]."""

    top_ids: np.ndarray
    top_probs: np.ndarray
    entropy: np.ndarray
    kl_to_final: np.ndarray
    target_prob: np.ndarray
    target_rank: np.ndarray

    @property
    def top1(self) -> np.ndarray:
        return self.top_ids[..., 0]

    def column(self, position: int) -> Stats:
        return Stats(*(value[:, position : position + 1] for value in self.__dict__.values()))


@dataclass
class Prompt:
    """`Analysis`-shaped: what the prompt figures read."""

    num_layers: int
    tokens: list[str]
    answer_position: int
    top_k: int
    target_id: int
    grids: dict[str, Stats]
    answer: dict[str, Stats]
    vocab: dict[int, str]

    @property
    def decoders(self) -> list[str]:
        return list(self.answer)

    @property
    def final_answer_id(self) -> int:
        return int(self.grids["logit_lens"].top1[-1, self.answer_position])

    def token(self, token_id: int) -> str:
        return self.vocab[int(token_id)]

    def first_stable_layer(self, decoder: str) -> int | None:
        wrong = np.nonzero(self.answer[decoder].top1[:, 0] != self.final_answer_id)[0]
        first = int(wrong[-1]) + 1 if len(wrong) else 0
        return first if first <= self.num_layers else None


def _stats(top1: np.ndarray, rng: np.random.Generator, target_id: int) -> Stats:
    """Statistics whose top-1 is `top1` [layers, positions]; the rest of the top-k and the numbers random."""
    layers, positions = top1.shape
    others = np.array([i for i in VOCAB if i not in (0,)])
    top_ids = np.empty((layers, positions, K), dtype=np.int64)
    for index in np.ndindex(layers, positions):
        rest = rng.permutation(others[others != top1[index]])[: K - 1]
        top_ids[index] = [top1[index], *rest]
    probs = np.sort(rng.dirichlet(np.ones(K + 1), size=(layers, positions))[..., :K], axis=-1)[..., ::-1]
    probs = probs.astype(np.float32)
    hit = top_ids == target_id
    rank = np.where(hit.any(-1), hit.argmax(-1) + 1, rng.integers(K + 1, 200, (layers, positions)))
    return Stats(top_ids, probs, rng.uniform(0.1, 6.0, (layers, positions)).astype(np.float32),
                 rng.uniform(0.0, 4.0, (layers, positions)).astype(np.float32),
                 np.where(hit.any(-1), (probs * hit).sum(-1), 0.001).astype(np.float32), rank.astype(np.int64))


def make_prompt(ids=PROMPT_IDS, target_id: int = FINAL, seed: int = 0) -> Prompt:
    """A prompt decoded at layers 0..L by every decoder; decoder d settles on FINAL at SETTLES[d]."""
    rng = np.random.default_rng(seed)
    positions, answer = len(ids), len(ids) - 1
    layers = np.arange(L + 1)[:, None]
    grids, columns = {}, {}
    for name, settle in SETTLES.items():
        top1 = rng.choice([2, 4, 7, 8, 9, 10], size=(L + 1, positions))
        top1[:, answer] = np.where(layers[:, 0] >= settle, FINAL, 10)
        stats = _stats(top1, rng, target_id)
        if name in ("logit_lens", "tuned_lens"):  # the two decoders with a grid over every position
            grids[name] = stats
        columns[name] = stats.column(answer)
    return Prompt(L, [VOCAB[i] for i in ids], answer, K, target_id, grids, columns, dict(VOCAB))


@pytest.fixture(scope="module")
def res() -> Prompt:
    return make_prompt()


def _trace(fig: go.Figure) -> dict:
    """The first trace as plain JSON (what the browser receives)."""
    return json.loads(fig.to_json())["data"][0]


def _escaped(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


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


# ------------------------------------------------------------------ one table of decoders


def test_every_decoder_has_its_own_colour_and_none_is_the_hybrid_exits():
    colours = [d.colour for d in decoders.DECODERS]
    assert len(set(colours)) == len(colours)
    exit_series = [decoders.colour(name) for name in ("hybrid", "classic", "fixed", "full", "oracle")]
    assert len(set(exit_series)) == len(exit_series)
    assert not set(colours) & {s.colour for s in decoders.SERIES}
    assert decoders.colour("an_unknown_lens") not in {*colours, *exit_series}  # a stable fallback
    assert decoders.colour("an_unknown_lens") == decoders.colour("an_unknown_lens")


def test_reading_order_labels_and_fallbacks():
    assert decoders.ordered(["my_lens", "linear_spade", "spade", "logit_lens"]) == [
        "logit_lens", "spade", "linear_spade", "my_lens"]
    assert decoders.label("spade_no_bos") == "SPADE without <s>" and decoders.label("my_lens") == "my lens"
    assert decoders.label("hybrid") == "hybrid exit (SPADE)"
    assert decoders.SWEPT == ("logit_lens", "tuned_lens", "spade", "linear_spade")
    assert set(decoders.SWEEP_COLUMNS) == set(decoders.SWEPT)


def test_sweep_columns_and_confidences_come_from_the_table():
    """The orders a sweep's CSV and the exit's confidence menu rely on, derived from the one table."""
    assert decoders.SWEEP_COLUMNS == ("logit_lens", "spade", "linear_spade", "tuned_lens")
    assert decoders.CONFIDENCES == ("linear_spade", "spade", "logit_lens", "tuned_lens")
    assert decoders.WITHOUT_SAVED_LENS == ("logit_lens", "spade", "linear_spade")
    assert "spade_no_bos" not in decoders.SWEPT + decoders.CONFIDENCES
    assert decoders.dash("spade_no_bos") == "dash" and decoders.dash("spade") == "solid"
    assert all(d.summary for d in decoders.DECODERS)


def test_a_decoder_has_one_colour_on_every_page(res):
    """Explore's curves, the comparison and the Early-exit page's per-layer figure draw SPADE alike."""
    spade = decoders.colour("spade")
    curves = viz.entropy_curves(res)
    assert {t.line.color for t in curves.data if t.legendgroup == "spade" and t.mode == "lines+markers"} == {spade}
    rows = [{"decoder": d, "layer": layer, "accuracy": 0.5, "agree_final": 0.5}
            for d in ("logit_lens", "spade") for layer in range(3)]
    compared = comparison_figure(pd.DataFrame(rows))
    assert {t.line.color for t in compared.data if t.legendgroup == "spade"} == {spade}
    accuracy = pd.DataFrame([{**row, "agreement": 0.5} for row in rows])
    layers = exit_figures.layer_accuracy_figure(accuracy, 0.5)
    assert [t.line.color for t in layers.data if t.name == "SPADE"] == [spade]
    assert spade != decoders.colour("hybrid")


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
    np.testing.assert_allclose(z, viz.METRICS[metric].values(res.grids["logit_lens"]), rtol=1e-6)
    # cell text: the top-1 token of each (layer, position)
    assert np.asarray(fig.data[0].text).shape == (rows, cols)
    assert fig.data[0].text[-1][res.answer_position] == viz.visible_token(res.token(res.final_answer_id),
                                                                         max_len=7).replace("<", "&lt;")
    # hover: the top-k with probabilities
    custom = np.asarray(fig.data[0].customdata, dtype=object)
    assert custom.shape == (rows, cols, 2)
    assert custom[1, 0, 1].count("<br>") == res.top_k - 1 and "%" in custom[1, 0, 1]
    assert custom[0, 0, 1].startswith("<i>layer 0 is the input embeddings")  # the lens reads the embeddings there
    assert "customdata[1]" in trace["hovertemplate"]
    # axis: one tick per position, with the token strings
    assert list(fig.layout.xaxis.tickvals) == list(range(cols))
    assert len(fig.layout.xaxis.ticktext) == cols
    # a colour scale with a legend
    assert fig.data[0].colorbar.title.text == viz.METRICS[metric].label
    lo, hi = viz.metric_range(res, metric)
    assert fig.data[0].zmin == lo and fig.data[0].zmax == hi


def test_heatmap_of_another_grid_decoder(res):
    fig = viz.layer_position_heatmap(res, "entropy", decoder="tuned_lens")
    np.testing.assert_allclose(np.asarray(fig.data[0].z), res.grids["tuned_lens"].entropy, rtol=1e-6)
    assert fig.layout.title.text.startswith("Tuned lens")


def test_repeated_tokens_stay_distinct_columns():
    res = make_prompt([0, 11, 12, 12, 12])  # "<s>a a a a"
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
    assert outline[0].line.color == decoders.colour("answer")
    assert "positions" in fig.layout.title.text
    early = viz.layer_position_heatmap(res, window=(0, 3))
    assert not [s for s in early.layout.shapes if s.type == "rect"]  # the answer is not in view
    assert viz.default_window(4, 3, 10) == (0, 4)


def test_answer_heatmap_columns_are_decoders(res):
    fig = viz.answer_heatmap(res, "target_prob")
    names = decoders.ordered(res.decoders)
    assert names == ["logit_lens", "tuned_lens", "spade", "spade_no_bos", "linear_spade"]
    z = np.asarray(fig.data[0].z)
    assert z.shape == (res.num_layers + 1, len(names))
    np.testing.assert_allclose(z[:, names.index("spade")], res.answer["spade"].target_prob[:, 0], rtol=1e-6)
    assert list(fig.layout.xaxis.ticktext) == [_escaped(decoders.label(n)) for n in names]
    # the top layer of every decoder is the model's own answer
    assert len(set(fig.data[0].text[-1])) == 1
    # outlined: each decoder from the layer where it settles on the final answer
    outlines = sorted((s.x0, s.y0) for s in fig.layout.shapes if s.type == "rect")
    assert outlines == sorted((col - 0.5, SETTLES[n] - 0.5) for col, n in enumerate(names))
    only_two = viz.answer_heatmap(res, decoders=["spade", "logit_lens"])
    assert np.asarray(only_two.data[0].z).shape[1] == 2
    assert list(only_two.layout.xaxis.ticktext) == ["logit lens", "SPADE"]  # fixed reading order


def test_shared_colour_range_covers_both_heatmaps(res):
    lo, hi = viz.metric_range(res, "entropy")
    values = [viz.METRICS["entropy"].values(s) for s in [*res.grids.values(), *res.answer.values()]]
    assert lo == 0 and hi == pytest.approx(max(float(v.max()) for v in values))
    assert viz.metric_range(res, "top1_prob") == (0.0, 1.0)


def _with_kl_at_layer0(low: float, high: float) -> Prompt:
    """A prompt whose KL to final at layer 0 runs from `low` to `high` (as on a real model: 93-192
    nats there, 0-50 above), in every grid and answer column."""
    res = make_prompt()
    for stats in [*res.grids.values(), *res.answer.values()]:
        stats.kl_to_final = stats.kl_to_final.copy()  # an answer column is a view of its grid
        stats.kl_to_final[0] = np.linspace(low, high, stats.kl_to_final.shape[1])
    return res


def test_kl_colour_scale_is_clipped_above_layer0_and_says_so():
    res = _with_kl_at_layer0(93.0, 192.0)
    above = np.concatenate([s.kl_to_final[1:].ravel() for s in [*res.grids.values(), *res.answer.values()]])
    clip = float(f"{np.percentile(above, 99):.3g}")
    assert 3.5 < clip < 4.0  # the layers above 0 hold 0..4 nats
    assert viz.metric_range(res, "kl_to_final") == (0.0, clip)
    for fig in (viz.layer_position_heatmap(res, "kl_to_final"), viz.answer_heatmap(res, "kl_to_final"),
                viz.layer_position_heatmap(res, "kl_to_final", compact=True)):
        trace = fig.data[0]
        assert trace.zmax == clip
        peak = float(np.nanmax(np.asarray(trace.z, dtype=float)))  # each bar speaks of the cells it colours
        assert peak in (93.0, 192.0)
        assert trace.colorbar.title.text == f"KL to final (nats)<br>clipped at {clip:g}: layer 0 reaches {peak:g}"
        assert trace.colorbar.ticktext[-1] == f"≥ {clip:g}" and trace.colorbar.tickvals[-1] == clip
        assert list(trace.colorbar.tickvals[:-1]) == [0.0, 1.0, 2.0, 3.0]
        assert np.asarray(trace.z).max() >= 93  # hover shows the true values: z is not clipped
        assert "%{z:.3f}" in trace.hovertemplate
    positions = viz.layer_position_heatmap(res, "kl_to_final")
    np.testing.assert_allclose(np.asarray(positions.data[0].z)[0], res.grids["logit_lens"].kl_to_final[0], rtol=1e-6)


def test_kl_colour_scale_is_not_clipped_without_an_outlier_layer(res):
    near = _with_kl_at_layer0(3.0, 5.0)  # layer 0 barely above the rest: nothing dominates the scale
    assert viz.metric_range(near, "kl_to_final") == (0.0, pytest.approx(5.0))
    trace = viz.layer_position_heatmap(near, "kl_to_final").data[0]
    assert trace.colorbar.title.text == "KL to final (nats)" and trace.colorbar.tickvals is None
    # entropy is never clipped, even with an outlier at layer 0
    assert viz.metric_range(res, "entropy")[1] == pytest.approx(
        max(float(s.entropy.max()) for s in [*res.grids.values(), *res.answer.values()]))
    # a range the caller gives that leaves cells above it is said to clip them too
    narrow = viz.layer_position_heatmap(res, "entropy", zrange=(0.0, 2.0)).data[0]
    assert narrow.colorbar.title.text.startswith("entropy (nats)<br>clipped at 2: layer ")
    assert narrow.colorbar.ticktext[-1] == "≥ 2"


def test_special_and_markup_tokens_are_escaped(res):
    fig = viz.layer_position_heatmap(res)
    assert fig.layout.xaxis.ticktext[0] == "⟨s⟩"
    assert "<s>" not in json.dumps(list(fig.layout.xaxis.ticktext))
    assert html_token("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"  # plotly renders tags: token text must not
    markup = viz.layer_position_heatmap(make_prompt([0, 5, 3]))  # the token "<b>x</b>" at position 1
    assert markup.layout.xaxis.ticktext[1] == "&lt;b&gt;x&lt;/b&gt;"
    hover = json.dumps(np.asarray(markup.data[0].customdata).tolist())
    assert "1: &lt;b&gt;x&lt;/b&gt;" in hover and "<b>x" not in hover


# ------------------------------------------------------------------ curves


def test_entropy_curves_one_line_per_decoder_and_stable_marks(res):
    fig = viz.entropy_curves(res)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.legendgroup for t in lines] == decoders.ordered(res.decoders)
    for trace in lines:
        np.testing.assert_allclose(trace.y, res.answer[trace.legendgroup].entropy[:, 0], rtol=1e-6)
        first = res.first_stable_layer(trace.legendgroup)
        assert first == SETTLES[trace.legendgroup] and f"from layer {first}" in trace.name
        assert trace.line.dash == decoders.dash(trace.legendgroup)
    stars = [t for t in fig.data if t.mode == "markers"]
    assert {t.legendgroup for t in stars} == {n for n in res.decoders if res.first_stable_layer(n) is not None}
    assert len([s for s in fig.layout.shapes if s.type == "line"]) == len(stars)
    assert [t.legendgroup for t in viz.entropy_curves(res, decoders=["spade"]).data] == ["spade", "spade"]


def test_target_curves_probability_and_log_rank():
    other = make_prompt(target_id=5)  # the target is not the final answer: it ranks low
    fig = viz.target_curves(other)
    assert fig.layout.yaxis2.type == "log"
    assert fig.layout.yaxis2.range[0] > fig.layout.yaxis2.range[1]  # rank 1 on top
    probs = [t for t in fig.data if t.mode == "lines+markers" and t.xaxis == "x"]
    ranks = [t for t in fig.data if t.mode == "lines+markers" and t.xaxis == "x2"]
    assert len(probs) == len(ranks) == len(other.decoders)
    spade = next(t for t in ranks if t.legendgroup == "spade")
    np.testing.assert_array_equal(spade.y, other.answer["spade"].target_rank[:, 0])
    # ranks up to 199 here: every tick labelled in full, no plotly minor digits ("10, 2, 5, 100")
    assert max(s.target_rank.max() for s in other.answer.values()) < 1000
    assert list(fig.layout.yaxis2.ticktext) == ["1", "2", "5", "10", "20", "50", "100", "200", "500", "1k"]
    assert list(fig.layout.yaxis2.tickvals) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert _escaped(viz.visible_token(other.token(5))) in fig.layout.title.text


def test_log_ticks_are_round_and_labelled_in_full():
    from spade_viz.viz.style import log_ticks

    assert log_ticks(1, 100)["ticktext"] == ["1", "2", "5", "10", "20", "50", "100"]
    wide = log_ticks(1, 100_000)  # a rank over a whole vocabulary: powers of ten
    assert wide["tickvals"] == [1, 10, 100, 1000, 10_000, 100_000]
    assert wide["ticktext"] == ["1", "10", "100", "1k", "10k", "100k"]
    assert log_ticks(0.01, 10)["ticktext"] == ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2", "5", "10"]
    assert log_ticks(1e-4, 100)["ticktext"] == ["0.0001", "0.001", "0.01", "0.1", "1", "10", "100"]


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


# ------------------------------------------------------------------ decoder comparison and early exit


def test_comparison_and_heldout_kl_figures():
    rows = [{"decoder": d, "layer": layer, "accuracy": layer / 4, "agree_final": min(1.0, layer / 3)}
            for d in ("logit_lens", "tuned_lens", "spade") for layer in range(5)]
    fig = comparison_figure(pd.DataFrame(rows))
    solid = [t for t in fig.data if t.showlegend is not False and t.legendgroup]
    assert [t.name for t in solid] == ["logit lens", "tuned lens", "SPADE"]  # one legend entry per decoder
    assert len([t for t in fig.data if t.legendgroup]) == 6  # accuracy and agreement lines
    # the line at 95% of the full model's accuracy (1.00 at layer 4) is labelled with its own value
    line = next(s for s in fig.layout.shapes if s.type == "line")
    assert line.y0 == line.y1 == pytest.approx(0.95)
    assert [a.text for a in fig.layout.annotations] == ["95% of the full model's 1.00 = 0.95"]
    lower = comparison_figure(pd.DataFrame([{**row, "accuracy": row["accuracy"] * 0.61} for row in rows]))
    assert lower.layout.annotations[0].text == "95% of the full model's 0.61 = 0.58"
    # the legend lies in the bottom margin (below the plot and its axis title): it cannot cover the label
    legend, height = lower.layout.legend, lower.layout.height
    assert legend.yref == "container" and legend.yanchor == "bottom" and legend.orientation == "h"
    assert legend.y * height + 60 < lower.layout.margin.b  # two rows of legend fit under the axis title
    kl = heldout_kl_figure({"logit_lens": [3.0, 2.0, 0.0], "tuned_lens": [1.0, 0.5, 0.0]})
    assert [t.name for t in kl.data] == ["logit lens", "tuned lens"] and kl.layout.yaxis.type == "log"
    assert list(kl.data[0].y) == [3.0, 2.0]  # layer L is the model itself: KL 0, not drawn on a log scale
    assert list(kl.layout.yaxis.ticktext) == ["0.1", "0.2", "0.5", "1", "2", "5", "10"]


def test_exit_figures_from_frames():
    curve = pd.DataFrame({"threshold": [0.0, 0.5, 1.0], "accuracy": [0.8, 0.78, 0.6],
                          "compute_fraction": [1.05, 0.7, 0.4], "speedup": [0.95, 1.43, 2.5],
                          "mean_exit_layer": [6.0, 4.0, 2.0], "agreement": [1.0, 0.9, 0.7], "exit_rate": [0, .5, 1]})
    full = {"accuracy": 0.8, "compute_fraction": 1.0}
    points = {"best_accuracy": curve.iloc[0].to_dict(), "within_1pt": curve.iloc[1].to_dict()}
    fig = exit_figures.tradeoff_figure(curve, curve.iloc[2].to_dict(), full=full, points=points)
    hybrid = fig.data[0]
    assert hybrid.name == decoders.label("hybrid") and hybrid.line.color == decoders.colour("hybrid")
    assert list(hybrid.x) == [0.4, 0.7, 1.05]  # drawn left to right
    names = [t.name for t in fig.data]
    assert {"full model", "best accuracy", "largest speedup within 1 pt", exit_figures.CURRENT_TRACE} <= set(names)
    exit_figures.set_current(fig, curve.iloc[0].to_dict())
    assert [t.x for t in fig.data if t.name == exit_figures.CURRENT_TRACE] == [(1.05,)]
    hist = exit_figures.exit_histogram(np.array([1, 1, 3, 6]), 6)
    assert list(hist.data[0].y) == [0, 2, 0, 1, 0, 0, 1] and list(hist.data[0].x) == list(range(7))
    assert hist.data[0].marker.color[-1] == decoders.colour("full")
    # every layer labelled, the last bar "full"; hover names the layer, the last one the full model
    assert list(hist.layout.xaxis.tickvals) == list(range(7))
    assert list(hist.layout.xaxis.ticktext) == ["0", "1", "2", "3", "4", "5", "full"]
    assert hist.data[0].customdata[1] == "layer 1" and hist.data[0].customdata[-1] == "layer 6: the full model"
    deep = exit_figures.exit_histogram(np.array([0, 29, 30]), 30)  # the default model: every 5th layer
    assert list(deep.layout.xaxis.tickvals) == [0, 5, 10, 15, 20, 25, 30]
    assert list(deep.layout.xaxis.ticktext) == ["0", "5", "10", "15", "20", "25", "full"]
    assert list(deep.layout.xaxis.range) == [-0.5, 30.5] and sum(deep.data[0].y) == 3
    assert exit_figures.layer_ticks(32)[1] == ["0", "5", "10", "15", "20", "25", "full"]  # 30 would crowd "full"


def test_heatmap_cells_never_cut_the_answer_token(res):
    """Compact grids cut cell text to 4 characters; the final answer (" Berlin") is shown whole."""
    fig = viz.layer_position_heatmap(res, "entropy", compact=True)
    cells = [cell for row in fig.data[0].text for cell in row]
    whole = html_token(VOCAB[FINAL], max_len=40)
    assert whole in cells and len(VOCAB[FINAL]) > 4
    assert not any(cell.startswith(html_token(VOCAB[FINAL], max_len=4)[:-1]) and cell != whole for cell in cells)
    assert html_token(" Tokyo", max_len=4) in cells or html_token("Germany", max_len=4) in cells  # others are cut
