"""Figures of the Early-exit page: pure functions from frames and numbers to plotly figures.

No torch, no Streamlit: inputs are the frames and dicts `spade_viz.exit` returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .. import decoders
from .style import font_scaled

_LAYOUT = dict(margin=dict(l=50, r=20, t=40, b=45), legend=dict(orientation="h", y=-0.2))


def _pareto(curve: pd.DataFrame) -> pd.DataFrame:
    """Sort a threshold curve by compute for drawing (one line left to right)."""
    return curve.sort_values(["compute_fraction", "accuracy"]).reset_index(drop=True)


@font_scaled(height=False)
def tradeoff_figure(
    hybrid: pd.DataFrame,
    current: dict | None = None,
    classic: pd.DataFrame | None = None,
    fixed: pd.DataFrame | None = None,
    full: dict | None = None,
    oracle: dict | None = None,
    points: dict | None = None,
) -> go.Figure:
    """Accuracy against compute fraction: every threshold of the hybrid exit and of the classic exit,
    SPADE at each fixed layer, the full model, the oracle, the paper's operating points and a marker
    at the current threshold."""
    fig = go.Figure()
    curve = _pareto(hybrid)
    fig.add_trace(go.Scatter(
        x=curve["compute_fraction"], y=curve["accuracy"], mode="lines+markers",
        name=decoders.label("hybrid"), line=dict(color=decoders.colour("hybrid")), marker=dict(size=4),
        customdata=np.stack([curve["threshold"], curve["speedup"], curve["mean_exit_layer"]], axis=1),
        hovertemplate="tau %{customdata[0]:.3f}<br>accuracy %{y:.3f}<br>compute %{x:.3f} "
                      "(%{customdata[1]:.2f}x)<br>mean exit layer %{customdata[2]:.1f}<extra>hybrid</extra>",
    ))
    if classic is not None and len(classic):
        c = _pareto(classic)
        fig.add_trace(go.Scatter(
            x=c["compute_fraction"], y=c["accuracy"], mode="lines", name=decoders.label("classic"),
            line=dict(color=decoders.colour("classic"), dash="dot"),
            customdata=c["threshold"],
            hovertemplate="tau %{customdata:.3f}<br>accuracy %{y:.3f}<br>compute %{x:.3f}<extra>classic</extra>",
        ))
    if fixed is not None and len(fixed):
        fig.add_trace(go.Scatter(
            x=fixed["compute_fraction"], y=fixed["accuracy"], mode="markers", name=decoders.label("fixed"),
            marker=dict(color=decoders.colour("fixed"), size=6, symbol="diamond-open"),
            customdata=fixed["layer"],
            hovertemplate="layer %{customdata}<br>accuracy %{y:.3f}<br>compute %{x:.3f}<extra>fixed layer</extra>",
        ))
    for series, point, symbol in (("full", full, "square"), ("oracle", oracle, "star")):
        if point:
            name = decoders.label(series)
            fig.add_trace(go.Scatter(
                x=[point["compute_fraction"]], y=[point["accuracy"]], mode="markers", name=name,
                marker=dict(color=decoders.colour(series), size=11, symbol=symbol),
                hovertemplate=f"{name}<br>accuracy %{{y:.3f}}<br>compute %{{x:.3f}}<extra></extra>",
            ))
    hybrid_colour = decoders.colour("hybrid")
    for key, label, symbol in (("best_accuracy", "best accuracy", "triangle-up"),
                               ("within_1pt", "largest speedup within 1 pt", "triangle-down")):
        point = (points or {}).get(key)
        if point:
            fig.add_trace(go.Scatter(
                x=[point["compute_fraction"]], y=[point["accuracy"]], mode="markers", name=label,
                marker=dict(color="white", size=12, symbol=symbol, line=dict(color=hybrid_colour, width=2)),
                hovertemplate=f"{label}<br>tau {point['threshold']:.3f}<br>accuracy %{{y:.3f}}<br>"
                              f"compute %{{x:.3f}} ({point['speedup']:.2f}x)<extra></extra>",
            ))
    if current:
        set_current(fig, current)
    fig.update_layout(title="Accuracy vs compute", xaxis_title="compute (fraction of the full forward pass)",
                      yaxis_title="accuracy", height=430, **_LAYOUT)
    fig.update_yaxes(rangemode="tozero")
    return fig


def layer_ticks(num_layers: int) -> tuple[list[int], list[str]]:
    """Ticks of an exit-layer axis (bars 0..L): every layer up to 15 layers, else every 5th; the last
    bar (layer L, never confident: the full model answers) reads "full"."""
    step = 1 if num_layers <= 15 else 5
    values = [layer for layer in range(0, num_layers, step) if num_layers - layer >= min(step, 3)]
    return values + [num_layers], [str(layer) for layer in values] + ["full"]


@font_scaled()
def exit_histogram(exit_layers: np.ndarray, num_layers: int) -> go.Figure:
    """How many examples exit at each layer; the last bar is 'never confident' (the full model)."""
    counts = np.bincount(np.asarray(exit_layers, dtype=np.int64), minlength=num_layers + 1)[: num_layers + 1]
    colors = [decoders.colour("hybrid")] * num_layers + [decoders.colour("full")]
    where = [f"layer {layer}" for layer in range(num_layers)] + [f"layer {num_layers}: the full model"]
    fig = go.Figure(go.Bar(x=np.arange(num_layers + 1), y=counts, marker_color=colors, customdata=where,
                           hovertemplate="%{customdata}<br>%{y} examples<extra></extra>"))
    fig.update_layout(title="Exit layers", xaxis_title="exit layer", yaxis_title="examples", height=330,
                      bargap=0.1, **_LAYOUT)
    values, labels = layer_ticks(num_layers)
    fig.update_xaxes(tickmode="array", tickvals=values, ticktext=labels, range=[-0.5, num_layers + 0.5])
    return fig


@font_scaled()
def layer_accuracy_figure(layer_accuracy: pd.DataFrame, full_accuracy: float | None = None,
                          metric: str = "accuracy") -> go.Figure:
    """Accuracy (or agreement with the full model) of each decoder at each layer."""
    fig = go.Figure()
    for decoder in decoders.ordered(layer_accuracy["decoder"].unique()):
        frame = layer_accuracy[layer_accuracy["decoder"] == decoder]
        fig.add_trace(go.Scatter(
            x=frame["layer"], y=frame[metric], mode="lines+markers", name=decoders.label(decoder),
            line=dict(color=decoders.colour(decoder)), marker=dict(size=4),
            hovertemplate=f"{decoders.label(decoder)}<br>layer %{{x}}<br>{metric} %{{y:.3f}}<extra></extra>",
        ))
    if full_accuracy is not None and metric == "accuracy":
        fig.add_hline(y=full_accuracy, line=dict(color=decoders.colour("full"), dash="dash"),
                      annotation_text=decoders.label("full"), annotation_position="bottom right")
    title = "Accuracy per layer" if metric == "accuracy" else "Agreement with the full model per layer"
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=metric, height=380, **_LAYOUT)
    fig.update_yaxes(range=[0, 1.02])
    return fig


CURRENT_TRACE = "your threshold"


def set_current(fig: go.Figure, current: dict) -> go.Figure:
    """Move the current-threshold marker of a `tradeoff_figure` in place (cheap on every slider move)."""
    for trace in fig.data:
        if trace.name == CURRENT_TRACE:
            trace.update(x=[current["compute_fraction"]], y=[current["accuracy"]],
                         hovertemplate=f"tau {current['threshold']:.3f}<br>accuracy %{{y:.3f}}<br>"
                                       f"compute %{{x:.3f}}<extra></extra>")
            return fig
    fig.add_trace(go.Scatter(
        x=[current["compute_fraction"]], y=[current["accuracy"]], mode="markers", name=CURRENT_TRACE,
        marker=dict(color=decoders.colour("hybrid"), size=16, symbol="circle", line=dict(color="black", width=2)),
        hovertemplate=f"tau {current['threshold']:.3f}<br>accuracy %{{y:.3f}}<br>compute %{{x:.3f}}<extra></extra>",
    ))
    return fig
