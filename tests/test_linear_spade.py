"""Linear SPADE: closed-form fit, cross-fitting that never scores an example with its own map,
fitting, save/load with metadata, refusal for another model, and how the sweep picks a map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import spade_viz as sv
from spade_viz.cli import main
from spade_viz.data import load_dataset
from spade_viz.lenses.affine import AffineLens, LensMismatch, default_lens_path
from spade_viz.lenses.linear_spade import (
    apply_maps,
    crossfit_states,
    fit_linear_spade,
    fit_maps,
    fold_ids,
    load_linear_spade,
    prompt_hash,
    split_examples,
)
from spade_viz.sweep import SweepSettings, run_sweep

pytestmark = pytest.mark.usefixtures("isolated_cache")  # sweeps and lenses go to a fresh cache

WORDS = "cat dog red blue one two three sun moon tree house river stone light bird fish".split()


def make_rows(prefix: str, count: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(count):
        a, b, c = WORDS[(i + offset) % 16], WORDS[(3 * i + 1 + offset) % 16], WORDS[(5 * i + 2 + offset) % 16]
        rows.append({"id": f"{prefix}{i}", "prompt": f"{prefix}{i} {a} {b} {c} {a} {b}", "answer": f" {c}"})
    return rows


def dataset(tmp_path: Path, name: str, rows: list[dict]):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return load_dataset(path)


def fit_ridge(inputs: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: plain primal ridge, one layer, targets ~ W inputs + b; returns (W [d_out, d_in], b [d_out]).

    Inputs are centred so the bias is not shrunk; the penalty is scaled by the input variance so
    one `ridge` value suits layers whose residual norms differ by orders of magnitude.
    """
    x = inputs.double()
    y = targets.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    scale = gram.diagonal().mean().clamp_min(1e-12)
    weight = torch.linalg.solve(gram + ridge * scale * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc).T
    bias = y_mean - weight @ x_mean
    return weight.float(), bias.float()


@pytest.mark.parametrize("rows", [12, 80])  # fewer rows than dimensions (dual form) and more (primal)
def test_fit_maps_is_the_ridge_optimum(rows):
    torch.manual_seed(0)
    scale = torch.tensor([1.0, 30.0])[None, :, None]
    inputs, targets = torch.randn(rows, 2, 40) * scale + 2, torch.randn(rows, 2, 24)
    weight, bias = fit_maps(inputs, targets, 0.05)
    for layer in range(2):
        w, b = fit_ridge(inputs[:, layer], targets[:, layer], 0.05)
        torch.testing.assert_close(weight[layer], w, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(bias[layer], b, atol=1e-5, rtol=1e-4)
    # the optimum: the gradient of the (scaled) ridge objective vanishes
    x = inputs[:, 0].double() - inputs[:, 0].double().mean(0)
    y = targets[:, 0].double() - targets[:, 0].double().mean(0)
    w = weight[0].double()
    penalty = 0.05 * x.pow(2).sum() / x.shape[1]
    gradient = (x @ w.T - y).T @ x + penalty * w
    assert gradient.abs().max() < 1e-3 * (y.T @ x).abs().max()


def test_crossfit_never_uses_an_examples_own_row():
    torch.manual_seed(1)
    inputs, targets = torch.randn(20, 2, 32), torch.randn(20, 2, 8)  # 15 rows < 32 dims: the dual form
    folds = fold_ids([f"id{i}" for i in range(20)], 4)
    assert sorted(np.bincount(folds)) == [5, 5, 5, 5]
    predicted = crossfit_states(inputs, targets, folds, 0.1)
    changed = targets.clone()
    changed[folds == 2] += 100.0  # the targets of fold 2 must not move fold 2's predictions
    again = crossfit_states(inputs, changed, folds, 0.1)
    torch.testing.assert_close(predicted[folds == 2], again[folds == 2])
    assert not torch.allclose(predicted[folds != 2], again[folds != 2])
    weight, bias = fit_maps(inputs[folds != 0], targets[folds != 0], 0.1)
    torch.testing.assert_close(predicted[folds == 0], apply_maps(weight, bias, inputs[folds == 0]))


def test_fit_round_trip_and_refusal(tiny_lms, tmp_path):
    lm, other = tiny_lms["llama"], tiny_lms["qwen2"]
    data = dataset(tmp_path, "words", make_rows("w", 24))
    fitted = fit_linear_spade(lm, data, heldout=0.25, out=tmp_path / "lin.safetensors")
    assert fitted.n_train == 18 and fitted.n_heldout == 6
    assert len(fitted.scores) == lm.num_layers
    # the held-out scores are those of the saved maps on the held-out examples, through `analyze`
    _, held = split_examples(list(data.examples), 0.25)
    answers = [sv.analyze(lm, e.prompt, lenses={"linear_spade": fitted.lens}).answer for e in held]
    for layer, row in enumerate(fitted.scores):
        assert row["layer"] == layer
        lin = [a["linear_spade"] for a in answers]
        spade = [a["spade"] for a in answers]
        assert row["agree_top1"] == pytest.approx(np.mean([x.top1[layer, 0] == y.top1[layer, 0]
                                                           for x, y in zip(lin, spade)]))
        assert row["entropy_mae"] == pytest.approx(np.mean([abs(x.entropy[layer, 0] - y.entropy[layer, 0])
                                                            for x, y in zip(lin, spade)]), abs=1e-4)
    loaded = AffineLens.load(tmp_path / "lin.safetensors", lm)
    torch.testing.assert_close(loaded.weight, fitted.lens.weight)
    torch.testing.assert_close(loaded.bias, fitted.lens.bias)
    meta = loaded.meta
    assert meta["model"] == lm.name and meta["weight_hash"] == lm.fingerprint()
    assert json.loads(meta["layers"]) == list(range(lm.num_layers))
    assert len(meta["training_set_hash"]) == 64 and meta["training_set"] == "words"
    assert meta["spade_positions"] == "original" and "separate training split" in meta["split"]
    assert len(json.loads(meta["training_prompts"])) == 18
    assert json.loads(meta["heldout"])[0]["layer"] == 0
    with pytest.raises(LensMismatch, match="fitted on model"):
        AffineLens.load(tmp_path / "lin.safetensors", other)
    with pytest.raises(LensMismatch, match="fitted on model"):
        load_linear_spade(other, tmp_path / "lin.safetensors")
    tuned = AffineLens.identity("tuned_lens", lm.num_layers, 32, {"fingerprint": lm.fingerprint()})
    tuned.save(tmp_path / "tuned.safetensors")
    with pytest.raises(LensMismatch, match="not linear SPADE"):
        load_linear_spade(lm, tmp_path / "tuned.safetensors")


def test_sweep_uses_a_disjoint_saved_map_and_cross_fits_otherwise(tiny_lm, tmp_path):
    lm = tiny_lm
    train = dataset(tmp_path, "words", make_rows("w", 20))
    fresh = dataset(tmp_path, "fresh", make_rows("f", 6, offset=7))
    assert not {prompt_hash(e.prompt) for e in train.examples} & {prompt_hash(e.prompt) for e in fresh.examples}
    fitted = fit_linear_spade(lm, train)  # saved at the model's default path
    assert fitted.path == default_lens_path(lm, "linear_spade")

    used = run_sweep(lm, fresh, SweepSettings(tuned_lens=False), use_cache=False)
    assert used.linear_spade_source.startswith("separate training set")
    assert "another task" in used.linear_spade_source  # fitted on 'words', sweeping 'fresh'
    for i, example in enumerate(fresh.examples[:3]):  # the same map as the single-prompt analysis applies
        analysis = sv.analyze(lm, example.prompt, lenses={"linear_spade": fitted.lens})
        np.testing.assert_array_equal(used.top1_vocab["linear_spade"][i], analysis.answer["linear_spade"].top1[:, 0])
        np.testing.assert_allclose(used.entropy_vocab["linear_spade"][i],
                                   analysis.answer["linear_spade"].entropy[:, 0], atol=1e-4)

    overlapping = run_sweep(lm, train, SweepSettings(tuned_lens=False), use_cache=False)
    assert overlapping.linear_spade_source.startswith("5-fold cross-fitting")
    assert "fitted on 15 of these prompts" in overlapping.linear_spade_source
    with pytest.raises(sv.InputError, match="cannot score this dataset"):
        run_sweep(lm, train, SweepSettings(linear_spade="saved"), use_cache=False)
    forced = run_sweep(lm, fresh, SweepSettings(linear_spade="crossfit", tuned_lens=False), use_cache=False)
    assert forced.linear_spade_source.startswith("5-fold cross-fitting")
    off = run_sweep(lm, fresh, SweepSettings(linear_spade="off"), use_cache=False)
    assert "linear_spade" not in off.decoders


def test_saved_tuned_lens_joins_the_sweep(tiny_lm, tmp_path):
    lm = tiny_lm
    lens = AffineLens.identity("tuned_lens", lm.num_layers, 32, {"fingerprint": lm.fingerprint(), "model": lm.name})
    lens.save(default_lens_path(lm, "tuned_lens"))
    data = dataset(tmp_path, "words", make_rows("w", 6))
    result = run_sweep(lm, data, SweepSettings(linear_spade="off"), use_cache=False)
    assert result.decoders == ["logit_lens", "spade", "tuned_lens"]
    # an identity translator is the logit lens
    np.testing.assert_array_equal(result.top1["tuned_lens"], result.top1["logit_lens"])
    np.testing.assert_allclose(result.entropy["tuned_lens"], result.entropy["logit_lens"], atol=1e-5)


@pytest.mark.slow
def test_cli_calibrate(tiny_folders, tiny_lm, tmp_path, capsys):
    rows = make_rows("w", 16)
    (tmp_path / "words.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "lin.safetensors"
    code = main(["calibrate", "--model", str(tiny_folders["llama"]), "--dataset", str(tmp_path / "words.jsonl"),
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.exists()
    assert "held-out scores (separate training split: 12 examples fitted, 4 held out" in printed
    assert "agree(lin,SPADE)" in printed
    assert main(["calibrate", "--model", str(tiny_folders["llama"]), "--dataset", str(tmp_path / "words.jsonl"),
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"non-JSON {name}"))
    assert report["n_train"] == 12 and len(report["heldout"]) == 3
    assert main(["calibrate", "--model", str(tiny_folders["llama"])]) == 2
    assert capsys.readouterr().err.startswith("error: give --dataset")
    assert main(["calibrate", "--model", str(tiny_folders["llama"]), "--text", "x.txt"]) == 2
    assert "answer rows of a task" in capsys.readouterr().err
    # a sweep refuses a map fitted on another model, in one line
    assert main(["sweep", "--model", str(tiny_folders["qwen2"]), "--dataset", str(tmp_path / "words.jsonl"),
                 "--calibration", str(out), "--out", str(tmp_path / "r.csv")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: this linear spade was fitted on model") and "fit one for this model" in last
