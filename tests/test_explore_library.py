"""Explore's further computations against their definitions: a position read in full (top-10 and
pinned tokens' trajectories, the last layer the model's own softmax), a greedy generation (the model's
own, decoded at every layer), the comparison of two analyses and the view exported as code."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import spade_viz as sv
from spade_viz import decoders
from spade_viz.lenses.spade import spade_final_states
from spade_viz.lenses.stats import DecodeStats
from tiny_models import FAMILIES

PROMPT = "France: Paris\nJapan: Tokyo\nGermany:"


def _model_probs(lm, ids: list[int]) -> torch.Tensor:
    """The model's own next-token softmax at every position of `ids`."""
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.input_device), use_cache=False).logits[0]
    return torch.softmax(logits.float(), -1).cpu()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_position_read_in_full_matches_the_analysis_and_ends_at_the_model(tiny_lms, family):
    lm = tiny_lms[family]
    res = sv.analyze(lm, "the cat sat on the mat and")
    probs = _model_probs(lm, res.token_ids)
    pins = ["#5", "#17"]
    for position in (res.answer_position, 2, 0):
        reading = sv.read_position(lm, res, position, pins=pins, k=10)
        assert reading.decoders == ["logit_lens", "spade"]
        for name in reading.decoders:
            top = reading.top(name, lm.num_layers)
            assert len(top) == 10
            # the last layer is the model's own distribution, for every decoder
            expected = probs[position].topk(10)
            assert [i for i, _, _ in top] == expected.indices.tolist()
            np.testing.assert_allclose([p for *_, p in top], expected.values.numpy(), rtol=1e-4, atol=1e-6)
            for pin, token_id in reading.pins.items():
                trajectory = reading.pin_probs[pin][name]
                assert trajectory.shape == (lm.num_layers + 1,)
                assert trajectory[-1] == pytest.approx(float(probs[position, token_id]), rel=1e-4, abs=1e-7)
                rank = int((probs[position] > probs[position, token_id]).sum()) + 1
                assert reading.pin_ranks[pin][name][-1] == rank
        # the top 5 at every layer are the analysis's own (it keeps 5 per cell)
        grid = res.grids["logit_lens"] if position != res.answer_position else res.answer["logit_lens"]
        column = position if position != res.answer_position else 0
        np.testing.assert_array_equal(reading.top_ids["logit_lens"][:, :5], grid.top_ids[:, column])
    answer = sv.read_position(lm, res)
    np.testing.assert_array_equal(answer.top_ids["spade"][:, :5], res.answer["spade"].top_ids[:, 0])


def test_spade_away_from_the_answer_is_spade_with_that_position_as_the_answer(tiny_lm):
    res = sv.analyze(tiny_lm, "one two three four five")
    position = 3
    reading = sv.read_position(tiny_lm, res, position)
    with torch.no_grad():
        (states,) = spade_final_states(tiny_lm, res.residuals[:, position], res.final_hidden[position],
                                       res.token_ids[position], position)
        expected = torch.softmax(tiny_lm.adapter.head(states).float(), -1).topk(10)
    np.testing.assert_array_equal(reading.top_ids["spade"], expected.indices.cpu().numpy())
    # and the same as SPADE's grid at that position (top 5 kept there)
    grid = sv.spade_grid(tiny_lm, res)
    np.testing.assert_array_equal(reading.top_ids["spade"][:, :5], grid.top_ids[:, position])


def test_pins_are_checked(tiny_lm):
    res = sv.analyze(tiny_lm, "one two three")
    with pytest.raises(sv.InputError, match="at most 5"):
        sv.read_position(tiny_lm, res, pins=["#1", "#2", "#3", "#4", "#5", "#6"])
    with pytest.raises(sv.InputError, match="empty"):
        sv.read_position(tiny_lm, res, pins=[""])
    with pytest.raises(sv.InputError, match="position"):
        sv.read_position(tiny_lm, res, position=len(res.tokens))
    with pytest.raises(sv.InputError, match="outside the vocabulary"):
        sv.read_position(tiny_lm, res, pins=["#99999999"])


@pytest.mark.parametrize("family", FAMILIES)
def test_a_generation_is_the_models_own_greedy_one(tiny_lms, family):
    lm = tiny_lms[family]
    gen = sv.follow_generation(lm, "the cat sat", 6)
    ids = lm.encode("the cat sat")
    with torch.no_grad():
        inputs = torch.tensor([ids], device=lm.input_device)
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
        own = lm.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=6,
                                do_sample=False, pad_token_id=pad)[0, len(ids):].tolist()
    assert gen.token_ids == own
    assert gen.positions == list(range(len(ids) - 1, len(ids) - 1 + len(own)))
    for name in ("logit_lens", "spade"):
        stats = gen.grids[name]
        assert stats.entropy.shape == (lm.num_layers + 1, len(own))
        # the top layer is the model's own output: its top-1 is the emitted token (a greedy step)
        np.testing.assert_array_equal(stats.top1[-1], own)
        first = gen.first_layer(name)
        assert all(f is not None and 0 <= f <= lm.num_layers for f in first)
        for step, f in enumerate(first):
            assert (stats.top1[f:, step] == own[step]).all() and (f == 0 or stats.top1[f - 1, step] != own[step])
    # SPADE at each step is SPADE of the sequence so far with that position as the answer
    step = len(own) - 1
    res = sv.analyze(lm, lm.tokenizer.decode(ids[1:] + own[:-1]))
    if res.token_ids == ids + own[:-1]:  # the text re-tokenizes the same way
        np.testing.assert_allclose(gen.grids["spade"].entropy[:, step], res.answer["spade"].entropy[:, 0], atol=1e-4)
        np.testing.assert_allclose(gen.grids["logit_lens"].entropy[:, step], res.answer["logit_lens"].entropy[:, 0],
                                   atol=1e-4)


def test_the_generation_exit_line_uses_the_exit_cost_model(tiny_lm):
    gen = sv.follow_generation(tiny_lm, "the cat sat", 4)
    never = gen.exit_blocks(0.0)  # no entropy is below 0: the full model, plus every checkpoint's overhead
    assert never["exit_layers"] == [tiny_lm.num_layers] * 4 and never["changed"] == 0
    assert never["hybrid_blocks"] > never["full_blocks"]
    always = gen.exit_blocks(1e9)  # the first checkpoint (layer 1) exits
    assert always["exit_layers"] == [1] * 4
    n = len(gen.prompt_ids) + np.arange(4)
    cost = gen.cost
    per_checkpoint = cost.map_units + cost.head_units
    expected = (1 * n + (tiny_lm.num_layers - 1) * 1.0 + cost.head_units + per_checkpoint).sum()
    assert always["hybrid_blocks"] == pytest.approx(expected)
    assert always["full_blocks"] == pytest.approx((tiny_lm.num_layers * n + cost.head_units).sum())
    assert always["changed"] == int((gen.grids["spade"].top1[1] != np.array(gen.token_ids)).sum())


def test_a_generation_is_bounded(tiny_lm):
    with pytest.raises(sv.InputError, match="max_new_tokens"):
        sv.follow_generation(tiny_lm, "the cat", 9, limit=8)
    with pytest.raises(sv.InputError, match="max_new_tokens"):
        sv.follow_generation(tiny_lm, "the cat", 0)


def test_two_analyses_compared(tiny_lm):
    a = sv.analyze(tiny_lm, "the cat sat on the")
    b = sv.analyze(tiny_lm, "the dog ran to the")
    cmp = sv.compare_analyses(a, b)
    assert cmp.decoders == ["logit_lens", "spade"] and cmp.same_depth
    for name in cmp.decoders:
        rows = cmp.layers[cmp.layers["decoder"] == name]
        np.testing.assert_allclose(rows["d_entropy"], b.answer[name].entropy[:, 0] - a.answer[name].entropy[:, 0],
                                   rtol=1e-6)
        np.testing.assert_allclose(rows["d_target_prob"],
                                   b.answer[name].target_prob[:, 0] - a.answer[name].target_prob[:, 0], rtol=1e-6)
        summary = cmp.summary.set_index("decoder").loc[name]
        assert summary["first_layer_a"] == a.first_stable_layer(name)
        assert summary["final_answer_b"] == b.token(b.final_answer_id)


def test_two_models_of_different_depths_compare_by_depth(tiny_lm):
    a = sv.analyze(tiny_lm, "the cat sat")
    keep = [0, *range(2, a.num_layers + 1)]  # a shallower "model": one layer fewer (the tiny ones share a depth)
    shallow = {name: DecodeStats(**{k: v[keep] for k, v in stats.__dict__.items()}) for name, stats in a.answer.items()}
    grids = {name: DecodeStats(**{k: v[keep] for k, v in stats.__dict__.items()})
             for name, stats in a.windowed(0, len(a.tokens)).grids.items()}
    b = replace(a, num_layers=a.num_layers - 1, answer=shallow, grids=grids)
    cmp = sv.compare_analyses(a, b)
    rows = cmp.layers[cmp.layers["decoder"] == "spade"]
    np.testing.assert_allclose(rows["depth_b"].dropna(), np.arange(b.num_layers + 1) / b.num_layers)
    assert not cmp.same_depth and cmp.layers["d_entropy"].isna().all()
    fig = sv.viz.difference_curves(cmp)
    assert {t.name for t in fig.data} >= {f"{decoders.label('spade')} · A", f"{decoders.label('spade')} · B"}


def test_the_view_as_a_notebook_is_valid_json_with_the_script_steps():
    view = {"model": "smollm2-135m", "prompt": PROMPT, "pins": [" Berlin"], "generate": 4, "compare_prompt": "x"}
    notebook = json.loads(sv.view_notebook(view))
    assert notebook["nbformat"] == 4
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    script = sv.view_script(view)
    compile(script, "view.py", "exec")
    for source in sources[:-1]:
        assert source in script
        compile(source, "cell", "exec")
    assert "sv.read_position" in script and "sv.follow_generation(lm, PROMPT, 4" in script
    with pytest.raises(sv.InputError):
        sv.view_script({"prompt": "x", "nonsense": 1})


def test_decoder_aliases_of_the_papers_second_version():
    assert decoders.canonical("SimLens") == "spade" and decoders.canonical("linear-simlens") == "linear_spade"
    assert decoders.canonical("logit_lens") == "logit_lens"


def test_clickable_cells_put_one_invisible_marker_with_the_cells_hover_on_each_cell(tiny_lm):
    res = sv.analyze(tiny_lm, "one two three four")
    fig = sv.viz.clickable_cells(sv.viz.layer_position_heatmap(res, "entropy", font_scale=1.4))
    heat, cells = fig.data[0], fig.data[-1]
    rows, cols = tiny_lm.num_layers + 1, len(res.tokens)
    assert cells.type == "scatter" and len(cells.x) == rows * cols and heat.hoverinfo == "skip"
    assert list(zip(cells.x[:cols + 1], cells.y[:cols + 1])) == [*((c, 0) for c in range(cols)), (0, 1)]
    np.testing.assert_allclose(np.asarray(cells.marker.color).reshape(rows, cols), res.logit_lens.entropy, rtol=1e-6)
    assert "%{marker.color:.3f}" in cells.hovertemplate and cells.marker.opacity == 0
    assert fig.layout.clickmode == "event+select" and fig.layout.hoverdistance == -1


def test_tokens_that_look_alike_get_their_ids():
    tokens = {1: "", 2: "", 3: " a", 4: "\u00a0a"}.get  # two partial bytes; a space and a no-break space
    assert sv.viz.distinct_labels([1, 2, 3], tokens) == ["∅ #1", "∅ #2", "␣a"]
    assert sv.viz.distinct_labels([3, 4], tokens) == ["␣a #3", "␣a #4"]


def test_the_answer_views_and_one_windows_heatmap_compute_no_more_of_the_grid(tiny_lm):
    """Explore's first view on a long prompt costs the answer column and one window: no figure reads the
    rest of the layers x positions grid (a colour bar once read the whole grid to name its peak)."""
    res = sv.analyze(tiny_lm, " ".join(["the cat sat on the mat and"] * 12))
    n = len(res.tokens)
    start, stop = n - 14, n
    in_view = res.windowed(start, stop)
    zrange = sv.viz.metric_range(in_view, "kl_to_final")  # the window's cells and the answer columns
    figures = [sv.viz.answer_heatmap(res, "kl_to_final", zrange=zrange), sv.viz.entropy_curves(res),
               sv.viz.target_curves(res), sv.viz.layer_position_heatmap(in_view, "kl_to_final", window=(start, stop),
                                                                        zrange=zrange)]
    assert res.is_filled(start, stop, ["logit_lens"])
    assert not res.is_filled(0, n, ["logit_lens"]) and not res.is_filled(0, 14, ["logit_lens"])
    assert all(len(f.data) for f in figures)
    # the window's copy shows that window only, whatever else was computed before: one range for one view
    res.windowed(0, 14)
    again = res.windowed(start, stop)
    assert np.isnan(again.grids["logit_lens"].entropy[:, :start]).all()
    assert sv.viz.metric_range(again, "kl_to_final") == zrange
