"""Plotly figure builders: pure functions from results (an `Analysis`) to `go.Figure`s.

No Streamlit and no torch here: the app, the CLI and the tests call the same builders.
"""

from .curves import entropy_curves, target_curves
from .heatmaps import (
    DECODER_COLORS,
    METRICS,
    Metric,
    answer_heatmap,
    decoder_color,
    decoder_label,
    default_window,
    layer_position_heatmap,
    metric_range,
    ordered_decoders,
)
from .tokens import is_special, visible_token, visible_tokens

__all__ = [
    "DECODER_COLORS",
    "METRICS",
    "Metric",
    "answer_heatmap",
    "decoder_color",
    "decoder_label",
    "default_window",
    "entropy_curves",
    "is_special",
    "layer_position_heatmap",
    "metric_range",
    "ordered_decoders",
    "target_curves",
    "visible_token",
    "visible_tokens",
]
