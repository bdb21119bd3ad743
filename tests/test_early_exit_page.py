"""AppTest of the Early-exit page on a tiny model: upload a small dataset (one bad row), run the
sweep, move the threshold slider: the numbers change and the model is not run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import spade_viz.app.sweeps as app_sweeps
import spade_viz.sweep as sweep_module
from apptest import open_page
from spade_viz.app import models
from spade_viz.exit import Checkpoints

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240

ROWS = [
    {"id": f"r{i}", "prompt": p, "answer": a}
    for i, (p, a) in enumerate([
        ("France: Paris\nJapan:", " Tokyo"), ("Italy: Rome\nEgypt:", " Cairo"),
        ("English: cat\nFrench:", " chat"), ("English: dog\nFrench:", " chien"),
        ("Question: Is the sky blue?\nAnswer:", " Yes"), ("The quick brown fox", " jumps"),
        ("1 2 3 4", " 5"), ("5 6 7 8", " 9"), ("France: Paris\nItaly:", " Rome"),
        ("Japan: Tokyo\nGermany:", " Berlin"), ("hot cold big", " small"), ("A. B. C.", " D"),
    ])
]


def _file_bytes() -> bytes:
    lines = [json.dumps(row) for row in ROWS]
    lines.insert(3, '{"prompt": "no answer here"}')  # line 4: a bad row
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def counting_sweep(monkeypatch):
    calls = []
    real = sweep_module.run_sweep

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "run_sweep", counted)
    monkeypatch.setattr(app_sweeps, "run_sweep", counted)  # the page runs sweeps through the app package
    return calls


def _page(folder: Path) -> AppTest:
    at = open_page("pages/early_exit.py", TIMEOUT)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(folder)
    return at


def _slider_args(at: AppTest) -> dict:
    """The arguments the page gave the in-browser threshold slider (AppTest cannot run its frontend)."""
    (component,) = [el for el in at.get("component_instance")]
    return json.loads(component.proto.json_args)


def _examples_heading(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Examples at τ"))


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_upload_sweep_and_slide(tiny_folders, counting_sweep, isolated_cache):
    at = _page(tiny_folders["llama"])
    at.run()
    assert not at.exception, at.exception
    at.radio(key="ee_source").set_value("Upload a file").run()
    assert not at.exception, at.exception
    at.file_uploader(key="ee_upload").upload("tiny.jsonl", _file_bytes(), "application/jsonl").run()
    assert not at.exception, at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "1 row of tiny.jsonl cannot be used" in warning
    assert any("line 4" in c.value for c in at.code)  # the bad row, numbered as in the file
    assert not at.get("plotly_chart") and "ee_run" not in [b.key for b in at.button]  # not used until accepted
    at.checkbox(key="ee_accept_partial").check().run()
    assert not at.exception, at.exception
    at.button(key="ee_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(counting_sweep) == 1
    others = [w.value for w in at.warning if "cannot be used" not in w.value]
    assert not others, others  # only the bad-row notice (kept in view), no widget-state warnings
    assert len(at.get("plotly_chart")) >= 2  # per-layer accuracy and agreement (the rest draws in the browser)

    args = _slider_args(at)
    assert any("Only 12 examples" in note and "6 of them" in note for note in args["notes"])  # beside the numbers
    grid = args["grid"]  # what the browser slider shows at each position
    assert grid["tau"][0] == 0.0 and len(grid["tau"]) == len(grid["accuracy"]) == len(grid["histogram"]) > 100
    assert grid["mean_exit_layer"][0] == 3.0  # threshold 0: nobody exits, the full model answers
    assert len({sum(counts) for counts in grid["histogram"]}) == 1  # every example exits somewhere, once
    # releasing the slider sends the threshold back: the examples table follows it
    at.session_state["ee_live"] = {"tau": grid["tau"][-1], "id": "release-1"}
    at.run()
    assert not at.exception, at.exception
    at_high = _examples_heading(at)
    at.session_state["ee_live"] = {"tau": 0.0, "id": "release-2"}
    at.run()
    at_low = _examples_heading(at)
    assert at_low != at_high  # the views follow the threshold
    assert "mean exit layer 3.0 / 3" in at_low
    assert len(counting_sweep) == 1  # ...and the model was never run again
    # checkpoint settings change the views, still without the model
    at.number_input(key="ee_every").set_value(2).run()
    assert not at.exception, at.exception
    assert len(counting_sweep) == 1


@pytest.mark.slow
def test_builtin_task_and_open_in_explore(tiny_folders, counting_sweep, isolated_cache):
    at = _page(tiny_folders["llama"])
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="ee_task").set_value("capitals").run()
    at.number_input(key="ee_limit").set_value(8).run()
    at.button(key="ee_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(counting_sweep) == 1
    # fit and save linear SPADE, then time the real early exit at the slider's threshold
    at.button(key="ee_fit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.number_input(key="ee_real_n").set_value(4).run()
    at.number_input(key="ee_real_repeats").set_value(1).run()
    at.button(key="ee_real_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    labels = [m.label for m in at.metric]
    assert "Measured speedup" in labels and "Simulated speedup" in labels
    assert _metric(at, "Measured speedup").endswith("×")
    # the honest run: layout and threshold chosen on half of the whole task, measured on the other half
    at.button(key="ee_real_honest").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Held-out accuracy" in [m.label for m in at.metric]
    assert any("chosen on 76 calibration examples" in c.value for c in at.caption), [c.value for c in at.caption]
    # its layout and threshold applied to the slider: the controls, the slider and the table take them
    session = at.session_state["_ee_session"]
    honest = session.real_exit(next(key for key in session._real_exits if key[-1] == "honest"))
    at.button(key="ee_honest_apply").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    state, chosen = at.session_state["_ee_page"], Checkpoints.parse(honest.checkpoints)
    assert (state.every, state.start, state.confidence) == (chosen.every, chosen.start, "linear_spade")
    assert at.number_input(key="ee_every").value == chosen.every
    assert _slider_args(at)["value"] == state.tau and abs(state.tau - honest.threshold) <= 0.05
    assert _examples_heading(at).startswith(f"**Examples at τ = {state.tau:.3f}**")
    # pick an example in the table (as a click would) and open it in the Explore page
    at.session_state["ee_table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    at.button(key="ee_open").click().run()
    assert not at.exception, at.exception
    explore = at.session_state["_sv_explore"]
    assert explore.prompt.endswith(":") and explore.request == explore.prompt
    assert at.text_area(key="prompt").value == explore.prompt
    assert at.title[0].value.startswith("Explore")  # we are on the Explore page now, analysing it
