"""Real early exit on a tiny model: the forward pass really stops, and its exits and answers are
exactly the simulated ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spade_viz as sv
from spade_viz.data import Example
from spade_viz.exit import Checkpoints, CostModel, ExitArrays, ExitSimulator
from spade_viz.exit.real import (
    exit_answer,
    exit_answers,
    format_real_exit,
    full_answers,
    prepare_prompts,
    run_real_exit,
    spade_continue,
)
from spade_viz.lenses.affine import AffineLens, lens_meta
from tiny_models import FAMILIES

EXAMPLES = [
    Example("e1", "France: Paris\nJapan:", " Tokyo"),
    Example("e2", "Italy: Rome\nEgypt:", " Cairo"),
    Example("e3", "English: cat\nFrench:", " chat"),
    Example("e4", "Question: Is the sky blue?\nAnswer:", " Yes"),
    Example("e5", "The quick brown fox", " jumps"),
    Example("e6", "1 2 3 4", " 5"),
]


def random_lens(lm, seed=0, scale=0.3) -> AffineLens:
    L = lm.num_layers
    d_in = lm.model.config.hidden_size  # the residual stream (OPT may embed narrower and project in)
    d_out = lm.adapter.lm_head.weight.shape[1]
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(L, d_out, d_in, generator=gen) * scale
    return AffineLens("linear_spade", weight, torch.zeros(L, d_out), lens_meta(lm))


def analysed_arrays(lm, lens, examples) -> tuple[ExitArrays, dict]:
    """What a sweep records, computed here through `analyze` (the engine's own SPADE)."""
    L = lm.num_layers
    fields = {k: {d: [] for d in ("spade", "linear_spade", "logit_lens")} for k in ("top1", "correct", "agree", "H")}
    lengths, answer_ids = [], {}
    for prompt in prepare_prompts(lm, examples):
        res = sv.analyze(lm, lm.tokenizer.decode(prompt.ids[1:]), lenses={"linear_spade": lens})
        assert res.token_ids == prompt.ids
        final = res.final_answer_id
        for d in ("spade", "linear_spade", "logit_lens"):
            top = res.answer[d].top1[:, 0]
            fields["top1"][d].append(top.astype(str))
            fields["correct"][d].append(top == prompt.gold_id)
            fields["agree"][d].append(top == final)
            fields["H"][d].append(res.answer[d].entropy[:, 0].astype(np.float64))
        answer_ids[prompt.example_id] = res.answer["spade"].top1[:, 0]
        lengths.append(len(prompt.ids))
    stack = lambda k: {d: np.stack(v) for d, v in fields[k].items()}  # noqa: E731
    arrays = ExitArrays(np.array([e.id for e in examples], dtype=object), np.array(lengths), L,
                        stack("top1"), stack("correct"), stack("agree"), stack("H"))
    return arrays, answer_ids


@pytest.fixture(scope="module")
def setup(tiny_lm):
    lens = random_lens(tiny_lm)
    arrays, answer_ids = analysed_arrays(tiny_lm, lens, EXAMPLES)
    return tiny_lm, lens, arrays, answer_ids


def _thresholds(arrays: ExitArrays, mask: np.ndarray) -> list[float]:
    """Midpoints between the distinct checkpoint entropies: no threshold sits on a value."""
    values = np.unique(arrays.entropy["linear_spade"][:, :-1][:, mask[:-1]].round(6))
    mids = (values[1:] + values[:-1]) / 2
    return [0.0, *mids[:: max(1, len(mids) // 6)].tolist(), float(values.max()) + 1.0]


@pytest.mark.parametrize("checkpoints", [Checkpoints(start=0), Checkpoints(every=2, start=1)])
def test_real_exit_equals_simulation(setup, checkpoints):
    lm, lens, arrays, answer_ids = setup
    mask = checkpoints.mask(lm.num_layers)
    sim = ExitSimulator(arrays, CostModel.from_lm(lm), checkpoints)
    prompts = prepare_prompts(lm, EXAMPLES)
    seen_layers = set()
    taus = _thresholds(arrays, mask)
    for tau in taus:
        expected = sim.at(tau)
        decisions = [exit_answer(lm, p.ids, lens, mask, tau) for p in prompts]
        layers = [d.layer for d in decisions]
        assert layers == expected.exit_layer.tolist(), tau
        for prompt, decision in zip(prompts, decisions):
            assert decision.answer_id == answer_ids[prompt.example_id][decision.layer]
        assert [d.answer_id == p.gold_id for d, p in zip(decisions, prompts)] == expected.correct.tolist()
        seen_layers |= set(layers)
    assert len(seen_layers) >= min(3, mask.sum() + 1)  # thresholds exercised early, late and no exit
    # the timed run over the dataset takes the same exits and accounts them like the simulation
    tau = taus[len(taus) // 2]
    report = run_real_exit(lm, prompts, lens, tau, checkpoints, repeats=1)
    assert report.exit_layers.tolist() == sim.at(tau).exit_layer.tolist()
    assert report.simulated_fraction == pytest.approx(sim.at(tau).point.compute_fraction)
    assert report.answers.tolist() == [answer_ids[p.example_id][x] for p, x in zip(prompts, report.exit_layers)]
    assert report.full_answers.tolist() == [answer_ids[p.example_id][lm.num_layers] for p in prompts]
    assert report.measured_speedup == pytest.approx(report.full_seconds / report.exit_seconds)


def test_forward_really_stops(setup):
    """Blocks after the exit layer never see the full sequence; blocks before it never see the
    one-token continuation."""
    lm, lens, arrays, _ = setup
    calls = {i: [] for i in range(lm.num_layers)}
    # the MLP inside each block does the work: count the tokens it sees (hooks on the block itself
    # would fire even for a skipped block, whose forward is replaced but whose hooks still run)
    handles = [block.mlp.register_forward_hook(lambda m, a, out, i=i: calls[i].append(a[0].shape[1]))
               for i, block in enumerate(lm.adapter.blocks)]
    try:
        ids = prepare_prompts(lm, EXAMPLES[:1])[0].ids
        decision = exit_answer(lm, ids, lens, Checkpoints(start=1).mask(lm.num_layers), threshold=1e9)
    finally:
        for h in handles:
            h.remove()
    assert decision.layer == 1
    assert calls[0] == [len(ids)]  # block 0 ran on the sequence, not on the continuation
    assert all(calls[i] == [1] for i in range(1, lm.num_layers))  # later blocks: the one-token row only


def test_spade_continuation_equals_engine(tiny_lms):
    for family in ("llama", "gpt2", "opt", "gemma2"):
        lm = tiny_lms[family]
        res = sv.analyze(lm, "France: Paris\nJapan:")
        for layer in range(lm.num_layers):
            logits = spade_continue(lm, res.residuals[layer, -1], layer, res.token_ids[-1], res.answer_position)
            ref = lm.adapter.head(res.answer_states["spade"][layer : layer + 1])[0]
            torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)


def test_bad_input(setup):
    lm, lens, _, _ = setup
    prompts = prepare_prompts(lm, EXAMPLES[:2])
    with pytest.raises(sv.InputError):
        run_real_exit(lm, [], lens, 1.0)
    with pytest.raises(sv.InputError, match="linear SPADE"):
        run_real_exit(lm, prompts, AffineLens("tuned_lens", lens.weight, lens.bias, lens.meta), 1.0)


def test_cli_real_exit(tiny_folders, tiny_lm, tmp_path, capsys, isolated_cache):  # no saved lens there
    import json

    from spade_viz.cli import main as cli_main

    lens_path = random_lens(tiny_lm).save(tmp_path / "lens.safetensors")
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"id": e.id, "prompt": e.prompt, "answer": e.answer}) for e in EXAMPLES))
    argv = ["real-exit", "--model", str(tiny_folders["llama"]), "--dataset", str(data), "--threshold", "2.0",
            "--lens", str(lens_path), "--limit", "4", "--repeats", "1", "--checkpoints", "every:1,from:1"]
    assert cli_main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the same run in Python: the CLI reads the lens, threshold and checkpoints it was given
    lens = AffineLens.load(lens_path, tiny_lm)
    direct = run_real_exit(tiny_lm, prepare_prompts(tiny_lm, EXAMPLES[:4]), lens, 2.0,
                           Checkpoints(every=1, start=1), repeats=1).to_dict()
    assert report["examples"] == 4 and report["threshold"] == 2.0
    assert report["per_example"] == direct["per_example"]
    for key in ("mean_exit_layer", "exit_rate", "agreement", "simulated_compute_fraction", "accuracy", "full_accuracy"):
        assert report[key] == pytest.approx(direct[key]), key
    assert report["measured_speedup"] == pytest.approx(report["full_ms_per_example"] / report["exit_ms_per_example"])
    assert cli_main(argv) == 0
    assert "measured speedup" in capsys.readouterr().out
    # no saved lens for this model and none given: one line, exit 2
    assert cli_main(argv[:-8] + ["--limit", "2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (after the weight loader's progress bar)
    assert last.startswith("error:") and "calibrate" in last


def test_candidate_rows_equal_full_head(tiny_lms):
    for family in ("llama", "gemma2", "opt"):
        lm = tiny_lms[family]
        final = torch.randn(lm.adapter.lm_head.weight.shape[1])
        rows = torch.tensor([5, 17, 3])
        torch.testing.assert_close(lm.adapter.head(final, rows=rows), lm.adapter.head(final.unsqueeze(0))[0, rows])


def test_real_exit_with_choices_equals_simulation(tiny_lm):
    """Rows with choices: confidence and answer over the choices, exactly as the sweep records them."""
    from spade_viz.exit import ExitArrays
    from spade_viz.sweep import SweepSettings, run_sweep

    examples = tuple(Example(f"c{i}", p, a, (" Yes", " No")) for i, (p, a) in enumerate([
        ("Question: Is the sky blue?\nAnswer:", " Yes"), ("Question: Is fire cold?\nAnswer:", " No"),
        ("Is a cat big?\nAnswer:", " No"), ("Is Paris in France?\nAnswer:", " Yes"),
        ("hot cold\nAnswer:", " No"), ("big small\nAnswer:", " Yes")]))
    from spade_viz.data import Dataset

    lens = random_lens(tiny_lm, seed=3, scale=0.05)
    data = Dataset("yn", examples, (), "test-choices")
    result = run_sweep(tiny_lm, data, SweepSettings(linear_spade="saved"), use_cache=False, linear_spade_map=lens)
    arrays = ExitArrays.from_sweep(result)
    sim = ExitSimulator(arrays, CostModel.from_lm(tiny_lm), Checkpoints(start=0))
    prompts = prepare_prompts(tiny_lm, examples)
    assert all(p.candidates for p in prompts)
    mask = Checkpoints(start=0).mask(tiny_lm.num_layers)
    for tau in sim.thresholds(8):
        expected = sim.at(tau)
        decisions = [exit_answer(tiny_lm, p.ids, lens, mask, float(tau), candidates=p.candidates) for p in prompts]
        assert [d.layer for d in decisions] == expected.exit_layer.tolist()
        assert [d.answer_id == p.gold_id for d, p in zip(decisions, prompts)] == expected.correct.tolist()
    report = run_real_exit(tiny_lm, prompts, lens, float(tau), Checkpoints(start=0), repeats=1)
    assert report.exit_layers.tolist() == expected.exit_layer.tolist()
    assert report.simulated_fraction == pytest.approx(expected.point.compute_fraction)  # C of V rows charged


def test_the_honest_real_exit_chooses_on_one_part_and_measures_the_other(tiny_folders, tiny_lm, isolated_cache,
                                                                          capsys):
    """`real-exit --calibrate-split`: linear SPADE, layout and threshold come from the calibration part only
    (other held-out examples leave them unchanged); accuracy and speedup are measured on the rest."""
    import json

    from spade_viz.cli import main

    rows = [{"id": f"r{i}", "prompt": e.prompt, "answer": e.answer} for i, e in enumerate(EXAMPLES * 3)]
    data = isolated_cache.parent / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    before = data.read_bytes()
    argv = ["real-exit", "--model", str(tiny_folders["llama"]), "--calibrate-split", "0.5", "--repeats", "1", "--json"]
    assert main([*argv, "--dataset", str(data)]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("full_accuracy", "accuracy", "measured_speedup", "simulated_speedup", "checkpoints", "threshold",
                "confidence", "n_calibration", "n_heldout"):
        assert key in out, key
    assert out["n_calibration"] == 9 and out["n_heldout"] == 9
    assert out["confidence"].startswith("linear_spade over a shortlist of")
    heldout_ids = [p["example_id"] for p in out["real_exit"]["per_example"]]
    assert heldout_ids == [f"r{i}" for i in range(0, 18, 2)]  # timed on the held-out part only: every other row
    assert any("only 9 calibration examples" in w for w in out["warnings"])  # too few to trust: said so
    assert data.read_bytes() == before
    assert not list(isolated_cache.rglob("*.safetensors"))  # nothing saved for later runs to pick up

    # other held-out rows, the same calibration rows: the same choices, other measurements
    other = [dict(r, prompt=f"{r['prompt']} {r['prompt']}") if i % 2 == 0 else r for i, r in enumerate(rows)]
    data.write_text("\n".join(json.dumps(r) for r in other) + "\n")
    assert main([*argv, "--dataset", str(data)]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("checkpoints", "threshold", "confidence", "simulated_calibration_speedup", "n_calibration"):
        assert again[key] == out[key], key
    assert [p["n_tokens"] for p in again["real_exit"]["per_example"]] != \
        [p["n_tokens"] for p in out["real_exit"]["per_example"]]

    # the reported accuracy is that of the held-out examples' answers
    gold = {p.example_id: p.gold_id for p in prepare_prompts(tiny_lm, sv.load_dataset(str(data)).examples)}
    answers = again["real_exit"]["per_example"]
    assert again["accuracy"] == pytest.approx(np.mean([p["answer_id"] == gold[p["example_id"]] for p in answers]))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_exits_as_each_prompt_alone(tiny_lms, family):
    """Prompts that leave a batch at a checkpoint take the rows they leave with out of every block
    above (masks, positions, rotary tables cut to the rows that stay): each prompt's exit layer and
    answer are the ones it gets alone, and the prompts that stay answer as the full model does."""
    lm = tiny_lms[family]
    lens = random_lens(lm, seed=1)
    prompts = prepare_prompts(lm, EXAMPLES)
    mask = Checkpoints(start=0).mask(lm.num_layers)
    alone = {p.example_id: [] for p in prompts}
    entropies = []
    for tau in (0.0, 1e9):
        for p in prompts:
            alone[p.example_id].append(exit_answer(lm, p.ids, lens, mask, tau))
    # a threshold between the prompts' entropies at the first checkpoint, so some leave and some stay
    with torch.no_grad():
        for p in prompts:
            res = sv.analyze(lm, lm.tokenizer.decode(p.ids[1:]), lenses={"linear_spade": lens})
            entropies.append(float(res.answer["linear_spade"].entropy[0, 0]))
    middle = float(np.median(entropies)) + 1e-3
    for p in prompts:
        alone[p.example_id].append(exit_answer(lm, p.ids, lens, mask, middle))
    full = full_answers(lm, prompts)
    for i, tau in enumerate((0.0, 1e9, middle)):
        together = exit_answers(lm, prompts, lens, mask, tau)
        assert [d.layer for d in together] == [alone[p.example_id][i].layer for p in prompts], tau
        assert [d.answer_id for d in together] == [alone[p.example_id][i].answer_id for p in prompts], tau
    assert [d.answer_id for d in exit_answers(lm, prompts, lens, mask, 0.0)] == full
    assert 0 in {d.layer for d in together} and len({d.layer for d in together}) > 1  # some left, some stayed


def test_batched_run_equals_simulation_and_reports_its_batch(setup):
    lm, lens, arrays, _ = setup
    checkpoints = Checkpoints(every=2, start=1)
    sim = ExitSimulator(arrays, CostModel.from_lm(lm), checkpoints)
    prompts = prepare_prompts(lm, EXAMPLES)
    for tau in _thresholds(arrays, checkpoints.mask(lm.num_layers)):
        report = run_real_exit(lm, prompts, lens, tau, checkpoints, repeats=1, batch_size=4)
        assert report.exit_layers.tolist() == sim.at(tau).exit_layer.tolist(), tau
        assert report.to_dict()["batch_size"] == 4
        assert "batches of 4" in format_real_exit(report)
    with pytest.raises(sv.InputError, match="batch_size"):
        run_real_exit(lm, prompts, lens, 1.0, checkpoints, repeats=1, batch_size=0)


def test_batched_choices_read_only_their_rows(tiny_lm):
    """A batch where every prompt has choices reads only the choices' rows of the unembedding for
    its confidence, and decides as when each prompt runs alone; a batch mixing rows with and
    without choices too."""
    yes_no = [Example(f"c{i}", p, " Yes", (" Yes", " No")) for i, p in enumerate(
        ["Is the sky blue?\nAnswer:", "Is fire cold?\nAnswer:", "Is a cat big?\nAnswer:"])]
    free = [Example("f1", "France: Paris\nJapan:", " Tokyo"), Example("f2", "1 2 3 4", " 5")]
    lens = random_lens(tiny_lm, seed=3, scale=0.05)
    mask = Checkpoints(start=0).mask(tiny_lm.num_layers)
    for examples in (yes_no, yes_no + free):
        prompts = prepare_prompts(tiny_lm, examples)
        for tau in (0.3, 0.6, 0.69, 5.0):
            together = exit_answers(tiny_lm, prompts, lens, mask, tau)
            alone = [exit_answer(tiny_lm, p.ids, lens, mask, tau, candidates=p.candidates) for p in prompts]
            assert together == alone, tau


def test_shortlist_confidence_real_exit_equals_its_simulation(tiny_lm):
    """With a shortlist, the sweep records linear SPADE's entropy over those tokens only (top-1 still
    over the vocabulary), and the real exit, reading only those rows of the unembedding, decides
    exactly as the simulation of that sweep; each checkpoint is charged S rows, not V."""
    from spade_viz.data import Dataset
    from spade_viz.exit.honest import answer_shortlist
    from spade_viz.sweep import SweepSettings, run_sweep

    lens = random_lens(tiny_lm, seed=5, scale=0.1)
    data = Dataset("free", tuple(EXAMPLES), (), "test-shortlist")
    prompts = prepare_prompts(tiny_lm, EXAMPLES)
    shortlist = answer_shortlist(tiny_lm, prompts, top=4)
    assert {p.gold_id for p in prompts} <= set(shortlist) and len(shortlist) < tiny_lm.adapter.lm_head.weight.shape[0]
    whole = run_sweep(tiny_lm, data, SweepSettings(linear_spade="saved"), use_cache=False, linear_spade_map=lens)
    short = run_sweep(tiny_lm, data, SweepSettings(linear_spade="saved", confidence_shortlist=tuple(shortlist)),
                      use_cache=False, linear_spade_map=lens)
    np.testing.assert_array_equal(short.top1["linear_spade"], whole.top1["linear_spade"])
    np.testing.assert_array_equal(short.entropy_vocab["linear_spade"], whole.entropy_vocab["linear_spade"])
    restricted = short.entropy["linear_spade"][:, :-1]
    assert (restricted <= np.log(len(shortlist)) + 1e-5).all()  # over S tokens, not the vocabulary
    assert not np.allclose(restricted, whole.entropy["linear_spade"][:, :-1])
    assert SweepSettings().key() == SweepSettings(confidence_shortlist=()).key()  # old cache keys unchanged
    assert "confidence_shortlist" in SweepSettings(confidence_shortlist=(3, 1)).key()

    arrays = ExitArrays.from_sweep(short)
    arrays.n_choices = np.full(len(arrays), len(shortlist))
    sim = ExitSimulator(arrays, CostModel.from_lm(tiny_lm), Checkpoints(start=0))
    for tau in sim.thresholds(6):
        expected = sim.at(float(tau))
        report = run_real_exit(tiny_lm, prompts, lens, float(tau), Checkpoints(start=0), repeats=1, batch_size=4,
                               shortlist=shortlist)
        assert report.exit_layers.tolist() == expected.exit_layer.tolist(), tau
        assert report.simulated_fraction == pytest.approx(expected.point.compute_fraction)
        assert report.to_dict()["confidence_tokens"] == len(shortlist)
    with pytest.raises(sv.InputError, match="shortlist"):
        run_real_exit(tiny_lm, prompts, lens, 1.0, repeats=1, shortlist=[10**9])
