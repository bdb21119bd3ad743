"""Presentation options every figure builder shares: a font scale for a projector, and clean
ticks for a log axis.

`scale_fonts(fig, 1.35)` enlarges every font of a finished figure (titles, ticks, legends, cell
text, hover labels, annotations) and, by default, its height and margins, so rows of a heatmap keep
room for their larger text. Builders take it as a `font_scale=` keyword through `font_scaled`.
"""

from __future__ import annotations

import functools
import math

import plotly.graph_objects as go

PROJECTOR_SCALE = 1.4  # the "Larger fonts (projector)" switch
_DEFAULT_FONT = 12  # plotly's default font size, where a figure names none


def _scale_sizes(node, scale: float) -> None:
    """Multiply the `size` of every font-like dict (a key ending in 'font') under `node`, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("font") and isinstance(value, dict) and isinstance(value.get("size"), (int, float)):
                value["size"] = round(value["size"] * scale, 1)
            _scale_sizes(value, scale)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _scale_sizes(item, scale)


def scale_fonts(fig: go.Figure, scale: float, height: bool = True) -> go.Figure:
    """A copy of `fig` with every font `scale` times larger (and its height and margins, unless
    `height` is False: for a figure whose size another component fixes)."""
    if scale == 1.0:
        return fig
    data = fig.to_dict()
    layout = data.setdefault("layout", {})
    font = layout.setdefault("font", {})
    font.setdefault("size", _DEFAULT_FONT)  # inherited sizes follow this one
    _scale_sizes(data, scale)
    if height:
        if isinstance(layout.get("height"), (int, float)):
            layout["height"] = int(layout["height"] * scale)
        margin = layout.get("margin") or {}
        for side in ("l", "r", "t", "b"):
            if isinstance(margin.get(side), (int, float)):
                margin[side] = int(margin[side] * scale)
    return go.Figure(data)


def font_scaled(height: bool = True):
    """Give a figure builder a `font_scale=1.0` keyword (see `scale_fonts`)."""
    def wrap(builder):
        @functools.wraps(builder)
        def build(*args, font_scale: float = 1.0, **kwargs) -> go.Figure:
            return scale_fonts(builder(*args, **kwargs), font_scale, height)

        return build

    return wrap


def _short(value: float) -> str:
    """1, 20, 500, 1k, 20k, 1M: a tick label without plotly's exponent or minor-digit forms."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def log_ticks(low: float, high: float) -> dict:
    """Axis settings for a log axis from `low` to `high` (> 0): every label written in full.

    Plotly's own log ticks label the minor ones by their first digit ("1, 2, 5, 10, 2, 5, 100"),
    which reads as a broken scale: here, 1-2-5 steps over up to three decades, powers of ten beyond.
    """
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1, 2, 5) if last - first <= 3 else (1,)
    values = [m * 10.0 ** e for e in range(first, last + 1) for m in steps]
    values = [v for v in values if low * 0.999 <= v <= high * 1.001] or [low, high]
    return dict(tickmode="array", tickvals=values, ticktext=[_short(v) for v in values])
