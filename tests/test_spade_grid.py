"""SPADE over the whole prompt (`sv.spade_grid`): every position in turn is the answer position.

Invariants on a tiny random model of every family: the last column is the analysis's own
answer-position SPADE, the last layer is the model's output at every position, `<s>` plus one
token is the model at every layer, and a middle position equals the plain 2-token definition.
"""

from __future__ import annotations

import numpy as np
import pytest

import spade_viz as sv
from test_lens_invariants import PROMPT, entropy, plain_forward, single_token_prompt, spade_reference
from tiny_models import FAMILIES

FIELDS = ("top_ids", "top_probs", "entropy", "kl_to_final", "target_prob", "target_rank")


@pytest.mark.parametrize("family", FAMILIES)
def test_last_column_is_the_answer_spade_and_last_layer_the_model(tiny_lms, family):
    lm = tiny_lms[family]
    res = sv.analyze(lm, PROMPT)
    grid = sv.spade_grid(lm, res)
    layers, positions = lm.num_layers + 1, len(res.tokens)
    assert grid.entropy.shape == (layers, positions) and grid.top_ids.shape == (layers, positions, res.top_k)
    answer, column = res.answer["spade"], grid.column(res.answer_position)
    # the same top tokens and target ranks; the probabilities to float rounding of another batch shape
    np.testing.assert_array_equal(column.top_ids, answer.top_ids)
    np.testing.assert_array_equal(column.target_rank, answer.target_rank)
    for name in ("top_probs", "entropy", "kl_to_final", "target_prob"):
        np.testing.assert_allclose(getattr(column, name), getattr(answer, name), atol=1e-5, rtol=1e-5, err_msg=name)
    # layer L: the model's own output at every position, as the logit lens shows it
    lens = res.logit_lens
    np.testing.assert_array_equal(grid.top_ids[-1], lens.top_ids[-1])
    np.testing.assert_allclose(grid.entropy[-1], lens.entropy[-1], atol=1e-5)
    np.testing.assert_allclose(grid.kl_to_final[-1], 0.0, atol=1e-5)
    # position 0 is <s> itself: nothing to drop, the model's output at every layer
    assert (grid.top1[:, 0] == lens.top1[-1, 0]).all()
    np.testing.assert_allclose(grid.kl_to_final[:, 0], 0.0, atol=1e-5)
    # and below L it is not the logit lens: the test has teeth
    assert not np.allclose(grid.entropy[:-1, 1:], lens.entropy[:-1, 1:], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_bos_plus_one_token_is_the_model_at_every_layer(tiny_lms, family):
    lm = tiny_lms[family]
    res = sv.analyze(lm, single_token_prompt(lm))
    assert len(res.token_ids) == 2
    grid = sv.spade_grid(lm, res)
    out = plain_forward(lm, res.token_ids)
    model_top1 = out.logits[0].argmax(-1).numpy()
    for position in (0, 1):
        assert (grid.top1[:, position] == model_top1[position]).all()
        np.testing.assert_allclose(grid.kl_to_final[:, position], 0.0, atol=2e-5)
        np.testing.assert_allclose(grid.entropy[:, position], float(entropy(out.logits[0, position])), atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "opt"])
@pytest.mark.parametrize("mode", ["original", "renumbered"])
def test_a_middle_position_equals_the_plain_definition(tiny_lms, family, mode):
    """Column i is SPADE with i as the answer: [<s>, x_i] from layer l, positions (0, i) or (0, 1)."""
    lm = tiny_lms[family]
    res = sv.analyze(lm, PROMPT, spade_positions=mode)
    grid = sv.spade_grid(lm, res)
    out = plain_forward(lm, res.token_ids)
    position = len(res.tokens) // 2
    prefix = res.token_ids[: position + 1]
    for layer in range(lm.num_layers):
        ref = lm.adapter.head(spade_reference(lm, out.hidden_states, prefix, layer, mode))
        assert grid.top1[layer, position] == int(ref.argmax())
        assert grid.entropy[layer, position] == pytest.approx(float(entropy(ref)), abs=2e-4)


def test_progress_positions_mode_and_with_grid(tiny_lm):
    res = sv.analyze(tiny_lm, PROMPT)
    calls = []
    grid = sv.spade_grid(tiny_lm, res, progress=lambda done, total, stage: calls.append((done, total)))
    rows = tiny_lm.num_layers * (len(res.tokens) - 2)  # neither <s> (the model's own) nor the answer (known)
    assert calls[0] == (0, rows) and calls[-1] == (rows, rows)
    renumbered = sv.spade_grid(tiny_lm, sv.analyze(tiny_lm, PROMPT, spade_positions="renumbered"))
    assert not np.allclose(renumbered.entropy, grid.entropy)  # the position option is respected
    # beside the other grids: the figures and the long table read it; the target follows retarget
    both = sv.with_grid(tiny_lm, res, "spade", grid)
    assert list(both.grids) == ["logit_lens", "spade"] and set(res.grids) == {"logit_lens"}
    frame = both.to_frame()
    assert len(frame[frame.decoder == "spade"]) == (tiny_lm.num_layers + 1) * len(res.tokens)
    other = int(res.answer["spade"].top_ids[-1, 0, 1])
    moved = sv.with_grid(tiny_lm, sv.retarget(tiny_lm, res, f"#{other}"), "spade", grid)
    np.testing.assert_array_equal(moved.grids["spade"].target_rank[:, res.answer_position],
                                  moved.answer["spade"].target_rank[:, 0])
    assert all(moved.token(int(i)) is not None for i in np.unique(grid.top_ids))
    with pytest.raises(sv.InputError, match="Analysis"):
        sv.spade_grid(tiny_lm, "not an analysis")
    with pytest.raises(sv.InputError, match="does not fit"):
        sv.with_grid(tiny_lm, res, "spade", grid.column(0))


def test_the_chunking_changes_nothing_but_float_rounding(tiny_lm, monkeypatch):
    """Positions in chunks of one, of a few, or all at once, their rows continued in bands of start
    layers: the same grid."""
    from spade_viz import windows

    grids = []
    for rows in (1, 7, 4096):
        monkeypatch.setattr(windows, "_CHUNK_ROWS", rows)
        res = sv.analyze(tiny_lm, PROMPT)
        grids.append(sv.spade_grid(tiny_lm, res))
    assert len(res.stores["spade"]._state) == 1  # the last: one chunk
    for grid in grids[:-1]:
        np.testing.assert_array_equal(grid.top_ids, grids[-1].top_ids)
        np.testing.assert_allclose(grid.entropy, grids[-1].entropy, atol=1e-5)
