"""The Early-exit page's session logic (spade_viz.exit.session) without Streamlit or a model: which
sweeps are kept, the layout a sweep opens at, valid controls, the slider, the figure kept per view."""

from __future__ import annotations

import math

import pytest

from spade_viz.exit import Checkpoints, search_checkpoints
from spade_viz.exit.session import (
    ExitSession,
    ExitSettings,
    ThresholdGrid,
    confidences,
    point_threshold,
    search_layout,
    shown,
    slider_grid,
    view_notes,
)
from spade_viz.exit.study import ExitStudy
from spade_viz.exit.synthetic import synthetic_arrays, synthetic_cost

L = 8


@pytest.fixture(scope="module")
def arrays():
    return synthetic_arrays(120, L, seed=1)


def test_keeps_the_last_studies_and_forgets_the_oldest(arrays):
    session = ExitSession(max_studies=2)
    session.add("a", arrays, synthetic_cost(), skipped=[("x", "too long")])
    session.add("b", arrays, synthetic_cost())
    assert "a" in session and session.get("a").skipped == [("x", "too long")]
    session.record_real_exit("a", {"measured_speedup": 1.5})
    session.add("c", arrays, synthetic_cost())
    assert len(session) == 2 and "a" not in session and session.get("a") is None
    assert session.real_exit("a") is None  # its real-exit report went with it
    assert session.get("b").skipped == []


def test_a_study_opens_at_its_fastest_layout_within_one_point(arrays):
    """...chosen on the calibration half of the examples, and the note says so (an honest first view)."""
    session = ExitSession()
    session.add("k", arrays, synthetic_cost())
    choice = session.opening("k", ExitSettings(every=3, start=5, confidence="tuned_lens"))
    calibration, heldout = arrays.calibration_split()
    assert len(calibration) + len(heldout) == len(arrays) and not set(calibration.example_ids) & set(
        heldout.example_ids)
    best = search_checkpoints(calibration, synthetic_cost(), "linear_spade").iloc[0]
    assert (choice.settings.every, choice.settings.start) == (int(best["every"]), int(best["start"]))
    assert choice.settings.confidence == "linear_spade"  # the sweep has no tuned lens: the method instead
    assert choice.threshold == pytest.approx(float(best["threshold_within_1pt"]), abs=1e-6)
    assert "chosen when the sweep opened" in choice.note
    assert "calibration half (60 of 120 examples" in choice.note
    # a search later keeps the cost options and confidence it is given
    searched = session.search("k", ExitSettings(continuation_tokens=2.0, include_head=False, confidence="spade"))
    assert searched.settings.confidence == "spade" and searched.settings.continuation_tokens == 2.0
    assert not searched.settings.include_head and "opened" not in searched.note


def test_settings_are_fitted_to_the_sweep(arrays):
    fitted = ExitSettings(every=99, start=-3, confidence="tuned_lens").fitted(arrays)
    assert (fitted.every, fitted.start, fitted.confidence) == (L, 0, "linear_spade")
    assert ExitSettings(start=50).fitted(arrays).start == L - 1
    assert fitted.checkpoints == Checkpoints(every=L, start=0)
    assert confidences(arrays) == ["linear_spade", "spade", "logit_lens"]  # the method first
    no_linear = synthetic_arrays(20, L)
    for field in ("top1", "correct", "agree_final", "entropy"):
        getattr(no_linear, field).pop("linear_spade")
    assert ExitSettings().fitted(no_linear).confidence == "spade"


def test_views_are_cached_per_setting_and_the_figure_per_view(arrays):
    session = ExitSession()
    session.add("k", arrays, synthetic_cost())
    first = session.view("k", ExitSettings(every=2))
    assert session.view("k", ExitSettings(every=2)) is first
    assert session.view("k", ExitSettings(every=99)) is session.view("k", ExitSettings(every=L))  # fitted
    built = []

    def build():
        built.append(1)
        return object()

    figure = session.figure("tradeoff", first, build)
    assert session.figure("tradeoff", first, build) is figure and len(built) == 1  # a slider move: no rebuild
    other = session.view("k", ExitSettings(every=3))
    assert session.figure("tradeoff", other, build) is not figure and len(built) == 2


def test_one_threshold_grid_for_the_slider_the_table_and_the_link(arrays):
    view = ExitStudy(arrays, synthetic_cost()).view(Checkpoints(every=2))
    grid = ThresholdGrid(view)
    assert grid.maximum >= view.max_threshold and grid.maximum == math.ceil(view.max_threshold * 100) / 100
    assert 0 < grid.step <= grid.maximum / 100
    assert grid.taus[0] == 0.0 and grid.taus[-1] >= view.max_threshold and (grid.taus[1:] > grid.taus[:-1]).all()
    for which in ("best_accuracy", "within_1pt"):  # a jump lands exactly on its operating point
        assert point_threshold(view, which) in grid.taus
        assert grid.snap(point_threshold(view, which)) == point_threshold(view, which)
    assert grid.default == point_threshold(view, "within_1pt")
    assert point_threshold(view, "no_such_point") is None
    for tau in (-1.0, 0.01234, 3.3333, grid.maximum + 5, float("nan"), None):
        snapped = grid.snap(tau)
        assert snapped in grid.taus and grid.snap(snapped) == snapped  # snapping is idempotent
    assert grid.snap(None) == grid.default and grid.snap(-1.0) == 0.0 and grid.snap(1e9) == grid.taus[-1]
    # the slider's numbers at each grid position are the server's numbers at that threshold
    numbers = slider_grid(view, grid)
    assert numbers["tau"] == grid.taus.tolist()
    for i in (0, len(grid.taus) // 3, len(grid.taus) - 1):
        point = view.at(grid.taus[i]).point
        assert numbers["accuracy"][i] == round(point.accuracy, 6) and numbers["speedup"][i] == round(point.speedup, 6)
        assert {key: values[i] for key, values in numbers["text"].items()} == shown(grid.taus[i], point)
    # the slider shows the server's strings: a tie rounds as the table rounds it (56.25% -> 56.2%, not 56.3%)
    tie = type("Point", (), {"accuracy": 0.5625, "compute_fraction": 0.5, "speedup": 2.0, "agreement": 1.0,
                             "mean_exit_layer": 3.25})()
    assert shown(0.0625, tie)["accuracy"] == "56.2%" and shown(0.0625, tie)["tau"] == "0.062"


def test_small_sweeps_and_guessing_say_so_beside_the_numbers(arrays):
    small = ExitStudy(arrays.subset(slice(0, 20)), synthetic_cost()).view(Checkpoints(every=2))
    assert any("Only 20 examples" in note and "10 of them" in note for note in view_notes(small))
    assert not any("Only" in note for note in view_notes(ExitStudy(arrays, synthetic_cost()).view()))


def test_the_chosen_layout_and_threshold_keep_accuracy_within_one_point(arrays):
    study = ExitStudy(arrays, synthetic_cost())
    choice = search_layout(study, ExitSettings(confidence="logit_lens"))
    view = study.view(choice.settings.checkpoints, confidence="logit_lens")
    point = view.at(choice.threshold).point
    assert point.accuracy >= view.full["accuracy"] - 0.01 - 1e-12
    best = search_checkpoints(arrays, synthetic_cost(), "logit_lens").iloc[0]
    assert point.speedup == pytest.approx(best["speedup_within_1pt"]) and point.speedup > 1
