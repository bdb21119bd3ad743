"""Dataset sweep: batching is exact, SPADE equals the single-prompt analysis, choices, cache, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoConfig

import spade_viz as sv
from spade_viz.cli import main
from spade_viz.data import Dataset, load_builtin, load_dataset
from spade_viz.engine import prepare_examples
from spade_viz.sweep import CSV_COLUMNS, SweepSettings, cached_sweep, run_sweep
from test_lens_invariants import reference_logit_lens
from tiny_models import FAMILIES

pytestmark = pytest.mark.usefixtures("isolated_cache")  # sweeps and lenses go to a fresh cache

PROMPTS = [
    ("France: Paris\nJapan:", " Tokyo"),
    ("Italy:", " Rome"),
    ("The quick brown fox jumps over the lazy", " dog"),
    ("1 2 3 4 5 6", " 7"),
    ("English: cat\nFrench:", " chat"),
    ("Egypt: Cairo\nGermany: Berlin\nFrance:", " Paris"),
    ("hot cold big", " small"),
]
CHOICE_ROWS = [
    {"id": "yn", "prompt": "Question: Is the sky blue?\nAnswer:", "answer": " Yes", "choices": [" Yes", " No"]},
    {"id": "abcd", "prompt": "A. B. C. D.\nAnswer:", "answer": " C", "choices": [" A", " B", " C", " D"]},
]


def write_dataset(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def toy_rows(with_choices: bool = True) -> list[dict]:
    rows = [{"id": f"ex{i}", "prompt": p, "answer": a} for i, (p, a) in enumerate(PROMPTS)]
    return rows + (CHOICE_ROWS if with_choices else [])


@pytest.fixture()
def toy(tmp_path) -> Dataset:
    return load_dataset(write_dataset(tmp_path / "toy.jsonl", toy_rows()))


def assert_same(a, b, atol=1e-4):
    assert a.example_ids == b.example_ids and a.decoders == b.decoders
    for name in a.decoders:
        np.testing.assert_array_equal(a.top1[name], b.top1[name])
        np.testing.assert_array_equal(a.top1_vocab[name], b.top1_vocab[name])
        np.testing.assert_allclose(a.entropy[name], b.entropy[name], atol=atol)
        np.testing.assert_allclose(a.entropy_vocab[name], b.entropy_vocab[name], atol=atol)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "opt"])
def test_batched_equals_unbatched(tiny_lms, toy, family):
    """Right padding with a mask: every example's numbers equal those of a batch of one."""
    lm = tiny_lms[family]
    lengths = {len(p.token_ids) for p in prepare_examples(lm, toy.examples)[0]}
    assert len(lengths) > 3  # the batches really are padded
    one = run_sweep(lm, toy, SweepSettings(batch_size=1, linear_spade="off"), use_cache=False)
    many = run_sweep(lm, toy, SweepSettings(batch_size=5, linear_spade="off"), use_cache=False)
    assert_same(one, many)


@pytest.mark.parametrize("family", FAMILIES)
def test_sweep_equals_analysis(tiny_lms, toy, family):
    """SPADE and the logit lens of the sweep are those of `sv.analyze` at the answer position."""
    lm = tiny_lms[family]
    result = run_sweep(lm, toy, SweepSettings(batch_size=4, linear_spade="off"), use_cache=False)
    for i, example in enumerate(toy.examples[:4]):
        analysis = sv.analyze(lm, example.prompt)
        for name in ("spade", "logit_lens"):
            stats = analysis.answer[name]
            np.testing.assert_array_equal(result.top1_vocab[name][i], stats.top1[:, 0])
            np.testing.assert_allclose(result.entropy_vocab[name][i], stats.entropy[:, 0], atol=1e-4)
        assert result.final_ids[i] == analysis.final_answer_id


def test_renumbered_positions_equal_analysis(tiny_lm, toy):
    result = run_sweep(tiny_lm, toy, SweepSettings(spade_positions="renumbered", linear_spade="off"), use_cache=False)
    analysis = sv.analyze(tiny_lm, toy.examples[2].prompt, spade_positions="renumbered")
    np.testing.assert_array_equal(result.top1_vocab["spade"][2], analysis.answer["spade"].top1[:, 0])
    np.testing.assert_allclose(result.entropy_vocab["spade"][2], analysis.answer["spade"].entropy[:, 0], atol=1e-4)


def plain_logits(lm, ids: list[int]) -> torch.Tensor:
    """The model's own logits at the last position."""
    with torch.no_grad():
        return lm.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]


def test_choices_restrict_answers_and_entropy(tiny_lm, toy):
    lm = tiny_lm
    result = run_sweep(lm, toy, SweepSettings(linear_spade="off"), use_cache=False)
    prepared = {p.id: p for p in prepare_examples(lm, toy.examples)[0]}
    for i, example_id in enumerate(result.example_ids):
        choice_ids = prepared[example_id].choice_ids
        assert result.has_choices[i] == (choice_ids is not None)
        if choice_ids is None:
            for name in result.decoders:
                np.testing.assert_array_equal(result.top1[name][i], result.top1_vocab[name][i])
            continue
        # independent check on the logit lens: softmax over the choices' logits only
        analysis = sv.analyze(lm, toy.examples[i].prompt)
        with torch.no_grad():
            residuals = analysis.residuals[:, analysis.answer_position]
            logits = torch.cat([reference_logit_lens(lm, residuals),
                                plain_logits(lm, analysis.token_ids)[None]])
        picked = logits[:, list(choice_ids)].float()
        logprobs = torch.log_softmax(picked, -1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        np.testing.assert_allclose(result.entropy["logit_lens"][i], entropy.numpy(), atol=1e-4)
        np.testing.assert_array_equal(result.top1["logit_lens"][i], np.asarray(choice_ids)[picked.argmax(-1).numpy()])
        for name in result.decoders:
            assert set(result.top1[name][i]) <= set(choice_ids)
            assert (result.entropy[name][i] <= np.log(len(choice_ids)) + 1e-5).all()
        assert result.final_ids[i] in choice_ids
    frame = result.frame()
    yn_tokens = [lm.token_str(i) for i in prepared["yn"].choice_ids]
    assert frame.loc[frame.example_id == "yn", "top1"].isin(yn_tokens).all()


def test_cache_hit_returns_identical_results(tiny_lm, toy, tmp_path):
    settings = SweepSettings(batch_size=3)
    first = run_sweep(tiny_lm, toy, settings)
    assert not first.from_cache
    assert cached_sweep(tiny_lm, toy, settings) is not None
    again = run_sweep(tiny_lm, toy, replace(settings, batch_size=8))  # batch size is not part of the key
    assert again.from_cache
    assert_same(first, again, atol=0)
    np.testing.assert_array_equal(first.n_tokens, again.n_tokens)
    np.testing.assert_array_equal(first.gold_ids, again.gold_ids)
    assert first.linear_spade_source == again.linear_spade_source
    pd.testing.assert_frame_equal(first.frame(), again.frame())
    other = run_sweep(tiny_lm, toy, replace(settings, spade_positions="renumbered"))
    assert not other.from_cache
    edited = load_dataset(write_dataset(tmp_path / "edited.jsonl", toy_rows()[:-1]))
    assert cached_sweep(tiny_lm, edited, settings) is None
    assert not list((tmp_path / "cache" / "sweeps").glob("*.pkl"))


def test_skipped_examples_are_reported(tiny_lm, tmp_path):
    rows = toy_rows(with_choices=False) + [{"id": "long", "prompt": "word " * 60, "answer": " x"}]
    dataset = load_dataset(write_dataset(tmp_path / "long.jsonl", rows))
    result = run_sweep(tiny_lm, dataset, SweepSettings(max_tokens=40, linear_spade="off"), use_cache=False)
    assert "long" not in result.example_ids and result.skipped[0][0] == "long"
    assert "limit is 40" in result.skipped[0][1]


def test_frame_columns_and_shape(tiny_lm, toy):
    result = run_sweep(tiny_lm, toy, SweepSettings(), use_cache=False)
    frame = result.frame()
    assert list(frame.columns) == list(CSV_COLUMNS)
    assert set(frame.decoder) == {"logit_lens", "spade", "linear_spade"}
    assert len(frame) == result.num_examples * (tiny_lm.num_layers + 1) * 3
    last = frame[frame.layer == tiny_lm.num_layers]
    assert last.agree_final.all()  # at layer L every decoder is the model's own output
    assert result.linear_spade_source.startswith("5-fold cross-fitting")


def test_cli_sweep_writes_csv_that_exit_arrays_read(tiny_folders, toy, tmp_path, capsys):
    from spade_viz.exit.arrays import ExitArrays

    out = tmp_path / "results.csv"
    code = main(["sweep", "--model", str(tiny_folders["llama"]), "--dataset", str(tmp_path / "toy.jsonl"),
                 "--out", str(out), "--batch-size", "4"])
    printed = capsys.readouterr().out
    assert code == 0 and "linear SPADE: 5-fold cross-fitting" in printed
    assert "first layer ≥ 95% of final accuracy" in printed  # the comparison table, headless
    frame = pd.read_csv(out, keep_default_na=False)
    assert set(CSV_COLUMNS) <= set(frame.columns)
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["linear_spade_source"].startswith("5-fold")
    # the cost the sweep records, counted from the llama config: q, k, v, o, the gated MLP and two norms
    config = AutoConfig.from_pretrained(tiny_folders["llama"])
    d, head = config.hidden_size, config.head_dim
    attention = 2 * d * config.num_attention_heads * head + 2 * d * config.num_key_value_heads * head
    cost = meta["cost"]
    assert cost["block_params"] == attention + 3 * d * config.intermediate_size + 2 * d
    assert cost["head_params"] == config.vocab_size * d and cost["vocab_size"] == config.vocab_size
    assert cost["map_params"] == d * d + d
    arrays = ExitArrays.from_csv(out)
    assert len(arrays) == len(toy.examples) and set(arrays.decoders) == {"logit_lens", "spade", "linear_spade"}
    choices = dict(zip(arrays.example_ids, arrays.n_choices))
    assert choices["yn"] == 2 and choices["abcd"] == 4 and choices["ex0"] == 0
    # headless numbers = the page's: the CSV and the in-memory sweep give the same exit curve
    from spade_viz.exit import CostModel, ExitSimulator

    direct = ExitArrays.from_sweep(run_sweep(sv.load_model(str(tiny_folders["llama"])), toy,
                                             SweepSettings(batch_size=4)))
    cost = CostModel.from_dict(meta["cost"])
    pd.testing.assert_frame_equal(ExitSimulator(arrays, cost).curve(), ExitSimulator(direct, cost).curve())
    # a second run comes from the cache
    assert main(["sweep", "--model", str(tiny_folders["llama"]), "--dataset", str(tmp_path / "toy.jsonl"),
                 "--out", str(out)]) == 0
    assert "from the cache" in capsys.readouterr().out


def test_cli_sweep_bad_input(tiny_folders, tmp_path, capsys):
    assert main(["sweep", "--model", str(tiny_folders["llama"]), "--dataset", "no_such_task"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no such dataset file or built-in task") and "\n" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    assert main(["sweep", "--model", str(tiny_folders["llama"]), "--dataset", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: No valid rows")


# ------------------------------------------------------------------------------------------------
# The real default model (one small sweep shared by the tests below)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capitals_sweep(default_lm, tmp_path_factory):
    full = load_builtin("capitals")
    subset = Dataset("capitals", full.examples[:40], (), full.source_hash + ":40")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPADE_VIZ_CACHE", str(tmp_path_factory.mktemp("cache")))
        result = run_sweep(default_lm, subset, SweepSettings(batch_size=20, linear_spade="crossfit",
                                                            tuned_lens=False), use_cache=False)
    return subset, result


@pytest.mark.slow
def test_default_model_sweep_equals_analysis(default_lm, capitals_sweep):
    subset, result = capitals_sweep
    for i in (0, 17):
        analysis = sv.analyze(default_lm, subset.examples[i].prompt)
        for name in ("spade", "logit_lens"):
            np.testing.assert_array_equal(result.top1_vocab[name][i], analysis.answer[name].top1[:, 0])
            np.testing.assert_allclose(result.entropy_vocab[name][i], analysis.answer[name].entropy[:, 0],
                                       atol=2e-3)


@pytest.mark.slow
def test_default_model_spade_beats_logit_lens(capitals_sweep):
    """The picture the app exists to show: SPADE reaches the answer many layers before the logit lens."""
    _, result = capitals_sweep
    spade, lens = result.accuracy("spade"), result.accuracy("logit_lens")
    assert spade[24:30].mean() > lens[24:30].mean() + 0.3
    assert abs(spade[-1] - lens[-1]) < 1e-9  # layer L: both are the model's output


@pytest.mark.slow
def test_default_model_linear_spade_beats_logit_lens_held_out(capitals_sweep):
    """Cross-fitted (so held out for every example): linear SPADE imitates SPADE far better than the
    logit lens does, at mid and late layers."""
    _, result = capitals_sweep
    scores = result.linear_spade_scores()
    linear = np.array([row["agree_top1"] for row in scores])
    lens = np.array([row["logit_lens_agree_top1"] for row in scores])
    mid_late = slice(12, 30)
    assert linear[mid_late].mean() > lens[mid_late].mean() + 0.25, (linear.round(2), lens.round(2))
    assert (linear[mid_late] >= lens[mid_late]).mean() > 0.8, (linear.round(2), lens.round(2))
    corr = np.array([row["entropy_corr"] for row in scores])[mid_late]
    assert np.nanmean(corr) > 0.3, corr.round(2)


def test_a_token_limit_every_example_fits_under_keys_a_sweep_as_before():
    """The token limit rose from 512 to 2048: a sweep whose examples all fit under both is the same sweep
    (same key: cached and shipped sweeps stay valid); one with a longer example is not."""
    from types import SimpleNamespace

    from spade_viz.sweep.results import KEYED_TOKEN_LIMIT, SweepSettings

    short = [SimpleNamespace(token_ids=tuple(range(40))), SimpleNamespace(token_ids=tuple(range(300)))]
    long = [*short, SimpleNamespace(token_ids=tuple(range(KEYED_TOKEN_LIMIT + 1)))]
    now, before = SweepSettings(max_tokens=2048), SweepSettings(max_tokens=KEYED_TOKEN_LIMIT)
    assert now.keyed(short).key() == before.keyed(short).key() and now.makes(before, short)
    assert now.keyed(short).key()["max_tokens"] == KEYED_TOKEN_LIMIT
    assert not now.makes(before, long) and now.keyed(long).key()["max_tokens"] == 2048
    assert SweepSettings(max_tokens=100).keyed(short).key()["max_tokens"] == 100  # a limit that bites is kept
