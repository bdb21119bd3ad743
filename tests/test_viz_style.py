"""The projector switch: every figure builder takes a font scale (from numpy, no model)."""

from __future__ import annotations

import numpy as np

from spade_viz import viz
from spade_viz.viz import compare, exit_figures
from spade_viz.viz.style import PROJECTOR_SCALE, scale_fonts
from test_viz import make_prompt


def _sizes(fig) -> list[float]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("font") and isinstance(value, dict) and "size" in value:
                    found.append(value["size"])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(fig.to_dict())
    return found


def test_every_builder_scales_its_fonts_and_grows():
    res = make_prompt()
    res.grids["spade"] = res.grids["tuned_lens"]
    builders = {
        "positions": lambda **kw: viz.layer_position_heatmap(res, **kw),
        "answer": lambda **kw: viz.answer_heatmap(res, **kw),
        "agreement": lambda **kw: viz.agreement_heatmap(res, **kw),
        "entropy": lambda **kw: viz.entropy_curves(res, **kw),
        "target": lambda **kw: viz.target_curves(res, **kw),
        "histogram": lambda **kw: exit_figures.exit_histogram(np.array([1, 2, 2, 3]), 4, **kw),
        "kl": lambda **kw: compare.heldout_kl_figure({"logit_lens": [1.0, 0.5], "tuned_lens": [0.5, 0.2]}, **kw),
    }
    for name, build in builders.items():
        plain, big = build(), build(font_scale=PROJECTOR_SCALE)
        assert round((plain.layout.font.size or 12) * PROJECTOR_SCALE, 1) == big.layout.font.size, name
        assert max(_sizes(big)) > max(_sizes(plain) or [12]), name
        if plain.layout.height:
            assert big.layout.height > plain.layout.height, name
        assert len(big.data) == len(plain.data), name
    assert build(font_scale=1.0).to_dict() == build().to_dict()


def test_a_figure_whose_size_is_fixed_keeps_it():
    fig = scale_fonts(viz.entropy_curves(make_prompt()), 1.5, height=False)
    assert fig.layout.height == viz.entropy_curves(make_prompt()).layout.height
    assert fig.layout.font.size == 1.5 * viz.entropy_curves(make_prompt()).layout.font.size
