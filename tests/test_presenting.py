"""Presenting (AppTest, tiny model): the landing page's tour, the projector switch, and exports that
name the model, the prompt and the settings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from apptest import open_page
from spade_viz.app import datasets, models
from spade_viz.viz import exports
from spade_viz.viz.style import PROJECTOR_SCALE

ROOT = Path(__file__).resolve().parent.parent


def _at(path: str, folder: Path) -> AppTest:
    at = open_page(path, 180)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(folder)
    return at


def _tour(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown if m.value.startswith("**A one-minute tour"))


def test_the_tour_has_three_steps_and_is_shown_once(tiny_folders):
    at = _at("app.py", tiny_folders["llama"]).run()
    assert not at.exception
    assert "1 of 3 · What the logit lens shows" in _tour(at)
    assert at.button(key="tour_back").disabled
    at.button(key="tour_next").click().run()
    assert "2 of 3 · What SPADE adds" in _tour(at)
    at.button(key="tour_next").click().run()
    assert "3 of 3 · What the threshold trades" in _tour(at)
    assert at.button(key="tour_next").label == "Finish"
    at.button(key="tour_next").click().run()
    assert not _tour(at) and "tour_again" in [b.key for b in at.button]
    at.run()  # the same browser session: not again
    assert not _tour(at)
    at.button(key="tour_again").click().run()
    assert "1 of 3" in _tour(at)
    at.button(key="tour_skip").click().run()
    assert not _tour(at)
    labels = [link.proto.label for link in at.main.get("page_link")]
    assert len(labels) == 3  # the page list is still there, under the tour


def test_the_projector_switch_enlarges_every_figure(tiny_folders):
    at = _at("pages/explore.py", tiny_folders["llama"]).run()
    plain = [json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart")]
    at.sidebar.toggle(key="sv_big_fonts").set_value(True).run()
    assert not at.exception
    big = [json.loads(c.proto.spec)["layout"] for c in at.get("plotly_chart")]
    assert len(big) == len(plain) == 4
    for before, after in zip(plain, big):
        assert after["font"]["size"] == pytest.approx(before["font"]["size"] * PROJECTOR_SCALE)
        assert after["height"] > before["height"]
    root = f"html {{ font-size: {16 * PROJECTOR_SCALE:g}px !important; }}"  # page text, captions, controls
    assert any(root in m.value for m in at.markdown)
    at.sidebar.toggle(key="sv_big_fonts").set_value(False).run()
    assert not any(root in m.value for m in at.markdown)


def test_exports_name_the_model_prompt_and_settings(tiny_folders, monkeypatch):
    made = {}
    original = MediaFileManager.add_deferred

    def capture(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", capture)
    at = _at("pages/explore.py", tiny_folders["llama"])
    at.run()
    at.selectbox(key="metric").select("top1_prob").run()
    assert not at.exception
    prompt = datasets.presets()[0].text
    stem = exports.file_stem("llama", prompt[-24:], "original", "top1_prob")
    assert f"{stem}.csv" in made and f"{stem}.json" in made and f"{stem}-heatmap_positions.html" in made
    frame = pd.read_csv(io.StringIO(made[f"{stem}.csv"]()))  # a plain CSV: read as it is
    assert list(frame.columns[:3]) == ["decoder", "layer", "position"] and len(frame)
    meta = json.loads(made[exports.meta_file_name(f"{stem}.csv")]())
    assert meta["prompt"] == prompt and meta["metric"] == "top1_prob" and meta["model"].endswith("llama")
    assert meta["data_file"] == f"{stem}.csv"
    data = json.loads(made[f"{stem}.json"]())
    assert data["spade_viz_export"]["spade_positions"] == "original" and data["tokens"]
    page = made[f"{stem}-heatmap_positions.html"]()
    assert "<title>Positions heatmap" in page and 'name="spade-viz:metric" content="top1_prob"' in page
