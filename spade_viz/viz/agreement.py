"""Where two decoders disagree, position by position: which of them already gives the model's final
answer at each (layer, position), and from which layer each settles on it.

Pure plotly, like `heatmaps` (whose sizes and font it shares)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from ..decoders import colour as decoder_colour
from ..decoders import label as decoder_label
from .heatmaps import FONT, _layout_sizes
from .inputs import reads_prompt_layers
from .style import font_scaled
from .tokens import visible_tokens

if TYPE_CHECKING:  # figures take results, they do not compute them
    from .inputs import PromptLayers


AGREEMENT = (  # (category, colour) of a cell where two decoders' top-1 are compared with the final answer
    ("both find the final answer", "#c7e9c0"),
    ("only {a} finds it", "#ff7f0e"),
    ("only {b} finds it", "#1f77b4"),
    ("both wrong, the same token", "#d9d9d9"),
    ("both wrong, different tokens", "#969696"),
)


def first_stable_layers(res: PromptLayers, decoder: str) -> np.ndarray:
    """Per position, the first layer from which `decoder`'s top-1 is the model's final top-1 there
    and stays so; -1 where it never is (not even at the last layer)."""
    top1 = res.grids[decoder].top1
    final = res.grids["logit_lens"].top1[-1]
    wrong = top1 != final[None, :]
    rows = top1.shape[0]
    last_wrong = np.where(wrong.any(0), rows - 1 - np.argmax(wrong[::-1], axis=0), -1)
    first = last_wrong + 1
    return np.where(first < rows, first, -1)


@reads_prompt_layers
def agreement_grid(res: PromptLayers, a: str = "spade", b: str = "logit_lens") -> dict:
    """Where the top-1 of two decoders' grids agree, and which one finds the final answer earlier.

    Returns `category` [layers, positions] (an index into AGREEMENT), `first` {decoder: [positions]}
    (`first_stable_layers`), `earlier` [positions] (b's first layer minus a's: > 0 where `a`
    settles earlier; NaN where either never does) and `disagree` (the share of cells below the
    last layer where the two top-1 differ).
    """
    top_a, top_b = res.grids[a].top1, res.grids[b].top1
    final = res.grids["logit_lens"].top1[-1][None, :]
    hit_a, hit_b = top_a == final, top_b == final
    category = np.select([hit_a & hit_b, hit_a, hit_b, top_a == top_b], [0, 1, 2, 3], default=4)
    first = {name: first_stable_layers(res, name) for name in (a, b)}
    never = (first[a] < 0) | (first[b] < 0)
    earlier = np.where(never, np.nan, (first[b] - first[a]).astype(float))
    below = slice(0, max(1, top_a.shape[0] - 1))
    return {"category": category, "first": first, "earlier": earlier,
            "disagree": float((top_a[below] != top_b[below]).mean())}


@font_scaled()
@reads_prompt_layers
def agreement_heatmap(
    res: PromptLayers,
    a: str = "spade",
    b: str = "logit_lens",
    window: tuple[int, int] | None = None,
) -> go.Figure:
    """Layers x positions coloured by where two decoders' top-1 agree (`agreement_grid`); markers at
    each decoder's first settled layer per position, so the gap between them reads as "how many
    layers earlier"."""
    derived = agreement_grid(res, a, b)
    start, stop = window or (0, len(res.tokens))
    cols = list(range(start, stop))
    rows = res.num_layers + 1
    names = [text.format(a=decoder_label(a), b=decoder_label(b)) for text, _ in AGREEMENT]
    colours = [c for _, c in AGREEMENT]
    k = len(AGREEMENT)
    scale = [[edge, colours[min(i, k - 1)]] for i in range(k) for edge in (i / k, (i + 1) / k)]
    row_px, _ = _layout_sizes(res.num_layers)
    full = visible_tokens(res.tokens, max_len=40)
    shown = visible_tokens(res.tokens, max_len=10)
    labels = np.array(names, dtype=object)[derived["category"][:, cols]]
    position_text = np.broadcast_to(
        np.array([f"{c}: {html.escape(full[c], quote=False)}" for c in cols], dtype=object), (rows, len(cols)))
    fig = go.Figure(go.Heatmap(
        z=derived["category"][:, cols], x=cols, y=list(range(rows)), zmin=-0.5, zmax=k - 0.5,
        colorscale=scale, showscale=False, xgap=1, ygap=1,
        customdata=np.stack([position_text, labels], axis=-1),
        hovertemplate="<b>layer %{y}</b> · position %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
    ))
    for name, symbol in ((a, "triangle-up"), (b, "circle-open")):
        first = derived["first"][name][cols]
        keep = first >= 0
        colour, label = decoder_colour(name), html.escape(decoder_label(name))
        fig.add_trace(go.Scatter(
            x=np.asarray(cols)[keep], y=first[keep], mode="markers", name=f"{label} settles",
            marker=dict(symbol=symbol, size=9, color=colour, line=dict(width=2, color=colour)),
            hovertemplate=f"{label} settles on the final answer at layer %{{y}}<extra></extra>",
        ))
    for i, (name, colour) in enumerate(zip(names, colours)):  # legend entries for the categories
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, legendrank=1000 + i,
                                 marker=dict(symbol="square", size=12, color=colour)))
    earlier = derived["earlier"][cols]
    ticktext = [html.escape(shown[c], quote=False) for c in cols]
    if res.answer_position in cols:
        i = cols.index(res.answer_position)
        ticktext[i] = f"<b>{ticktext[i]}</b>"
    fig.add_trace(go.Scatter(  # the gap, as text above the top row
        x=cols, y=[rows - 0.5 + 0.6] * len(cols), mode="text", showlegend=False, hoverinfo="skip",
        text=["" if np.isnan(e) else f"{int(e):+d}" for e in earlier], textfont=dict(size=11),
    ))
    fig.update_layout(
        title=dict(text=f"Where {html.escape(decoder_label(a))} and {html.escape(decoder_label(b))} disagree "
                        f"({derived['disagree']:.0%} of cells below the top); top: layers earlier",
                   x=0.01, xanchor="left", font=dict(size=14)),
        font=FONT,
        height=row_px * rows + 230,
        margin=dict(l=60, r=12, t=86, b=140),
        legend=dict(orientation="h", y=-0.32, x=0, yanchor="top", font=dict(size=11)),
        xaxis=dict(tickmode="array", tickvals=cols, ticktext=ticktext, tickangle=-50, tickfont=dict(size=12),
                   showgrid=False, range=[start - 0.5, stop - 0.5]),
        yaxis=dict(title="layer", dtick=1 if res.num_layers < 40 else 5, showgrid=False, range=[-0.5, rows + 0.6]),
        plot_bgcolor="white",
    )
    return fig
