"""Exit simulation on hand-made arrays: exit layers, compute fractions, baselines, operating points,
the sweep-table conversion, and the `exit-curve` CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spade_viz.cli import main as cli_main
from spade_viz.exit import (
    Checkpoints,
    CostModel,
    ExitArrays,
    ExitSimulator,
    SweepFormatError,
    operating_points,
    search_checkpoints,
)
from spade_viz.exit.synthetic import synthetic_arrays, synthetic_cost

L = 4
F, T = False, True
# three examples; linear-SPADE entropies per layer 0..4
LSPADE_H = np.array([[5, 0.5, 0.2, 0.1, 0], [5, 3, 2, 0.5, 0], [5, 5, 5, 5, 0]], dtype=float)
SPADE_RIGHT = np.array([[F, T, T, T, T], [F, F, F, T, T], [F, F, F, F, F]])
SPADE_AGREE = np.array([[F, T, T, T, T], [F, F, F, T, T], [F, F, T, T, T]])
LENS_H = np.array([[6, 6, 0.5, 0.3, 0], [6, 6, 6, 6, 0], [6, 0.1, 6, 6, 0]], dtype=float)
LENS_RIGHT = np.array([[F, F, T, T, T], [F, F, F, F, T], [F, F, F, F, F]])
LENS_AGREE = np.array([[F, F, T, T, T], [F, F, F, F, T], [F, F, F, F, T]])


def hand_arrays(n_tokens=(10, 10, 20)) -> ExitArrays:
    def top(right, agree):
        return np.where(right, "gold", np.where(agree, "final", "x")).astype(object)

    return ExitArrays(
        example_ids=np.array(["a", "b", "c"], dtype=object),
        n_tokens=np.array(n_tokens),
        num_layers=L,
        top1={"spade": top(SPADE_RIGHT, SPADE_AGREE), "linear_spade": top(SPADE_RIGHT, SPADE_AGREE),
              "logit_lens": top(LENS_RIGHT, LENS_AGREE)},
        correct={"spade": SPADE_RIGHT, "linear_spade": SPADE_RIGHT, "logit_lens": LENS_RIGHT},
        agree_final={"spade": SPADE_AGREE, "linear_spade": SPADE_AGREE, "logit_lens": LENS_AGREE},
        entropy={"spade": LSPADE_H, "linear_spade": LSPADE_H, "logit_lens": LENS_H},
    )


def unit_cost(**kw) -> CostModel:
    """One block = 1 unit; free unembedding and map unless asked: easy arithmetic."""
    return CostModel(block_params=1.0, head_params=kw.pop("head", 0.0), map_params=kw.pop("map", 0.0), **kw)


def long_frame(arrays: ExitArrays) -> pd.DataFrame:
    rows = []
    for d in arrays.decoders:
        for i, ex in enumerate(arrays.example_ids):
            for layer in range(arrays.num_layers + 1):
                rows.append({"example_id": ex, "layer": layer, "decoder": d, "top1": arrays.top1[d][i, layer],
                             "correct": bool(arrays.correct[d][i, layer]),
                             "agree_final": bool(arrays.agree_final[d][i, layer]),
                             "entropy": float(arrays.entropy[d][i, layer]), "n_tokens": int(arrays.n_tokens[i])})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ simulation


def test_exit_layers_answers_and_compute():
    sim = ExitSimulator(hand_arrays(), unit_cost())
    out = sim.at(1.0)
    assert out.exit_layer.tolist() == [1, 3, 4]
    assert out.correct.tolist() == [True, True, False]
    assert out.agree.tolist() == [True, True, True]
    assert out.answer.tolist() == ["gold", "gold", "final"]
    # a: 1*10 + 3*1 of 40; b: 3*10 + 1 of 40; c never confident: the full pass 4*20 of 80
    np.testing.assert_allclose(out.fraction, [13 / 40, 31 / 40, 1.0])
    p = out.point
    assert p.accuracy == pytest.approx(2 / 3) and p.agreement == 1.0
    assert p.compute_fraction == pytest.approx((13 / 40 + 31 / 40 + 1) / 3)
    assert p.speedup == pytest.approx(1 / p.compute_fraction)
    assert p.mean_exit_layer == pytest.approx(8 / 3) and p.exit_rate == pytest.approx(2 / 3)


def test_threshold_is_strict_and_extremes():
    sim = ExitSimulator(hand_arrays(), unit_cost())
    assert sim.at(0.5).exit_layer.tolist() == [2, 4, 4]  # 0.5 is not below 0.5
    assert sim.at(0.0).exit_layer.tolist() == [4, 4, 4]  # never: the full model
    assert sim.at(100.0).exit_layer.tolist() == [1, 1, 1]  # always at the first checkpoint


def test_checkpoint_layouts():
    arrays = hand_arrays()
    assert ExitSimulator(arrays, unit_cost(), Checkpoints(start=2)).at(1.0).exit_layer.tolist() == [2, 3, 4]
    assert ExitSimulator(arrays, unit_cost(), Checkpoints(every=2, start=0)).at(1.0).exit_layer.tolist() == [2, 4, 4]
    assert ExitSimulator(arrays, unit_cost(), Checkpoints(layers=(3,))).at(1.0).exit_layer.tolist() == [3, 3, 4]
    assert Checkpoints.parse("every:2,from:3") == Checkpoints(every=2, start=3)
    assert Checkpoints.parse("from:5") == Checkpoints(start=5)
    assert Checkpoints.parse("layers:8,3") == Checkpoints(layers=(3, 8))
    assert Checkpoints(every=2, start=1).mask(4).tolist() == [F, T, F, T, F]  # never at L
    with pytest.raises(Exception, match="not understood"):
        Checkpoints.parse("sometimes")
    with pytest.raises(Exception, match="no checkpoint"):
        ExitSimulator(arrays, unit_cost(), Checkpoints(start=4))


def test_checkpoint_overhead_and_continuation_tokens():
    arrays = hand_arrays()
    # each checkpoint costs one map (1 unit) + one head (2 units); the answer pays one head (2 units)
    out = ExitSimulator(arrays, unit_cost(map=1.0, head=2.0)).at(1.0)
    full = np.array([40 + 2, 40 + 2, 80 + 2])
    np.testing.assert_allclose(out.fraction * full, [10 + 3 + 2 + 1 * 3, 30 + 1 + 2 + 3 * 3, 80 + 2 + 3 * 3])
    # the paper's charge: two tokens in the continuation
    out = ExitSimulator(arrays, unit_cost(continuation_tokens=2)).at(1.0)
    np.testing.assert_allclose(out.fraction, [16 / 40, 32 / 40, 1.0])


def test_baselines_full_fixed_classic_oracle():
    sim = ExitSimulator(hand_arrays(), unit_cost())
    full = sim.full_model()
    assert full.accuracy == pytest.approx(2 / 3) and full.compute_fraction == 1.0 and full.speedup == 1.0
    fixed = sim.fixed_layer()
    assert fixed["accuracy"].tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert fixed["compute_fraction"].iloc[2] == pytest.approx(np.mean([22 / 40, 22 / 40, 42 / 80]))
    # classic: logit-lens entropy, logit-lens answer, no continuation
    out = sim.classic.at(1.0)
    assert out.exit_layer.tolist() == [2, 4, 1]
    assert out.correct.tolist() == [True, True, False] and out.agree.tolist() == [True, True, False]
    np.testing.assert_allclose(out.fraction, [20 / 40, 1.0, 20 / 80])
    # oracle: earliest layer from which SPADE stays right (c: keeps the full model's wrong answer)
    assert sim.oracle_layers().tolist() == [1, 3, 2]
    oracle = sim.oracle().point
    assert oracle.accuracy == pytest.approx(full.accuracy) and oracle.agreement == 1.0
    assert oracle.compute_fraction == pytest.approx(np.mean([13 / 40, 31 / 40, 42 / 80]))
    assert sim.first_layer_reaching("spade") == 3
    acc = sim.layer_accuracy()
    assert set(acc["decoder"]) == {"spade", "linear_spade", "logit_lens"} and len(acc) == 15


def test_curve_matches_pointwise_and_is_vectorised():
    sim = ExitSimulator(synthetic_arrays(300, 12, seed=3), synthetic_cost(), Checkpoints(every=2))
    curve = sim.curve(count=50)
    assert curve["threshold"].is_monotonic_increasing and curve["threshold"].iloc[0] == 0.0
    for _, row in curve.iloc[::7].iterrows():
        point = sim.at(row["threshold"]).point
        assert point.accuracy == pytest.approx(row["accuracy"])
        assert point.compute_fraction == pytest.approx(row["compute_fraction"])
        assert point.mean_exit_layer == pytest.approx(row["mean_exit_layer"])
    # threshold 0 = never exit: the full model's accuracy, slower than it by the checkpoint overheads
    assert curve["accuracy"].iloc[0] == pytest.approx(sim.full_model().accuracy)
    assert curve["compute_fraction"].iloc[0] > 1.0
    assert curve["exit_rate"].iloc[-1] == 1.0
    classic = sim.classic_curve(count=30)
    assert list(classic.columns) == list(curve.columns)


def test_operating_points():
    curve = pd.DataFrame({"threshold": [0.1, 0.2, 0.3, 0.4], "accuracy": [0.70, 0.72, 0.705, 0.60],
                          "agreement": [1, 0.9, 0.9, 0.8], "compute_fraction": [1.0, 0.9, 0.7, 0.5],
                          "mean_exit_layer": [30, 27, 20, 15], "exit_rate": [0, .5, .8, 1]})
    curve["speedup"] = 1 / curve["compute_fraction"]
    points = operating_points(curve, full_accuracy=0.71)
    assert points["best_accuracy"]["threshold"] == 0.2
    assert points["within_1pt"]["threshold"] == 0.3  # 0.705 >= 0.71 - 0.01; 0.60 is not
    assert points["within_1pt"]["speedup"] == pytest.approx(1 / 0.7)
    # ties on accuracy: the faster point wins
    curve.loc[2, "accuracy"] = 0.72
    assert operating_points(curve, 0.71)["best_accuracy"]["threshold"] == 0.3


def test_missing_confidence_decoder_says_what_to_do():
    arrays = hand_arrays()
    del arrays.entropy["linear_spade"]
    with pytest.raises(SweepFormatError, match="calibrate"):
        ExitSimulator(arrays, unit_cost())
    assert ExitSimulator(arrays, unit_cost(), confidence="spade").at(1.0).exit_layer.tolist() == [1, 3, 4]


# ------------------------------------------------------------------------------------------ sweep table


def test_frame_round_trip():
    arrays = hand_arrays()
    frame = long_frame(arrays).sample(frac=1.0, random_state=0)  # any row order
    back = ExitArrays.from_frame(frame)
    order = [list(back.example_ids).index(e) for e in arrays.example_ids]
    assert back.num_layers == L and back.n_tokens[order].tolist() == [10, 10, 20]
    for d in arrays.decoders:
        np.testing.assert_array_equal(back.entropy[d][order], arrays.entropy[d])
        np.testing.assert_array_equal(back.correct[d][order], arrays.correct[d])
        np.testing.assert_array_equal(back.top1[d][order], arrays.top1[d])


def test_frame_errors():
    frame = long_frame(hand_arrays())
    with pytest.raises(SweepFormatError, match="lacks column"):
        ExitArrays.from_frame(frame.drop(columns=["entropy"]))
    with pytest.raises(SweepFormatError, match="no 'spade' row for layer"):
        ExitArrays.from_frame(frame.drop(index=frame.index[(frame.decoder == "spade") & (frame.layer == 2)][:1]))
    with pytest.raises(SweepFormatError, match="more than one"):
        ExitArrays.from_frame(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(SweepFormatError, match="n_tokens"):
        ExitArrays.from_frame(frame.drop(columns=["n_tokens"]))
    assert ExitArrays.from_frame(frame.drop(columns=["n_tokens"]), default_length=7).n_tokens.tolist() == [7, 7, 7]


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def sweep_csv(tmp_path):
    path = tmp_path / "results.csv"
    long_frame(hand_arrays()).to_csv(path, index=False)
    return path


COST_ARGS = ["--cost", "1,0,0"]


def test_cli_exit_curve_json(sweep_csv, capsys):
    assert cli_main(["exit-curve", "--sweep", str(sweep_csv), *COST_ARGS, "--checkpoints", "all", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    curve = data["curve"]
    assert set(curve[0]) >= {"threshold", "accuracy", "agreement", "compute_fraction", "speedup", "mean_exit_layer"}
    # thresholds sit halfway between the observed checkpoint entropies, plus never (0) and always (top)
    assert [row["threshold"] for row in curve] == pytest.approx([0, 0.15, 0.35, 1.25, 2.5, 4, 5.005])
    sim = ExitSimulator(hand_arrays(), unit_cost())
    for row in curve:
        point = sim.at(row["threshold"]).point
        for key in ("accuracy", "agreement", "compute_fraction", "speedup", "mean_exit_layer"):
            assert row[key] == pytest.approx(getattr(point, key)), (row, key)
    middle = curve[3]  # tau 1.25: the exits of test_exit_layers_answers_and_compute, layers 1, 3, 4
    assert middle["accuracy"] == pytest.approx(2 / 3) and middle["mean_exit_layer"] == pytest.approx(8 / 3)
    assert curve[0]["mean_exit_layer"] == 4 and curve[-1]["mean_exit_layer"] == 1
    expect = sim.operating_points()
    got = data["operating_points"]
    assert got["best_accuracy"]["speedup"] == pytest.approx(expect["best_accuracy"]["speedup"])
    assert got["within_1pt"]["compute_fraction"] == pytest.approx(expect["within_1pt"]["compute_fraction"])
    assert data["full_model"]["accuracy"] == pytest.approx(2 / 3)


def test_cli_exit_curve_options_and_table(sweep_csv, capsys):
    assert cli_main(["exit-curve", "--sweep", str(sweep_csv), *COST_ARGS, "--checkpoints", "every:2,from:1",
                     "--continuation-tokens", "2", "--threshold", "1.0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["at_threshold"]["mean_exit_layer"] == pytest.approx((1 + 3 + 4) / 3)
    assert data["at_threshold"]["compute_fraction"] == pytest.approx((16 / 40 + 32 / 40 + 1) / 3)
    assert cli_main(["exit-curve", "--sweep", str(sweep_csv), *COST_ARGS, "--checkpoints", "all"]) == 0
    out = capsys.readouterr().out
    assert "best accuracy" in out and "within 1 point" in out and "threshold" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sweep", "missing.csv"], "no such sweep file"),
        (["--checkpoints", "bogus"], "not understood"),
        (["--cost", "1,2"], "--cost"),
        (["--confidence", "tuned_lens"], "no 'tuned_lens' decoder"),
    ],
)
def test_cli_exit_curve_bad_input(sweep_csv, capsys, args, message):
    argv = ["exit-curve", "--sweep", str(sweep_csv), *COST_ARGS, *args]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_cli_exit_curve_bad_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("example_id,layer\na,0\n")
    assert cli_main(["exit-curve", "--sweep", str(bad), *COST_ARGS]) == 2
    assert "lacks column" in capsys.readouterr().err


def test_thresholds_sit_between_observed_entropies():
    arrays = synthetic_arrays(200, 10, seed=1)
    sim = ExitSimulator(arrays, synthetic_cost())
    taus = sim.thresholds(50)
    observed = set(np.unique(arrays.entropy["linear_spade"][:, 1:10]).tolist())
    assert taus[0] == 0.0 and len(taus) <= 52
    assert not observed & set(taus[1:].tolist())
    assert sim.at(taus[-1]).exit_layer.max() == 1  # above everything: all exit at the first checkpoint


def test_checkpoint_search_prefers_late_checkpoints_when_early_layers_are_confidently_wrong():
    arrays = hand_arrays()
    # make example b confidently wrong at layer 1: early checkpoints now cost accuracy
    arrays.entropy["linear_spade"] = arrays.entropy["linear_spade"].copy()
    arrays.entropy["linear_spade"][1, 1] = 0.05
    table = search_checkpoints(arrays, unit_cost(map=0.5), steps=(1, 2))
    best = table.iloc[0]
    assert best["start"] >= 2 and best["accuracy_within_1pt"] >= 2 / 3 - 0.01
    assert set(table.columns) >= {"checkpoints", "speedup_within_1pt", "threshold_within_1pt"}
    assert table["speedup_within_1pt"].is_monotonic_decreasing


def test_cli_exit_curve_defaults_to_choices_made_on_a_calibration_half(tmp_path, capsys):
    """The first command a user runs shows the method at its honest best: layout and threshold chosen on
    every other example, everything reported scored on the others."""
    arrays = synthetic_arrays(120, 10, seed=2)
    path = tmp_path / "sweep.csv"
    arrays.to_frame().to_csv(path, index=False)
    assert cli_main(["exit-curve", "--sweep", str(path), *COST_ARGS, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    chosen_on, heldout = arrays.calibration_split()
    calibration = data["calibration"]
    assert calibration["n_calibration"] == calibration["n_heldout"] == 60 == data["settings"]["examples"]
    best = search_checkpoints(chosen_on, unit_cost()).iloc[0]
    assert calibration["checkpoints"] == best["checkpoints"]
    assert data["settings"]["checkpoints"] == Checkpoints.parse(best["checkpoints"]).describe()
    assert data["at_threshold"]["threshold"] == pytest.approx(best["threshold_within_1pt"])
    held = ExitSimulator(heldout, unit_cost(), Checkpoints.parse(best["checkpoints"]))
    assert data["at_threshold"]["accuracy"] == pytest.approx(held.at(best["threshold_within_1pt"]).point.accuracy)
    assert cli_main(["exit-curve", "--sweep", str(path), *COST_ARGS]) == 0
    assert "chosen on 60 calibration examples" in capsys.readouterr().out


def test_cli_checkpoint_search(sweep_csv, capsys):
    assert cli_main(["exit-curve", "--sweep", str(sweep_csv), *COST_ARGS, "--checkpoints", "search", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["checkpoint_search"][0]["checkpoints"].startswith("every:")
    assert data["settings"]["checkpoints"].startswith("every")


def test_to_frame_round_trip():
    arrays = synthetic_arrays(20, 5)
    back = ExitArrays.from_frame(arrays.to_frame())
    for d in arrays.decoders:
        np.testing.assert_array_equal(back.entropy[d], arrays.entropy[d])
        np.testing.assert_array_equal(back.agree_final[d], arrays.agree_final[d])
    np.testing.assert_array_equal(back.n_tokens, arrays.n_tokens)


def test_choice_rows_pay_only_their_choices_per_checkpoint():
    arrays = hand_arrays()
    cost = CostModel(block_params=1.0, head_params=100.0, map_params=0.0, vocab_size=100.0, include_head=False)
    plain = ExitSimulator(arrays, cost).at(1.0).fraction
    arrays.n_choices = np.array([2, 0, 4])
    restricted = ExitSimulator(arrays, cost).at(1.0).fraction
    # a: exit at 1 after one checkpoint: 10 + 3 + 100 (full vocab) vs 10 + 3 + 2 (two choices)
    assert plain[0] == pytest.approx(113 / 40) and restricted[0] == pytest.approx(15 / 40)
    assert restricted[1] == plain[1]  # no choices: the whole vocabulary
    assert restricted[2] == pytest.approx((80 + 3 * 4) / 80)  # never confident: 3 checkpoints x 4 rows
    back = ExitArrays.from_frame(arrays.to_frame())
    assert back.n_choices.tolist() == [2, 0, 4]


def test_figures_from_a_study():
    from spade_viz.exit.study import ExitStudy
    from spade_viz.viz import exit_figures as xf

    view = ExitStudy(synthetic_arrays(100, 8), synthetic_cost()).view(Checkpoints(every=2))
    outcome = view.at(1.0)
    fig = xf.tradeoff_figure(view.curve, outcome.point.to_dict(), view.classic, view.fixed, view.full, view.oracle,
                             view.points)
    names = [t.name for t in fig.data]
    assert {"hybrid exit (SPADE)", "classic exit (logit lens)", "SPADE at a fixed layer", "full model", "oracle",
            xf.CURRENT_TRACE} <= set(names)
    other = view.at(3.0).point.to_dict()
    xf.set_current(fig, other)
    marker = next(t for t in fig.data if t.name == xf.CURRENT_TRACE)
    assert marker.x == (other["compute_fraction"],) and names.count(xf.CURRENT_TRACE) == 1
    hist = xf.exit_histogram(outcome.exit_layer, 8)
    assert sum(hist.data[0].y) == 100 and len(hist.data[0].x) == 9
    layers = xf.layer_accuracy_figure(view.layer_accuracy, view.full["accuracy"])
    assert len(layers.data) == 3
    table = view.examples_table(outcome)
    assert len(table) == 100 and {"exit layer", "answer", "gold", "right"} <= set(table.columns)
    assert list(view.points_table()["policy"])[:2] == ["full model", "oracle"]


def test_chance_level_accuracy_is_flagged():
    """Four choices and a model at 25%: the operating points mean nothing, and the report says so."""
    from dataclasses import replace

    from spade_viz.exit.report import exit_curve_report

    guessing = replace(synthetic_arrays(400, 12, accuracy=0.25), n_choices=np.full(400, 4))
    assert "guessing" in guessing.chance_level_warning(0.25)
    assert guessing.chance_level_warning(0.60) is None
    assert synthetic_arrays(400, 12).chance_level_warning(0.01) is None  # no choices: no chance level
    report = exit_curve_report(guessing, synthetic_cost())
    assert report["warning"] and "guessing" in report["warning"]
    assert exit_curve_report(replace(guessing, n_choices=None), synthetic_cost())["warning"] is None


def test_library_messages_name_the_parameter_and_the_cli_its_flag():
    """The pages call the same functions as the CLI: the library names `cost`, the CLI --cost."""
    from spade_viz.cli.options import as_flags
    from spade_viz.errors import InputError
    from spade_viz.exit.report import parse_cost, resolve_cost

    with pytest.raises(InputError, match="^`cost` wants three numbers"):
        parse_cost("1,2")
    with pytest.raises(InputError) as raised:
        resolve_cost({})
    assert "`model=NAME`" in str(raised.value) and "--" not in str(raised.value)
    assert as_flags(str(raised.value)).endswith("pass --model NAME (its config is read) or --cost BLOCK,HEAD,MAP")
    assert as_flags("use `device='cpu'` or `linear_spade=\"crossfit\"` (`max_tokens`)") == \
        "use --device cpu or --linear-spade crossfit (--max-tokens)"
    assert as_flags("`fit_linear_spade`, or `an_unknown_name=1`") == "`fit_linear_spade`, or `an_unknown_name=1`"
