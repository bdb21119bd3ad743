"""Figures of SPADE over the whole prompt, from numpy (no model): the grid beside the logit lens and
the derived view of where the two disagree."""

from __future__ import annotations

import json

import numpy as np

from spade_viz import viz
from spade_viz.viz.agreement import AGREEMENT, agreement_grid, agreement_heatmap, first_stable_layers
from test_viz import L, Stats, make_prompt


def _with_spade(top1: np.ndarray, lens_top1: np.ndarray):
    res = make_prompt()
    shape = top1.shape
    zeros = np.zeros(shape, dtype=np.float32)

    def stats(t):
        return Stats(np.repeat(t[..., None], 3, -1), np.ones((*shape, 3), np.float32), zeros, zeros, zeros,
                     np.ones(shape, np.int64))

    res.grids = {"logit_lens": stats(lens_top1), "spade": stats(top1)}
    return res


def test_agreement_categories_and_first_layers():
    positions = len(make_prompt().tokens)
    final = np.arange(positions) % 5 + 1
    lens = np.tile(final, (L + 1, 1))
    spade = lens.copy()
    lens[:4, 1] = 9  # position 1: the logit lens settles at layer 4 ...
    spade[:2, 1] = 9  # ... SPADE at layer 2, both wrong with the same token below that
    spade[2:4, 2], lens[2:4, 2] = 7, 8  # position 2: both wrong, different tokens, at layers 2-3
    lens[:, 3] = 11  # position 3 (its final top-1 is... the logit lens's own last row): SPADE alone differs
    res = _with_spade(spade, lens)
    derived = agreement_grid(res)
    cat = derived["category"]
    assert cat[0, 1] == 3 and cat[2, 1] == 1 and cat[4, 1] == 0  # same wrong token, SPADE alone, both
    assert cat[2, 2] == 4
    assert (cat[:, 3] == 2).all()  # final = lens[-1] = 11 there: only the logit lens finds it
    assert derived["first"]["spade"][1] == 2 and derived["first"]["logit_lens"][1] == 4
    assert derived["earlier"][1] == 2 and derived["earlier"][0] == 0
    assert np.isnan(derived["earlier"][3])  # SPADE never settles there
    assert first_stable_layers(res, "spade")[3] == -1
    assert 0 < derived["disagree"] < 1


def test_agreement_heatmap_and_the_spade_grid_figure():
    res = make_prompt()
    res.grids["spade"] = res.grids["tuned_lens"]
    fig = agreement_heatmap(res, window=(2, 8))
    data = json.loads(fig.to_json())["data"]
    assert data[0]["type"] == "heatmap" and len(data[0]["x"]) == 6 and len(data[0]["y"]) == L + 1
    names = {t.get("name") for t in data}
    assert {"SPADE settles", "logit lens settles"} <= names
    assert all(text.format(a="SPADE", b="logit lens") in names for text, _ in AGREEMENT)
    assert "disagree" in fig.layout.title.text
    spade = viz.layer_position_heatmap(res, "entropy", decoder="spade", zrange=(0, 6))
    lens = viz.layer_position_heatmap(res, "entropy", zrange=(0, 6))
    assert spade.layout.title.text.startswith("SPADE: top-1")
    compact = viz.layer_position_heatmap(res, "entropy", decoder="spade", window=(0, 4), compact=True)
    assert compact.layout.title.text == f"SPADE (positions 0–3 of {len(res.tokens)})"
    assert spade.data[0].zmax == lens.data[0].zmax == 6  # one colour scale for both
    hover0 = spade.data[0].customdata[0][0][0]
    assert "&lt;s&gt; has nothing to drop" in hover0
    assert "nothing to drop" not in lens.data[0].customdata[0][0][0]
