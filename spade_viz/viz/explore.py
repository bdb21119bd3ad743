"""Figures of Explore's further views, from plain results: pinned tokens across the layers, two runs
side by side with their difference, and the layers x generated-tokens heatmap of a generation.

Inputs are duck-typed: a position reading (`pin_probs`, `pin_ranks`, `pins`, `num_layers`, `token`),
a comparison (`layers`, `decoders`, `names`, `same_depth`), a generation (`grids`, `token_ids`,
`num_layers`, `token`, `first_layer`); `spade_viz.explore` makes them, a test can make others.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..decoders import colour as decoder_colour
from ..decoders import label as decoder_label
from ..decoders import ordered as ordered_decoders
from ..errors import InputError
from .curves import entropy_curves, target_curves
from .heatmaps import FONT, METRICS, answer_heatmap, layer_position_heatmap, metric_range
from .style import font_scaled
from .tokens import distinct_labels, visible_tokens

PIN_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e")  # one per pinned token (at most 5)
LEGEND = "␣ is a space, ↵ a line break, ⇥ a tab, ∅ a partial character; #1234 is a token id, shown where two " \
         "tokens would look alike."


def analysis_figures(res, metric: str = "entropy") -> dict[str, go.Figure]:
    """The Explore page's figures of one analysis, by name (`Analysis.figures`)."""
    zrange = metric_range(res, metric)
    return {"heatmap_positions": layer_position_heatmap(res, metric, zrange=zrange),
            "heatmap_answer": answer_heatmap(res, metric, zrange=zrange),
            "entropy_curves": entropy_curves(res), "target_curves": target_curves(res)}


@font_scaled()
def pin_curves(reading, metric: str = "prob") -> go.Figure:
    """One panel per decoder; in each, one line per pinned token: its probability (or rank, log scale,
    1 on top) at every layer of the reading's position."""
    if metric not in ("prob", "rank"):
        raise InputError(f"metric must be 'prob' or 'rank', not {metric!r}")
    table = reading.pin_probs if metric == "prob" else reading.pin_ranks
    pins = list(table)
    names = ordered_decoders(next(iter(table.values()))) if pins else []
    labels = dict(zip(pins, distinct_labels([reading.pins[p] for p in pins], reading.token)))
    fig = make_subplots(rows=1, cols=max(1, len(names)), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[html.escape(decoder_label(n)) for n in names] or [""])
    layers = np.arange(reading.num_layers + 1)
    for col, name in enumerate(names, start=1):
        for i, pin in enumerate(pins):
            fig.add_trace(go.Scatter(
                x=layers, y=table[pin][name], mode="lines+markers", name=f"{labels[pin]} · {decoder_label(name)}",
                legendgroup=pin, showlegend=col == 1, meta=[pin, name],
                line=dict(color=PIN_COLOURS[i % len(PIN_COLOURS)], width=2.2), marker=dict(size=4),
                hovertemplate=f"{html.escape(labels[pin])} · {html.escape(decoder_label(name))} · layer %{{x}}"
                              f"<br>{'probability' if metric == 'prob' else 'rank'}: "
                              f"%{{y:{'.2%' if metric == 'prob' else 'd'}}}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="layer", row=1, col=col)
    if metric == "rank":
        fig.update_yaxes(type="log", autorange="reversed")
    fig.update_yaxes(title_text="probability" if metric == "prob" else "rank (1 = top)", row=1, col=1)
    fig.update_layout(title=dict(text=f"Pinned tokens at position {reading.position}", x=0.01, font=dict(size=14)),
                      font=FONT, height=360, margin=dict(l=60, r=12, t=70, b=50), plot_bgcolor="white",
                      legend=dict(orientation="h", y=-0.25))
    return fig


@font_scaled()
def comparison_heatmaps(a, b, metric: str = "entropy", names: Sequence[str] = ("A", "B"),
                        decoders: Sequence[str] | None = None) -> tuple[go.Figure, go.Figure]:
    """Both runs' answer heatmaps on one colour scale (the union of their ranges)."""
    ra, rb = metric_range(a, metric), metric_range(b, metric)
    zrange = (min(ra[0], rb[0]), max(ra[1], rb[1]))
    figs = []
    for res, name in zip((a, b), names):
        shown = [d for d in (decoders or res.decoders) if d in res.answer]
        fig = answer_heatmap(res, metric, decoders=shown, zrange=zrange)
        fig.update_layout(title=dict(text=f"{html.escape(name)}: " + fig.layout.title.text))
        figs.append(fig)
    return figs[0], figs[1]


@font_scaled()
def difference_curves(comparison) -> go.Figure:
    """Per decoder, B − A of the entropy (left) and the target probability (right) at each layer; where
    the two models have different depths, both runs' curves against the relative depth instead."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "entropy (nats)" + (": B − A" if comparison.same_depth else ""),
        "target probability" + (": B − A" if comparison.same_depth else "")))
    a, b = comparison.names
    for name in comparison.decoders:
        rows = comparison.layers[comparison.layers["decoder"] == name]
        for col, key in ((1, "entropy"), (2, "target_prob")):
            series = ([("d_" + key, "layer", f"{decoder_label(name)}", "solid")] if comparison.same_depth else
                      [(f"{key}_a", "depth_a", f"{decoder_label(name)} · {a}", "solid"),
                       (f"{key}_b", "depth_b", f"{decoder_label(name)} · {b}", "dash")])
            for column, x, label, dash in series:
                fig.add_trace(go.Scatter(x=rows[x], y=rows[column], mode="lines+markers", name=label,
                                         legendgroup=label, showlegend=col == 1, marker=dict(size=4),
                                         line=dict(color=decoder_colour(name), dash=dash, width=2.2)), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="layer" if comparison.same_depth else "depth (layer / layers)", row=1, col=col)
        if comparison.same_depth:
            fig.add_hline(y=0, line=dict(color="#999", width=1), row=1, col=col)
    title = f"At the answer position: {html.escape(b)} minus {html.escape(a)}" if comparison.same_depth else \
        f"At the answer position: {html.escape(a)} (solid) and {html.escape(b)} (dashed)"
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)), font=FONT, height=360,
                      margin=dict(l=60, r=12, t=70, b=50), plot_bgcolor="white", legend=dict(orientation="h", y=-0.25))
    return fig


@font_scaled()
def generation_heatmap(gen, decoder: str = "spade", metric: str = "target_prob") -> go.Figure:
    """Layers x generated tokens for one decoder: each cell's text is its top-1, its colour `metric`
    (target probability: of the token the model emitted there); a dot marks each token's first layer."""
    spec = METRICS[metric]
    stats = gen.grids[decoder]
    z = spec.values(stats)
    n = len(gen.token_ids)
    ids = np.unique(stats.top1)
    names = dict(zip([int(i) for i in ids], distinct_labels([int(i) for i in ids], gen.token, max_len=6)))
    text = np.vectorize(lambda i: html.escape(names[int(i)], quote=False), otypes=[object])(stats.top1)
    columns = [html.escape(t, quote=False) for t in visible_tokens(gen.tokens, max_len=8, first_is_special=False)]
    zrange = (0.0, 1.0) if spec.bounded else (0.0, float(np.nanmax(z)) or 1.0)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(n)), y=list(range(gen.num_layers + 1)), text=text, texttemplate="%{text}",
        textfont=dict(size=9), colorscale=spec.colorscale, zmin=zrange[0], zmax=zrange[1], xgap=1, ygap=1,
        customdata=np.broadcast_to(np.array(columns, dtype=object), z.shape),
        colorbar=dict(title=dict(text=html.escape(spec.label), side="top"), orientation="h", y=1.0, yanchor="bottom",
                      x=1.0, xanchor="right", len=0.5, thickness=10),
        hovertemplate="<b>layer %{y}</b> · token %{x} (%{customdata})<br>top-1: <b>%{text}</b><br>"
                      f"{html.escape(spec.label)}: %{{z:.3f}}<extra></extra>"))
    first, name = gen.first_layer(decoder), decoder_label(decoder)
    fig.add_trace(go.Scatter(x=[i for i, f in enumerate(first) if f is not None], y=[f for f in first if f is not None],
                             mode="markers", marker=dict(symbol="circle", size=7, color=decoder_colour("answer")),
                             name="first layer giving the emitted token", hoverinfo="skip", showlegend=False))
    fig.update_layout(
        title=dict(text=f"{html.escape(name[:1].upper() + name[1:])}: each generated token, layer by layer", x=0.01,
                   font=dict(size=14)),
        font=FONT, height=18 * (gen.num_layers + 1) + 190, margin=dict(l=60, r=12, t=86, b=98), plot_bgcolor="white",
        xaxis=dict(tickmode="array", tickvals=list(range(n)), ticktext=columns, tickangle=-50,
                   title="generated token (the model's own, greedy)", range=[-0.5, n - 0.5]),
        yaxis=dict(title="layer", range=[-0.5, gen.num_layers + 0.5], dtick=1 if gen.num_layers < 40 else 5))
    return fig


def _plain(values) -> np.ndarray:
    """A trace's array as numpy, also when plotly holds it packed ({"dtype", "bdata", "shape"})."""
    if isinstance(values, dict) and "bdata" in values:
        flat = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
        return flat.reshape([int(n) for n in values["shape"].split(",")]) if "shape" in values else flat
    return np.asarray(values)


def clickable_cells(fig: go.Figure) -> go.Figure:
    """The heatmap `fig` (its first trace) with cells a click selects: plotly selects no heatmap cell, so an
    invisible marker sits on each cell and carries the cell's hover (its colour value as `marker.color`).
    A click anywhere selects the nearest cell's marker; Streamlit reports its x (position or column) and
    y (layer) in the chart's selection state."""
    heat = fig.data[0]
    z = _plain(heat.z).astype(float)
    rows, cols = z.shape
    xs = _plain(heat.x) if heat.x is not None else np.arange(cols)
    ys = _plain(heat.y) if heat.y is not None else np.arange(rows)
    text = _plain(heat.text).astype(object) if heat.text is not None else np.full(z.shape, "", dtype=object)
    custom = _plain(heat.customdata).astype(object)
    fig.add_trace(go.Scatter(
        x=np.tile(xs, rows), y=np.repeat(ys, cols), mode="markers", text=text.ravel(),
        customdata=custom.reshape(rows * cols, -1), showlegend=False, name="cells",
        hovertemplate=str(heat.hovertemplate).replace("%{z:", "%{marker.color:"),
        marker=dict(color=z.ravel(), size=10, opacity=0, showscale=False, colorscale=heat.colorscale),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0))))
    heat.hoverinfo = "skip"
    heat.hovertemplate = heat.customdata = None  # the markers carry the hover: sent once, not twice
    fig.update_layout(hoverdistance=-1, clickmode="event+select", dragmode=False)
    return fig
