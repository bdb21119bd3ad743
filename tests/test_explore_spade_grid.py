"""Explore page (AppTest, tiny model): SPADE over the whole prompt, on request, beside the logit lens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

import spade_viz as sv
from apptest import open_page
from spade_viz.app import analyses, datasets, models

ROOT = Path(__file__).resolve().parent.parent
EXPLORE = str(ROOT / "pages" / "explore.py")


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_the_button_draws_spade_beside_the_logit_lens(tiny_folders, tiny_lms):
    at = open_page("pages/explore.py", 180)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(tiny_folders["qwen2"])
    at.run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 4
    runs = analyses.ANALYSIS_RUNS
    at.button(key="spade_grid_run").click().run()
    assert not at.exception and not at.error
    assert analyses.ANALYSIS_RUNS == runs  # the grid reads the kept analysis: no new forward pass
    specs = _specs(at)
    assert len(specs) == 6  # logit lens | SPADE, the disagreement map, then the three answer views as before
    lens, spade, agreement = specs[:3]
    assert lens["layout"]["title"]["text"].startswith("Logit lens")
    assert spade["layout"]["title"]["text"].startswith("SPADE")
    assert spade["data"][0]["zmax"] == lens["data"][0]["zmax"]  # one colour scale
    assert spade["data"][0]["x"] == lens["data"][0]["x"]  # the same window of positions
    assert "disagree" in agreement["layout"]["title"]["text"]
    assert not at.get("button") or "spade_grid_run" not in [b.key for b in at.button]
    # the heatmap's last column is the answer-position SPADE the page already showed
    res = sv.analyze(tiny_lms["qwen2"], datasets.presets()[0].text)
    top1 = np.asarray(spade["data"][0]["text"])[:, -1]
    answer = np.asarray(specs[3]["data"][0]["text"])[:, 1]  # the answer heatmap's SPADE column
    assert list(top1) == list(answer) and len(top1) == res.num_layers + 1
    # another metric or window redraws from the kept grid; the CSV has SPADE at every position
    at.selectbox(key="metric").select("top1_prob").run()
    assert not at.exception and len(at.get("plotly_chart")) == 6 and analyses.ANALYSIS_RUNS == runs
