"""Plotly figure builders: pure functions from results (an `Analysis`, a sweep's frames) to `go.Figure`s.

No Streamlit and no torch here: the app, the CLI and the tests call the same builders. Labels,
colours and the order of decoders come from `spade_viz.decoders`.
"""

from .agreement import agreement_grid, agreement_heatmap
from .curves import entropy_curves, target_curves
from .explore import (
    LEGEND,
    analysis_figures,
    clickable_cells,
    comparison_heatmaps,
    difference_curves,
    generation_heatmap,
    pin_curves,
)
from .heatmaps import (
    METRICS,
    Metric,
    answer_heatmap,
    default_window,
    layer_position_heatmap,
    metric_range,
)
from .tokens import distinct_labels, is_special, visible_token, visible_tokens

__all__ = [
    "LEGEND",
    "METRICS",
    "Metric",
    "agreement_grid",
    "analysis_figures",
    "clickable_cells",
    "agreement_heatmap",
    "answer_heatmap",
    "comparison_heatmaps",
    "default_window",
    "difference_curves",
    "distinct_labels",
    "entropy_curves",
    "generation_heatmap",
    "is_special",
    "layer_position_heatmap",
    "metric_range",
    "pin_curves",
    "target_curves",
    "visible_token",
    "visible_tokens",
]
