"""Tuned lens: training lowers held-out KL at every layer, save/load round trip, refusal of a lens
fitted on another model, its place in analyses and sweeps, and the comparison table."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import spade_viz as sv
from spade_viz import compare
from spade_viz.lenses import tuned
from spade_viz.lenses.affine import AffineLens, LensMismatch, default_lens_path, find_lens

TINY_BUDGET = dict(steps=60, lr=1e-2, batch=32)


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    """Training texts and lenses of this module go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPADE_VIZ_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def tiny_texts(tiny_lm):
    """Training and independent held-out text, written by the tiny model itself."""
    train = tuned.training_texts(tiny_lm, n_prompts=10, tokens_each=40, seed=0)
    held = tuned.training_texts(tiny_lm, n_prompts=4, tokens_each=40, seed=1)
    return train, held


@pytest.fixture(scope="module")
def tiny_trained(tiny_lm, tiny_texts):
    calls = []
    lens, report = tuned.train_tuned_lens(tiny_lm, tiny_texts[0], **TINY_BUDGET,
                                          progress=lambda done, total, m: calls.append((done, total, m)))
    return lens, report, calls


def _assert_lower_everywhere(kl: dict[str, list[float]], num_layers: int) -> None:
    logit, lens = kl["logit_lens"], kl["tuned_lens"]
    assert len(logit) == len(lens) == num_layers + 1
    for layer in range(num_layers):
        assert lens[layer] < logit[layer], f"layer {layer}: tuned {lens[layer]:.3f} >= logit lens {logit[layer]:.3f}"
    assert logit[-1] == lens[-1] == 0.0  # layer L is the model's own output for both


def test_training_texts_are_deterministic_and_varied(tiny_lm):
    first = tuned.training_texts(tiny_lm, n_prompts=3, tokens_each=8, seed=5, cache=False)
    again = tuned.training_texts(tiny_lm, n_prompts=3, tokens_each=8, seed=5, cache=False)
    state = torch.random.get_rng_state()
    other = tuned.training_texts(tiny_lm, n_prompts=3, tokens_each=8, seed=6, cache=False)
    assert torch.equal(state, torch.random.get_rng_state())  # the global random state is left alone
    assert first == again and first != other
    assert [t[: len(p)] for t, p in zip(first, tuned.SEED_PROMPTS)] == list(tuned.SEED_PROMPTS[:3])
    assert all(len(t) > len(p) for t, p in zip(first, tuned.SEED_PROMPTS))
    assert len(set(tuned.SEED_PROMPTS)) == len(tuned.SEED_PROMPTS) >= 32


def test_training_texts_are_cached_per_model_and_settings(tiny_lm, monkeypatch):
    made = tuned.training_texts(tiny_lm, n_prompts=2, tokens_each=6, seed=3)
    assert made == tuned.training_texts(tiny_lm, n_prompts=2, tokens_each=6, seed=3, cache=False)

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached text should have been used")

    monkeypatch.setattr(tiny_lm.model, "generate", no_generation)
    assert tuned.training_texts(tiny_lm, n_prompts=2, tokens_each=6, seed=3) == made
    with pytest.raises(AssertionError):
        tuned.training_texts(tiny_lm, n_prompts=2, tokens_each=6, seed=4)


def test_fused_kl_matches_autograd_reference():
    torch.manual_seed(0)
    logits = (torch.randn(3, 4, 50) * 4).requires_grad_()
    final = torch.log_softmax(torch.randn(4, 50) * 3, -1)
    reference = (final.exp() * (final - torch.log_softmax(logits, -1))).sum(-1)
    weights = torch.rand(3, 4)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), logits)
    fused = tuned._kl(final, logits)
    (grad,) = torch.autograd.grad((fused * weights).sum(), logits)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, grad_ref, atol=1e-6, rtol=1e-5)


def test_trained_lens_lowers_heldout_kl_at_every_layer(tiny_lm, tiny_texts, tiny_trained):
    lens, report, _ = tiny_trained
    assert lens.kind == "tuned_lens" and lens.num_layers == tiny_lm.num_layers
    assert report.heldout_positions > 0 and report.train_positions > report.heldout_positions
    _assert_lower_everywhere(report.heldout, tiny_lm.num_layers)  # the held-out split of the training text
    fresh = tuned.heldout_kl(tiny_lm, lens, tiny_texts[1], precise=True)  # text written with another seed
    _assert_lower_everywhere(fresh, tiny_lm.num_layers)
    assert "tuned lens" in report.table() and "logit lens" in report.table()
    assert report.loss[-1] < report.loss[0]


def test_identity_lens_is_the_logit_lens(tiny_lm, tiny_texts):
    lens = AffineLens.identity("tuned_lens", tiny_lm.num_layers, tiny_lm.model.config.hidden_size,
                               tuned.lens_meta(tiny_lm))
    kl = tuned.heldout_kl(tiny_lm, lens, tiny_texts[1], precise=True)
    np.testing.assert_allclose(kl["tuned_lens"], kl["logit_lens"], rtol=1e-5, atol=1e-6)


def test_progress_is_monotone_and_ends_at_one(tiny_trained):
    _, _, calls = tiny_trained
    assert {total for _, total, _ in calls} == {1}  # a share of the whole job, phase after phase
    fractions = [done for done, _, _ in calls]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions)
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:]))
    assert fractions[-1] == 1.0
    assert any("training: step" in m for _, _, m in calls)


def test_generated_calibration_reports_its_source(tiny_lm):
    lens, report = tuned.train_tuned_lens(tiny_lm, n_prompts=5, tokens_each=12, steps=3, batch=8)
    assert "5 self-generated texts (12 sampled tokens each, seed 0)" in report.source
    assert lens.meta["source"] == report.source and "heldout_kl_tuned_lens" in lens.meta


def test_save_load_round_trip(tiny_lm, tiny_trained, tmp_path, monkeypatch):
    lens, report, _ = tiny_trained
    path = lens.save(tmp_path / "tuned.safetensors")
    loaded = AffineLens.load(path, tiny_lm)
    assert loaded.kind == "tuned_lens"
    assert torch.equal(loaded.weight, lens.weight) and torch.equal(loaded.bias, lens.bias)
    assert loaded.meta["fingerprint"] == tiny_lm.fingerprint()
    assert loaded.meta["heldout_kl_tuned_lens"] == lens.meta["heldout_kl_tuned_lens"]
    residuals = torch.randn(tiny_lm.num_layers, 5, lens.weight.shape[-1])
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(tiny_lm, residuals), lens.logits(tiny_lm, residuals))

    monkeypatch.setenv("SPADE_VIZ_CACHE", str(tmp_path / "cache"))
    assert find_lens(tiny_lm, "tuned_lens") is None
    lens.save(default_lens_path(tiny_lm, "tuned_lens"))
    found = find_lens(tiny_lm, "tuned_lens")
    assert found is not None and torch.equal(found.weight, lens.weight)


def test_refuses_a_lens_trained_for_another_model(tiny_lms, tiny_trained, tmp_path):
    lens, _, _ = tiny_trained
    path = lens.save(tmp_path / "tuned.safetensors")
    other = tiny_lms["mistral"]  # same width and depth, different weights
    with pytest.raises(LensMismatch, match="fitted on model"):
        AffineLens.load(path, other)
    with pytest.raises(LensMismatch):
        tuned.heldout_kl(other, lens, ["some text to decode"])
    with pytest.raises(LensMismatch):
        sv.analyze(other, "France: Paris\nJapan:", lenses={"tuned_lens": lens})
    (tmp_path / "junk.safetensors").write_bytes(b"not a lens")
    with pytest.raises(LensMismatch, match="not a readable lens file"):
        AffineLens.load(tmp_path / "junk.safetensors", other)


def test_analysis_has_a_tuned_lens_grid(tiny_lm, tiny_trained):
    lens, _, _ = tiny_trained
    res = sv.analyze(tiny_lm, "France: Paris\nJapan: Tokyo\nItaly:", lenses={"tuned_lens": lens})
    grid, logit = res.grids["tuned_lens"], res.grids["logit_lens"]
    assert grid.entropy.shape == logit.entropy.shape == (tiny_lm.num_layers + 1, len(res.tokens))
    np.testing.assert_array_equal(grid.top1[-1], logit.top1[-1])  # layer L: the model itself
    assert "tuned_lens" in res.answer


def test_text_windows_and_heldout_split(tiny_lm):
    text = "The quick brown fox jumps over the lazy dog. " * 40
    windows = tuned.text_windows(tiny_lm, [text], window=32)
    assert len(windows) > 3 and all(w[0] == tiny_lm.bos_id and 2 <= len(w) <= 32 for w in windows)
    train, held = tuned.split_heldout(windows, 0.2)
    assert held and train and len(train) + len(held) == len(windows)
    assert held == windows[4::5] and train == [w for i, w in enumerate(windows) if i % 5 != 4]
    one_train, one_held = tuned.split_heldout(windows[:1], 0.25)
    assert len(one_train[0]) + len(one_held[0]) - 1 == len(windows[0])
    with pytest.raises(sv.InputError):
        tuned.text_windows(tiny_lm, ["", "   "])


def test_collect_keeps_every_position_but_start_exactly(tiny_lm):
    windows = tuned.text_windows(tiny_lm, ["France: Paris\nJapan: Tokyo", "1 2 3", "The quick brown fox jumps"])
    acts = tuned.collect(tiny_lm, windows, batch_windows=2)  # padded batches of unequal windows
    assert acts.num_positions == sum(len(w) - 1 for w in windows)
    start = 0
    for ids in windows:
        with torch.no_grad():
            out = tiny_lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        n = len(ids) - 1
        torch.testing.assert_close(acts.final[start : start + n], out.hidden_states[-1][0, 1:], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(acts.residuals[:, start : start + n],
                                   torch.stack(out.hidden_states[:-1])[:, 0, 1:], atol=1e-5, rtol=1e-4)
        start += n
    assert tuned.collect(tiny_lm, windows, max_positions=5).num_positions == 5


def test_training_refuses_empty_text(tiny_lm):
    with pytest.raises(sv.InputError):
        tuned.train_tuned_lens(tiny_lm, [""], steps=1)


def test_first_layers_table():
    rows = []
    accuracies = {"logit_lens": [0, 0, 0.1, 0.8], "spade": [0, 0.78, 0.7, 0.8], "tuned_lens": [0, 0.5, 0.77, 0.8]}
    for name, acc in accuracies.items():
        for layer, value in enumerate(acc):
            rows.append({"decoder": name, "layer": layer, "accuracy": value, "agree_final": min(1.0, value / 0.8)})
    curves = compare.layer_curves(pd.DataFrame(rows))
    assert list(dict.fromkeys(curves["decoder"])) == ["logit_lens", "tuned_lens", "spade"]  # COMPARED order
    assert compare.final_accuracy(curves) == 0.8
    table = compare.first_layers(curves).set_index("decoder")
    assert table.loc["logit_lens", "first_layer"] == 3
    assert table.loc["spade", "first_layer"] == 1 and table.loc["spade", "stays_from"] == 3
    assert table.loc["tuned_lens", "first_layer"] == 2 and table.loc["tuned_lens", "stays_from"] == 2
    assert table.loc["spade", "first_layer_agreeing"] == 1
    text = compare.format_table(compare.first_layers(curves), 3)
    assert "SPADE" in text and "1 / 3" in text
    zero = curves.assign(accuracy=0.0)
    assert compare.first_layers(zero)["first_layer"].isna().all()


def test_comparison_figure_has_both_lines_per_decoder():
    from spade_viz.viz.compare import comparison_figure, heldout_kl_figure

    rows = [{"decoder": d, "layer": layer, "accuracy": layer / 3, "agree_final": layer / 3}
            for d in ("logit_lens", "tuned_lens", "spade", "linear_spade") for layer in range(4)]
    fig = comparison_figure(compare.layer_curves(pd.DataFrame(rows)))
    shown = [trace.name for trace in fig.data if trace.showlegend is not False]
    assert shown == ["logit lens", "tuned lens", "SPADE", "linear SPADE",
                     "accuracy vs gold", "agrees with final answer"]
    lines = [trace for trace in fig.data if trace.x[0] is not None]
    assert len(lines) == 8 and sum(trace.line.dash == "dot" for trace in lines) == 4
    kl = heldout_kl_figure({"logit_lens": [3.0, 2.0, 0.0], "tuned_lens": [1.0, 0.5, 0.0]})
    assert [len(t.y) for t in kl.data] == [2, 2] and kl.layout.yaxis.type == "log"


def test_sweep_has_tuned_lens_rows_when_one_is_saved(tiny_lm, tiny_trained, tmp_path, monkeypatch):
    from spade_viz.data import load_builtin
    from spade_viz.sweep import SweepSettings, run_sweep

    monkeypatch.setenv("SPADE_VIZ_CACHE", str(tmp_path))
    dataset = load_builtin("capitals")
    small = replace(dataset, examples=dataset.examples[:6], source_hash=dataset.source_hash + "-first6")
    settings = SweepSettings(linear_spade="off")
    without = run_sweep(tiny_lm, small, settings, use_cache=False)
    assert "tuned_lens" not in without.decoders
    lens, _, _ = tiny_trained
    lens.save(default_lens_path(tiny_lm, "tuned_lens"))
    result = run_sweep(tiny_lm, small, settings, use_cache=False)
    assert "tuned_lens" in result.decoders
    frame = result.frame()
    assert (frame["decoder"] == "tuned_lens").sum() == result.num_examples * (tiny_lm.num_layers + 1)
    last = frame[frame["layer"] == tiny_lm.num_layers]
    by = last.pivot(index="example_id", columns="decoder", values="top1_id")
    assert (by["tuned_lens"] == by["logit_lens"]).all()
    table = compare.first_layers(compare.layer_curves(result.summary()))
    assert set(table["decoder"]) == {"logit_lens", "tuned_lens", "spade"}
    assert math.isclose(table["final_accuracy"].nunique(), 1)


@pytest.mark.slow
def test_default_model_reduced_budget(default_lm):
    """The real default model, a reduced budget (~1 min on 2 free cores): still lower at every layer."""
    lens, report = tuned.train_tuned_lens(default_lm, n_prompts=10, tokens_each=40, steps=40, batch=16)
    _assert_lower_everywhere(report.heldout, default_lm.num_layers)
