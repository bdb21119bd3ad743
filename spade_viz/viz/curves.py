"""Per-layer curves at the answer position, one line per decoder.

`entropy_curves`: entropy per layer. `target_curves`: probability (left) and rank (right,
log scale, rank 1 on top) of the target token. Both mark, for each decoder, the first layer
from which its top-1 equals the model's final answer and stays equal (a dotted vertical line
and a star on the curve).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..decoders import colour as decoder_colour
from ..decoders import dash as decoder_dash
from ..decoders import label as decoder_label
from ..decoders import ordered as ordered_decoders
from .heatmaps import FONT
from .inputs import reads_prompt_layers
from .style import font_scaled, log_ticks
from .tokens import html_token

if TYPE_CHECKING:
    from .inputs import PromptLayers


def _names(res: PromptLayers, decoders: Sequence[str] | None) -> list[str]:
    return ordered_decoders(list(decoders) if decoders is not None else res.decoders)


def _legend_name(res: PromptLayers, name: str) -> str:
    first = res.first_stable_layer(name)
    when = f"answer from layer {first}" if first is not None else "never settles"
    return f"{html.escape(decoder_label(name))} ({when})"


def _add_decoder(fig: go.Figure, res: PromptLayers, name: str, y: np.ndarray, value_label: str, fmt: str,
                 row: int | None = None, col: int | None = None, showlegend: bool = True) -> None:
    layers = np.arange(res.num_layers + 1)
    color = decoder_colour(name)
    where = dict(row=row, col=col) if row else {}
    fig.add_trace(
        go.Scatter(
            x=layers, y=y, mode="lines+markers", name=_legend_name(res, name), legendgroup=name,
            showlegend=showlegend, line=dict(color=color, width=2.5, dash=decoder_dash(name)), marker=dict(size=5),
            hovertemplate=f"{html.escape(decoder_label(name))} · layer %{{x}}<br>{value_label}: %{{y:{fmt}}}"
                          "<extra></extra>",
        ),
        **where,
    )
    first = res.first_stable_layer(name)
    if first is not None:
        fig.add_trace(
            go.Scatter(
                x=[first], y=[y[first]], mode="markers", legendgroup=name, showlegend=False,
                marker=dict(symbol="star", size=15, color=color, line=dict(color="black", width=1)),
                hovertemplate=f"{html.escape(decoder_label(name))}: final answer from layer {first} on"
                              "<extra></extra>",
            ),
            **where,
        )
        fig.add_vline(x=first, line=dict(color=color, width=1.5, dash="dot"), **where)


def _base_layout(fig: go.Figure, res: PromptLayers, title: str, height: int) -> None:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)),
        font=FONT,
        height=height,
        margin=dict(l=60, r=16, t=50, b=125),
        legend=dict(orientation="h", x=0, xanchor="left", yref="container", y=0.01, yanchor="bottom",
                    font=dict(size=12)),
        plot_bgcolor="white",
        hovermode="closest",
    )
    fig.update_xaxes(title="layer", range=[-0.5, res.num_layers + 0.5], gridcolor="#eeeeee", zeroline=False,
                     dtick=5 if res.num_layers >= 10 else 1)
    fig.update_yaxes(gridcolor="#eeeeee", zeroline=False)


@font_scaled()
@reads_prompt_layers
def entropy_curves(res: PromptLayers, decoders: Sequence[str] | None = None, height: int = 380) -> go.Figure:
    """Entropy (nats) of each decoder's prediction at the answer position, per layer."""
    fig = go.Figure()
    for name in _names(res, decoders):
        _add_decoder(fig, res, name, res.answer[name].entropy[:, 0], "entropy (nats)", ".3f")
    _base_layout(fig, res, "Entropy at the answer position", height)
    fig.update_yaxes(title="entropy (nats)", rangemode="tozero")
    return fig


@font_scaled()
@reads_prompt_layers
def target_curves(res: PromptLayers, decoders: Sequence[str] | None = None, height: int = 380) -> go.Figure:
    """Probability (left) and rank (right, log scale, 1 on top) of the target token, per layer."""
    target = html_token(res.token(res.target_id))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("probability", "rank (log scale; 1 = top-1)"))
    for name in _names(res, decoders):
        stats = res.answer[name]
        _add_decoder(fig, res, name, stats.target_prob[:, 0], "probability", ".3f", row=1, col=1)
        _add_decoder(fig, res, name, stats.target_rank[:, 0].astype(float), "rank", ".0f", row=1, col=2,
                     showlegend=False)
    _base_layout(fig, res, f"Target token <b>{target}</b> at the answer position", height)
    fig.update_yaxes(range=[-0.02, 1.02], row=1, col=1)
    ranks = [stats.target_rank.max() for stats in res.answer.values()]
    top = max(10.0, float(max(ranks)) if ranks else 10.0)
    ticks = log_ticks(1, 10 ** math.ceil(np.log10(top)))
    fig.update_yaxes(type="log", range=[np.log10(top) * 1.05, -0.05], row=1, col=2, **ticks)
    fig.update_annotations(font=dict(size=12))
    return fig
