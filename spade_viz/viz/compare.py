"""Figures of the decoder comparison: per-layer accuracy and agreement on a dataset, and the
tuned lens's held-out KL against the logit lens. Pure plotly on pandas frames / lists."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..decoders import colour as decoder_colour
from ..decoders import label as decoder_label
from .heatmaps import FONT
from .style import font_scaled, log_ticks

_LAYOUT = dict(font=FONT, plot_bgcolor="white", margin=dict(l=60, r=20, t=50, b=50), hovermode="x unified")


def _legend_inside(corner: str) -> dict:
    """A legend in an empty top corner of the plot ("left" or "right")."""
    x, anchor = (0.01, "left") if corner == "left" else (0.99, "right")
    return dict(x=x, xanchor=anchor, y=0.98, yanchor="top", bgcolor="rgba(255,255,255,0.85)",
                bordercolor="#dddddd", borderwidth=1)


def fraction_label(fraction: float, final: float) -> str:
    """The label of the line at `fraction` x the full model's accuracy `final`: both numbers and the line's own."""
    return f"{fraction:.0%} of the full model's {final:.2f} = {fraction * final:.2f}"


@font_scaled()
def comparison_figure(curves: pd.DataFrame, fraction: float | None = 0.95, title: str | None = None) -> go.Figure:
    """One plot: per decoder, accuracy vs gold (solid) and agreement with the final answer (dotted)
    at every layer; a grey dashed line at `fraction` x the full model's accuracy.

    `curves`: rows decoder, layer, accuracy, agree_final (see `spade_viz.compare.layer_curves`).
    """
    fig = go.Figure()
    last_layer = int(curves["layer"].max()) if len(curves) else 0
    for name, group in curves.groupby("decoder", sort=False):
        label, color = html.escape(decoder_label(name)), decoder_colour(name)
        group = group.sort_values("layer")
        fig.add_trace(go.Scatter(  # one legend entry per decoder: it toggles both of its lines
            x=group["layer"], y=group["accuracy"], mode="lines+markers", name=label,
            legendgroup=name, line=dict(color=color, width=2.5), marker=dict(size=5),
            hovertemplate=f"{label} accuracy %{{y:.2f}}<extra></extra>",
        ))
        fig.add_trace(go.Scatter(
            x=group["layer"], y=group["agree_final"], mode="lines", name=f"{label} (agreement)",
            legendgroup=name, showlegend=False, line=dict(color=color, width=2, dash="dot"),
            hovertemplate=f"{label} agreement %{{y:.2f}}<extra></extra>",
        ))
    for key, dash in (("accuracy vs gold", "solid"), ("agrees with final answer", "dot")):  # line-style key
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=key, hoverinfo="skip",
                                 line=dict(color="#555555", width=2, dash=dash)))
    if len(curves) and fraction is not None:
        final = float(curves[curves["layer"] == last_layer]["accuracy"].iloc[0])
        if final > 0:
            fig.add_hline(y=fraction * final, line=dict(color="#777777", width=1, dash="dash"),
                          annotation_text=fraction_label(fraction, final),
                          annotation_position="top left", annotation_xshift=8,
                          annotation_font=dict(size=11, color="#555555"))
    fig.update_layout(title=title or "Accuracy (solid) and agreement with the final answer (dotted), per layer",
                      height=520, **_LAYOUT)
    # the legend below the plot: inside, it covered the line's label (at the left, where the curves are low)
    fig.update_layout(margin=dict(b=130), legend=dict(orientation="h", x=0, xanchor="left", yref="container",
                                                      y=0.01, yanchor="bottom"))
    fig.update_xaxes(title="layer", range=[-0.5, last_layer + 0.5], gridcolor="#eeeeee", zeroline=False,
                     dtick=max(1, (last_layer + 1) // 15))
    fig.update_yaxes(title="fraction of examples", range=[-0.02, 1.02], gridcolor="#eeeeee", zeroline=False)
    return fig


@font_scaled()
def heldout_kl_figure(kl: dict[str, Sequence[float]], title: str | None = None) -> go.Figure:
    """Per-layer mean KL(final || decoder) on held-out text, one line per decoder (log scale)."""
    fig = go.Figure()
    drawn = []
    for name, values in kl.items():
        values = np.asarray(values, dtype=float)
        layers = np.arange(len(values))
        shown = values[:-1] if len(values) > 1 else values  # layer L is the model itself: KL 0
        label = html.escape(decoder_label(name))
        drawn.append(np.maximum(shown, 1e-4))
        fig.add_trace(go.Scatter(
            x=layers[: len(shown)], y=drawn[-1], mode="lines+markers", name=label,
            line=dict(color=decoder_colour(name), width=2.5), marker=dict(size=5),
            hovertemplate=f"{label} %{{y:.3f}} nats<extra></extra>",
        ))
    fig.update_layout(title=title or "Held-out KL to the final distribution (lower is closer)", height=360,
                      legend=_legend_inside("right"), **_LAYOUT)
    fig.update_xaxes(title="layer", gridcolor="#eeeeee", zeroline=False)
    values = np.concatenate(drawn) if drawn else np.zeros(0)
    values = values[np.isfinite(values)]
    ticks = log_ticks(10 ** np.floor(np.log10(values.min())), 10 ** np.ceil(np.log10(values.max()))) \
        if values.size else {}
    fig.update_yaxes(title="KL (nats, log scale)", type="log", gridcolor="#eeeeee", **ticks)
    return fig
