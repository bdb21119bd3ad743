"""Heatmaps of an Analysis: layers x prompt positions (one decoder), and layers x decoders at the answer.

Pure plotly: every builder takes an `Analysis` (or any object shaped like one, see `inputs`) and
returns a `go.Figure`.
Rows are layers with layer 0 (the embeddings) at the bottom and the model's output on top;
cell text is the decoded top-1 token; colour is a metric from `METRICS`; hover gives the
top-k tokens with their probabilities. Colour scales are oriented so that darker always means
"more decided" (low entropy, high probability, close to the final distribution). KL to the final
distribution is clipped: at layer 0 (the embeddings) it is many times larger than above, and a
linear scale up to it would paint every other layer "the same as the final answer"; the colour
bar says so, and hover keeps the true values.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from ..decoders import colour as decoder_colour
from ..decoders import label as decoder_label
from ..decoders import ordered as ordered_decoders
from ..errors import InputError
from .inputs import reads_prompt_layers
from .style import font_scaled
from .tokens import distinct_labels, html_token, visible_tokens

if TYPE_CHECKING:  # figures take results, they do not compute them
    from .inputs import LayerStats, PromptLayers

FONT = dict(family="Inter, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif", size=13)
SPADE_AT_START = "<s> has nothing to drop: SPADE here is the model's own output at every layer"


@dataclass(frozen=True)
class Metric:
    """A per-cell number to colour by."""

    key: str
    label: str  # colour-bar title and hover label
    help: str  # one sentence for a student
    higher_is_sure: bool  # True: high values mean a decided distribution
    bounded: bool  # True: the value lies in [0, 1]
    clipped: bool = False  # True: the colour scale stops at CLIP_PERCENTILE of the layers above 0

    def values(self, stats: LayerStats) -> np.ndarray:
        """The metric of every cell of `stats`, [layers, positions]."""
        if self.key == "top1_prob":
            return stats.top_probs[..., 0]
        return getattr(stats, self.key)

    @property
    def colorscale(self) -> str:
        return "YlGnBu" if self.higher_is_sure else "YlGnBu_r"


METRICS: dict[str, Metric] = {
    "entropy": Metric("entropy", "entropy (nats)",
                      "How spread out the prediction is: 0 means all probability on one token.", False, False),
    "top1_prob": Metric("top1_prob", "top-1 probability",
                        "The probability of the token shown in the cell.", True, True),
    "kl_to_final": Metric("kl_to_final", "KL to final (nats)",
                          "How far the layer's prediction is from the model's final one: 0 means identical. "
                          "Where layer 0 (the embeddings) lies far above the rest, the colour scale stops "
                          "below it and its bar says so (hover shows the true values).",
                          False, False, clipped=True),
    "target_prob": Metric("target_prob", "target probability",
                          "The probability of the target token (at other positions: of the model's own final "
                          "prediction there).", True, True),
}


CLIP_PERCENTILE = 99  # a clipped metric's colour scale ends here, over the layers above 0 ...
CLIP_WHEN = 1.5  # ... when the largest value is more than this many times that


def _metric(metric: object) -> Metric:
    if not isinstance(metric, str) or metric not in METRICS:
        raise InputError(f"no metric {metric!r}: choose one of {', '.join(METRICS)}")
    return METRICS[metric]


def _finite(res: PromptLayers, spec: Metric, layers: slice = slice(None)) -> np.ndarray:
    """The metric's finite values over every view of `res` (the grids and the answer columns), flat."""
    values = [spec.values(stats)[layers].ravel() for stats in [*res.grids.values(), *res.answer.values()]]
    flat = np.concatenate(values) if values else np.zeros(0)
    return flat[np.isfinite(flat)]


def _peak(values: np.ndarray) -> tuple[float, int]:
    """The largest finite value of [layers, ...] values and its layer ((0, 0) where none is above 0)."""
    finite = np.where(np.isfinite(values), values, -np.inf)
    if not finite.size or finite.max() <= 0:
        return 0.0, 0
    return float(finite.max()), int(np.unravel_index(np.argmax(finite), finite.shape)[0])


@reads_prompt_layers
def metric_peak(res: PromptLayers, metric: str) -> tuple[float, int]:
    """The largest finite value of the metric over every view of `res`, and its layer ((0, 0) for none)."""
    spec = _metric(metric)
    peaks = [_peak(spec.values(stats)) for stats in [*res.grids.values(), *res.answer.values()]]
    return max(peaks, key=lambda peak: peak[0], default=(0.0, 0))


@reads_prompt_layers
def metric_range(res: PromptLayers, metric: str) -> tuple[float, float]:
    """One colour range for every view of `res`, so the two heatmaps can be compared by colour.

    A clipped metric (KL to final) ends at the CLIP_PERCENTILE of the layers above 0 when its
    largest value (at layer 0, the embeddings) is more than CLIP_WHEN times that.
    """
    spec = _metric(metric)
    if spec.bounded:
        return 0.0, 1.0
    top = metric_peak(res, metric)[0]
    above = _finite(res, spec, slice(1, None))
    if spec.clipped and above.size:
        clip = float(np.percentile(above, CLIP_PERCENTILE))
        if clip > 0 and top > CLIP_WHEN * clip:
            top = float(f"{clip:.3g}")  # the colour bar's label, exactly
    return 0.0, (top if top > 0 else 1.0)


def default_window(num_positions: int, answer_position: int, size: int) -> tuple[int, int]:
    """[start, stop) of `size` positions ending at the answer (or all, when they fit)."""
    size = max(1, size)
    stop = min(num_positions, answer_position + 1)
    return max(0, stop - size), stop


def _layout_sizes(num_layers: int) -> tuple[int, int]:
    """(row height px, cell font px) for L+1 rows: readable for 12..100 layers."""
    rows = num_layers + 1
    row_px = 18 if rows <= 40 else max(9, int(740 / rows))
    return row_px, 11 if row_px >= 17 else (9 if row_px >= 12 else 0)


LAYER0_NOTE = "layer 0 is the input embeddings, read by the lens: not yet a prediction"


def _hover_top(res: PromptLayers, stats: LayerStats, cols: Sequence[int], embeddings: bool = False) -> np.ndarray:
    """[layers, len(cols)] strings: the top-k tokens with probabilities, one per line; two different
    tokens that would look alike get their ids. `embeddings`: layer 0 says it reads the embeddings."""
    ids = stats.top_ids[:, cols]
    probs = stats.top_probs[:, cols]
    unique = [int(i) for i in np.unique(ids)]
    names = {i: html_token(res.token(i)) for i in unique}
    out = np.empty(ids.shape[:2], dtype=object)
    for layer in range(ids.shape[0]):
        for col in range(ids.shape[1]):
            cell = [int(i) for i in ids[layer, col]]
            shown = [names[i] for i in cell]
            if len(set(shown)) < len(set(cell)):  # two tokens shown alike: say which is which
                shown = [html.escape(t, quote=False) for t in distinct_labels(cell, res.token)]
            out[layer, col] = "<br>".join(f"{p:6.1%}  {t}" for t, p in zip(shown, probs[layer, col]))
            if embeddings and layer == 0:
                out[layer, col] = f"<i>{LAYER0_NOTE}</i><br>" + out[layer, col]
    return out


def _cell_text(res: PromptLayers, top1: np.ndarray, max_len: int) -> np.ndarray:
    """Each cell's top-1 token cut to `max_len` characters, but the final answer, which a class looks for."""
    answer = getattr(res, "final_answer_id", None)
    names = {int(i): html_token(res.token(int(i)), max_len=40 if i == answer else max_len) for i in np.unique(top1)}
    return np.vectorize(lambda i: names[int(i)], otypes=[object])(top1)


def _clip_ticks(top: float) -> tuple[list[float], list[str]]:
    """Colour-bar ticks for a scale clipped at `top`: round steps, and "≥ top" at the end."""
    raw = top / 4
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    values = [float(v) for v in np.arange(0, top, step) if v <= top - 0.6 * step]
    return values + [top], [f"{v:g}" for v in values] + [f"≥ {top:g}"]


def _colorbar(z: np.ndarray, spec: Metric, zrange: tuple[float, float], length: float) -> dict:
    """A horizontal colour bar for the cells `z` ([layers, columns]); where cells lie above its top, the
    title and the last tick say so. Only the cells drawn are read: a figure of one window or of the answer
    column never computes the rest of a grid."""
    title, ticks = html.escape(spec.label), {}
    peak, layer = _peak(z)
    if not spec.bounded and peak > zrange[1]:  # two lines: one fits above the bar of a narrow heatmap
        title += f"<br>clipped at {zrange[1]:g}: layer {layer} reaches {peak:.3g}"
        values, labels = _clip_ticks(zrange[1])
        ticks = dict(tickmode="array", tickvals=values, ticktext=labels)
        length = max(length, 0.6)  # the title is centred on the bar: a longer bar keeps it in the figure
    return dict(
        title=dict(text=title, side="top", font=dict(size=12)),
        orientation="h", x=1.0, xanchor="right", y=1.0, yanchor="bottom", len=length, thickness=10,
        tickfont=dict(size=11), ypad=4, **ticks,
    )


def _heatmap_trace(res, z, text, custom, spec, zrange, font_px, hover_head, bar_len) -> go.Heatmap:
    return go.Heatmap(
        z=z,
        text=text,
        texttemplate="%{text}" if font_px else None,
        textfont=dict(size=font_px or 9),
        customdata=custom,
        hovertemplate=(
            f"{hover_head}<br>{spec.label}: %{{z:.3f}}<br><br><b>top-{res.top_k}</b><br>%{{customdata[1]}}"
            "<extra></extra>"
        ),
        colorscale=spec.colorscale,
        zmin=zrange[0],
        zmax=zrange[1],
        colorbar=_colorbar(np.asarray(z, dtype=float), spec, zrange, bar_len),
        xgap=1,
        ygap=1,
    )


@font_scaled()
@reads_prompt_layers
def layer_position_heatmap(
    res: PromptLayers,
    metric: str = "entropy",
    window: tuple[int, int] | None = None,
    decoder: str = "logit_lens",
    zrange: tuple[float, float] | None = None,
    compact: bool = False,
) -> go.Figure:
    """Heatmap 1: one row per layer (0..L), one column per prompt position in `window` [start, stop).

    `compact`: for two or three side by side (shorter title and cell text).
    """
    spec = _metric(metric)
    stats = res.grids[decoder]
    start, stop = window or (0, len(res.tokens))
    cols = list(range(start, stop))
    zrange = zrange or metric_range(res, metric)
    row_px, font_px = _layout_sizes(res.num_layers)

    shown = visible_tokens(res.tokens, max_len=6 if compact else 10)
    full = visible_tokens(res.tokens, max_len=40)
    ticktext = [html.escape(shown[c], quote=False) for c in cols]
    if res.answer_position in cols:
        i = cols.index(res.answer_position)
        ticktext[i] = f"<b>{ticktext[i]}</b>"
    position_text = np.array([f"{c}: {html.escape(full[c], quote=False)}" for c in cols], dtype=object)
    if decoder == "spade" and 0 in cols:  # SPADE's grid: <s> has nothing to drop (analysis.spade_grid)
        position_text[cols.index(0)] += "<br>" + html.escape(SPADE_AT_START, quote=False)
    custom = np.stack([np.broadcast_to(position_text, (res.num_layers + 1, len(cols))),
                       _hover_top(res, stats, cols, embeddings=decoder != "spade")], axis=-1)
    z = spec.values(stats)[:, cols]
    trace = _heatmap_trace(
        res, z, _cell_text(res, stats.top1[:, cols], 4 if compact else 7), custom, spec, zrange, font_px,
        f"<b>layer %{{y}}</b> · position %{{customdata[0]}}<br>{html.escape(decoder_label(decoder))} top-1: "
        "<b>%{text}</b>",
        bar_len=0.4,
    )
    trace.x = cols
    trace.y = list(range(res.num_layers + 1))
    fig = go.Figure(trace)
    if res.answer_position in cols:
        fig.add_shape(type="rect", x0=res.answer_position - 0.5, x1=res.answer_position + 0.5,
                      y0=-0.5, y1=res.num_layers + 0.5, line=dict(color=decoder_colour("answer"), width=2.5))
    name = decoder_label(decoder)
    title = f"{html.escape(name[:1].upper() + name[1:])}" + ("" if compact else ": top-1 token per layer and position")
    if stop - start < len(res.tokens):
        title += f" (positions {start}–{stop - 1} of {len(res.tokens)})"
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)),
        font=FONT,
        height=row_px * (res.num_layers + 1) + 184,
        margin=dict(l=60, r=12, t=86, b=98),
        xaxis=dict(tickmode="array", tickvals=cols, ticktext=ticktext, tickangle=-50, tickfont=dict(size=12),
                   title=dict(text="prompt token (answer position outlined)", standoff=6), showgrid=False,
                   range=[start - 0.5, stop - 0.5]),
        yaxis=dict(title="layer", dtick=1 if res.num_layers < 40 else 5, showgrid=False,
                   range=[-0.5, res.num_layers + 0.5]),
        plot_bgcolor="white",
        hoverlabel=dict(font=dict(family="DejaVu Sans Mono, monospace", size=12), align="left"),
    )
    return fig


@font_scaled()
@reads_prompt_layers
def answer_heatmap(
    res: PromptLayers,
    metric: str = "entropy",
    decoders: Sequence[str] | None = None,
    zrange: tuple[float, float] | None = None,
) -> go.Figure:
    """Heatmap 2: the answer position, one row per layer, one column per decoder.

    Outlined: for each decoder, the layers from which its top-1 equals the model's final answer
    and stays equal.
    """
    spec = _metric(metric)
    names = ordered_decoders(list(decoders) if decoders is not None else res.decoders)
    zrange = zrange or metric_range(res, metric)
    row_px, font_px = _layout_sizes(res.num_layers)
    rows = res.num_layers + 1
    z = np.concatenate([spec.values(res.answer[n]) for n in names], axis=1)
    top1 = np.concatenate([res.answer[n].top1 for n in names], axis=1)
    hover = np.concatenate([_hover_top(res, res.answer[n], [0], embeddings=n in ("logit_lens", "tuned_lens"))
                            for n in names], axis=1)
    labels = [decoder_label(n) for n in names]
    custom = np.stack([np.broadcast_to(np.array([html.escape(x) for x in labels], dtype=object), (rows, len(names))),
                       hover], axis=-1)
    answer_tok = html_token(res.tokens[res.answer_position])
    trace = _heatmap_trace(
        res, z, _cell_text(res, top1, 10), custom, spec, zrange, font_px,
        "<b>layer %{y}</b> · %{customdata[0]}<br>top-1: <b>%{text}</b>",
        bar_len=0.85,
    )
    trace.x = list(range(len(names)))
    trace.y = list(range(rows))
    fig = go.Figure(trace)
    for col, name in enumerate(names):
        first = res.first_stable_layer(name)
        if first is not None:
            fig.add_shape(type="rect", x0=col - 0.5, x1=col + 0.5, y0=first - 0.5, y1=res.num_layers + 0.5,
                          line=dict(color=decoder_colour("answer"), width=2.5))
    fig.update_layout(
        title=dict(text=f"Answer position: after <b>{answer_tok}</b>", x=0.01, xanchor="left",
                   font=dict(size=14)),
        font=FONT,
        height=row_px * rows + 184,
        margin=dict(l=60, r=12, t=86, b=98),
        xaxis=dict(tickmode="array", tickvals=list(range(len(names))),
                   ticktext=[html.escape(x) for x in labels], tickangle=-30 if len(names) > 2 else 0,
                   tickfont=dict(size=12), showgrid=False, range=[-0.5, len(names) - 0.5]),
        yaxis=dict(title="layer", dtick=1 if res.num_layers < 40 else 5, showgrid=False, range=[-0.5, rows - 0.5]),
        plot_bgcolor="white",
        hoverlabel=dict(font=dict(family="DejaVu Sans Mono, monospace", size=12), align="left"),
    )
    return fig


# ------------------------------------------------------------------ two decoders over the whole prompt
