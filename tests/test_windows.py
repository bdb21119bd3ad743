"""Grids computed a window at a time (`spade_viz.windows`): exactly the grid computed at once, the
plain formulas, consistent after a cancel, exact under threads; the fused chunked statistics."""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest
import torch

import spade_viz as sv
from spade_viz import windows
from spade_viz.lenses import stats as stats_module
from test_lens_invariants import PROMPT, plain_forward, random_lenses
from tiny_models import FAMILIES

FIELDS = windows.FIELDS
LONG = PROMPT + " Rome\nSpain: Madrid\nPortugal:"
# (start, stop) windows of odd sizes, out of order, overlapping and repeated
WINDOWS = [(5, 8), (0, 3), (5, 8), (11, 12), (2, 7), (9, 14), (0, 1), (13, 20), (3, 16), (17, 40)]


def grid_names(res) -> list[str]:
    return [*res.grids, "spade"]


def assert_exactly_equal(a, b, what=""):
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{what} {name}")


def filled_by_windows(res, name: str) -> sv.Analysis:
    """The grid assembled from windows read in the order of WINDOWS, then the rest."""
    positions = len(res.tokens)
    grid = res.grid(name)
    parts = {}
    for start, stop in WINDOWS:
        start, stop = min(start, positions - 1), min(stop, positions)
        stats = grid.window(start, stop)
        assert stats.entropy.shape == (res.num_layers + 1, stop - start)
        for offset, position in enumerate(range(start, stop)):
            parts[position] = stats.column(offset)
    missing = [p for p in range(positions) if p not in parts]
    for position in missing:
        parts[position] = grid.window(position, position + 1)
    return {field: np.concatenate([getattr(parts[p], field) for p in range(positions)], axis=1) for field in FIELDS}


@pytest.fixture(params=[7, 40], ids=["chunks-of-1-or-2", "chunks-of-several"])
def small_chunks(request, monkeypatch):
    """Tiny models have few layers: small chunk sizes give a prompt many chunks."""
    monkeypatch.setattr(windows, "_CHUNK_ROWS", request.param)
    return request.param


@pytest.mark.parametrize("family", FAMILIES)
def test_windows_in_any_order_equal_the_grid_at_once(tiny_lms, family, small_chunks):
    lm = tiny_lms[family]
    lenses = {"tuned_lens": random_lenses(lm)["tuned_lens"]}  # a grid of its own
    at_once = sv.analyze(lm, LONG, lenses=lenses)
    by_windows = sv.analyze(lm, LONG, lenses=lenses)
    assert grid_names(at_once) == ["logit_lens", "tuned_lens", "spade"]
    assert len(at_once.stores["logit_lens"]._state) > 2  # the test has several chunks to get wrong
    for name in grid_names(at_once):
        whole = at_once.grid(name).window()
        got = filled_by_windows(by_windows, name)
        for field in FIELDS:
            np.testing.assert_array_equal(got[field], getattr(whole, field), err_msg=f"{family} {name} {field}")
        assert by_windows.grid(name).is_filled()
    # a whole grid read as the views read it (attributes) is that grid too, answer column included
    assert_exactly_equal(at_once.logit_lens, at_once.grid("logit_lens").window(), "attributes")
    assert_exactly_equal(at_once.logit_lens.column(at_once.answer_position), at_once.answer["logit_lens"])


@pytest.mark.parametrize("family", FAMILIES)
def test_grid_and_answer_views_equal_the_plain_eager_formulas(tiny_lms, family, small_chunks):
    """What the eager analysis computed: logit lens of every layer x position, then the model's own
    output, each position following the final top-1 (the target at the answer)."""
    lm = tiny_lms[family]
    res = sv.analyze(lm, LONG)
    out = plain_forward(lm, res.token_ids)
    with torch.no_grad():
        logits = torch.cat([lm.adapter.logit_lens(torch.stack(out.hidden_states[:-1])[:, 0]), out.logits]).float()
    logp = torch.log_softmax(logits, -1)
    final = logp[-1]
    targets = final.argmax(-1)
    targets[res.answer_position] = res.target_id
    target_logp = logp.gather(-1, targets.expand(logp.shape[:-1]).unsqueeze(-1))
    grid = res.logit_lens
    np.testing.assert_allclose(grid.entropy, -(logp.exp() * logp).sum(-1), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(grid.kl_to_final, (final.exp() * (final - logp)).sum(-1).clamp_min(0), atol=2e-5)
    np.testing.assert_allclose(grid.target_prob, target_logp.squeeze(-1).exp(), atol=1e-6, rtol=1e-4)
    np.testing.assert_array_equal(grid.top_ids, logp.topk(res.top_k, -1).indices)
    np.testing.assert_array_equal(grid.target_rank, (logp > target_logp).sum(-1) + 1)
    np.testing.assert_allclose(grid.top_probs, logp.topk(res.top_k, -1).values.exp(), atol=1e-6, rtol=1e-4)
    assert res.final_answer_id == int(out.logits[0, -1].argmax())


def test_cancel_keeps_finished_chunks_and_the_rest_fills_later(tiny_lm, monkeypatch):
    monkeypatch.setattr(windows, "_CHUNK_ROWS", 7)
    res = sv.analyze(tiny_lm, LONG)
    grid, store = res.grid("logit_lens"), res.stores["logit_lens"]
    checks = []

    def cancel_after_two_chunks():
        checks.append(1)
        return len(checks) > 2

    with pytest.raises(sv.Cancelled, match="cancelled"):
        grid.fill(cancel=cancel_after_two_chunks)
    assert [state is True for state in store._state[:3]] == [True, True, False]
    assert not any(state is not False for state in store._state[2:])  # nothing half-done or marked busy
    partial = grid.partial()
    done = store._bounds(1)[1]
    assert np.isfinite(partial.entropy[:, :done]).all() and np.isnan(partial.entropy[:, done:res.answer_position]).all()
    assert (partial.top_ids[:, done:res.answer_position] == -1).all()
    assert not grid.is_filled() and grid.is_filled(0, done)
    # a failure inside a chunk leaves it missing too, and the next call computes it
    compute = store._compute
    store._compute = lambda start, stop, buffers: (_ for _ in ()).throw(RuntimeError("broken chunk"))
    with pytest.raises(RuntimeError, match="broken chunk"):
        grid.fill(done, done + 1)
    store._compute = compute
    assert_exactly_equal(grid.window(), sv.analyze(tiny_lm, LONG).logit_lens, "after cancel")
    with pytest.raises(sv.Cancelled):  # a cancel before any work
        res.grid("spade").fill(cancel=lambda: True)
    grid.fill(cancel=lambda: True)  # nothing left to do: nothing to cancel
    assert store.missing() == [] and res.stores["spade"].missing() == [
        res.stores["spade"]._bounds(c) for c in range(len(res.stores["spade"]._state))]


def test_threads_reading_windows_at_once_get_exact_results_and_compute_each_chunk_once(tiny_lm, monkeypatch):
    monkeypatch.setattr(windows, "_CHUNK_ROWS", 7)
    reference = sv.analyze(tiny_lm, LONG)
    expected = {name: reference.grid(name).window() for name in grid_names(reference)}
    shared = sv.analyze(tiny_lm, LONG)
    calls: dict[tuple, int] = {}
    lock = threading.Lock()
    for name, store in shared.stores.items():
        def counted(start, stop, buffers, compute=store._compute, name=name):
            with lock:
                calls[name, start] = calls.get((name, start), 0) + 1
            return compute(start, stop, buffers)
        store._compute = counted
    errors, barrier = [], threading.Barrier(6)

    def reader(seed):
        try:
            rng = np.random.default_rng(seed)
            barrier.wait()
            for _ in range(8):
                name = grid_names(shared)[rng.integers(2)]
                start = int(rng.integers(len(shared.tokens)))
                stop = int(rng.integers(start + 1, len(shared.tokens) + 1))
                got = shared.grid(name).window(start, stop)
                for field in FIELDS:
                    np.testing.assert_array_equal(getattr(got, field), getattr(expected[name], field)[:, start:stop])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert calls and set(calls.values()) == {1}


def test_retargets_share_the_chunks_and_progress_counts_rows(tiny_lm, monkeypatch):
    monkeypatch.setattr(windows, "_CHUNK_ROWS", 7)
    res = sv.analyze(tiny_lm, LONG)
    other = int(res.answer["logit_lens"].top_ids[-1, 0, 1])
    moved = sv.retarget(tiny_lm, res, f"#{other}")
    calls = []
    moved.grid("spade").fill(progress=lambda done, total, stage: calls.append((done, total, stage)))
    rows = tiny_lm.num_layers * (len(res.tokens) - 2)  # neither <s> (the model's own) nor the answer (known)
    assert calls[0] == (0, rows, "SPADE at every position") and calls[-1][:2] == (rows, rows)
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls)
    assert res.grid("spade").is_filled()  # the base analysis reads the chunks its retarget computed
    answer = res.answer_position
    assert moved.grid("spade").window().target_rank[-1, answer] == 2
    assert res.grid("spade").window().target_rank[-1, answer] == 1
    np.testing.assert_array_equal(moved.grid("spade").window().entropy, res.grid("spade").window().entropy)
    buffers = res.buffers()
    assert set(buffers) >= {id(store) for store in res.stores.values()} and set(moved.buffers()) & set(buffers)
    positions = len(res.tokens)
    assert res.stores["logit_lens"].nbytes == (tiny_lm.num_layers + 1) * positions * (res.top_k * 12 + 4 * 3 + 8)
    with pytest.raises(sv.InputError, match="stop"):
        res.grid("logit_lens").window(3, positions + 1)
    with pytest.raises(sv.InputError, match="no grid"):
        res.grid("linear_spade")


def test_a_refused_prompt_names_the_setting_that_lifts_the_limit(tiny_lm, tiny_folders, capsys):
    from spade_viz import cli
    from spade_viz.cli import main

    folder = str(tiny_folders["llama"])
    assert main(["analyze", "word " * 20, "--model", folder, "--max-tokens", "8"]) == 2
    assert "shorten it or raise --max-tokens (up to" in capsys.readouterr().err

    with pytest.raises(sv.InputError, match=r"limit is 8: shorten it or raise `max_tokens` \(up to"):
        sv.analyze(tiny_lm, "word " * 20, max_tokens=8)
    with pytest.raises(sv.InputError, match="more than 8 tokens can hold.*raise `max_tokens`"):
        sv.analyze(tiny_lm, "word " * 2000, max_tokens=8)
    assert inspect.signature(sv.analyze).parameters["max_tokens"].default == cli.DEFAULT_TOKEN_LIMIT == 2048


@pytest.mark.parametrize("shape, final_shape", [((3, 7, 50), (7, 50)), ((9, 50), (9, 50)), ((9, 50), (50,)),
                                                ((2, 5, 50), (2, 5, 50)), ((4, 1, 50), (1, 50))])
@pytest.mark.parametrize("block", [50, 120, 1 << 23])
def test_fused_statistics_in_blocks_equal_the_whole_formulas(shape, final_shape, block, monkeypatch):
    monkeypatch.setattr(stats_module, "_BLOCK_ELEMENTS", block)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(shape, generator=gen) * 3
    final = torch.log_softmax(torch.randn(final_shape, generator=gen) * 3, -1)
    logp = torch.log_softmax(logits, -1)
    targets = torch.where(torch.rand(shape[:-1], generator=gen) < 0.5, logp.topk(3, -1).indices[..., 1], 7)
    got = stats_module.distribution_stats(logits, final, targets, k=3)
    target_logp = logp.gather(-1, targets.unsqueeze(-1))
    np.testing.assert_allclose(got["entropy"], -(logp.exp() * logp).sum(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["kl_to_final"], (final.exp() * (final - logp)).sum(-1).clamp_min(0), atol=1e-5)
    np.testing.assert_allclose(got["target_prob"], target_logp.squeeze(-1).exp(), rtol=1e-5)
    np.testing.assert_array_equal(got["target_rank"], (logp > target_logp).sum(-1) + 1)
    np.testing.assert_array_equal(got["top_ids"], logp.topk(3, -1).indices)
    # bf16 logits: float32 statistics of the bf16 values
    half = stats_module.distribution_stats(logits.bfloat16(), final, targets, k=3)
    assert half["entropy"].dtype == half["top_probs"].dtype == torch.float32
    plain = torch.log_softmax(logits.bfloat16().float(), -1)
    np.testing.assert_allclose(half["entropy"], -(plain.exp() * plain).sum(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_top_k", [True, False], ids=["targets-in-top-k", "targets-anywhere"])
def test_rank_by_one_comparison_is_the_sorted_rank_ties_included(in_top_k):
    """The rank counted as 0/1 floats against the target's log-probability is its place in a stable
    descending sort, ties with the target counting as below it; the logits' use as the work buffer
    (`scratch=True`) changes no number."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randint(0, 4, (3, 5, 50), generator=gen).float()  # many ties, some with the target
    final = torch.log_softmax(torch.randn(5, 50, generator=gen), -1)
    logp = torch.log_softmax(logits, -1)
    targets = logp.topk(3, -1).indices[..., 2] if in_top_k else torch.randint(0, 50, (3, 5), generator=gen)
    got = stats_module.distribution_stats(logits, final, targets, k=3)
    rows, order = logp.reshape(-1, 50).numpy(), np.argsort(-logp.reshape(-1, 50).numpy(), axis=-1, kind="stable")
    sorted_rank = [1 + int(np.argmax(row[o] == row[t])) for row, o, t in zip(rows, order, targets.reshape(-1))]
    np.testing.assert_array_equal(got["target_rank"].reshape(-1), sorted_rank)
    scratch = stats_module.distribution_stats(logits.clone(), final, targets, k=3, scratch=True)
    for name in FIELDS:
        np.testing.assert_array_equal(scratch[name], got[name], err_msg=name)


@pytest.mark.slow
def test_default_model_windows_equal_the_grid_at_once(default_lm):
    text = "The river runs past the old stone bridge, and the town on its banks wakes to the bells of " * 3
    at_once, by_windows = sv.analyze(default_lm, text), sv.analyze(default_lm, text)
    assert len(at_once.stores["logit_lens"]._state) > 3
    for name in grid_names(at_once):
        whole = at_once.grid(name).window()
        got = filled_by_windows(by_windows, name)
        for field in FIELDS:
            np.testing.assert_array_equal(got[field], getattr(whole, field), err_msg=f"{name} {field}")
    # and the logit lens is the plain one of the model's states
    out = plain_forward(default_lm, at_once.token_ids)
    with torch.no_grad():
        reference = torch.log_softmax(default_lm.adapter.logit_lens(out.hidden_states[10][0]).float(), -1)
    # two float32 forward passes of different shapes: <s>'s huge activations leave ~1e-4 relative noise
    np.testing.assert_allclose(at_once.logit_lens.entropy[10], -(reference.exp() * reference).sum(-1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(at_once.logit_lens.top1[10], reference.argmax(-1))


def test_a_windowed_copy_is_what_a_heatmap_of_that_window_reads(tiny_lm, monkeypatch):
    from spade_viz.viz.heatmaps import layer_position_heatmap

    monkeypatch.setattr(windows, "_CHUNK_ROWS", 7)
    res = sv.analyze(tiny_lm, LONG)
    width = res.stores["logit_lens"].width
    start, stop = 2 * width, 3 * width  # one chunk exactly: nothing else gets computed
    shown = res.windowed(start, stop, decoders=["logit_lens", "spade"])
    assert list(shown.grids) == ["logit_lens", "spade"] and list(res.grids) == ["logit_lens"]
    for name in shown.grids:
        whole = sv.analyze(tiny_lm, LONG).grid(name).window()
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(shown.grids[name], field)[:, start:stop],
                                          getattr(whole, field)[:, start:stop])
        grid, answer = shown.grids[name], res.answer_position  # the answer column is always there
        assert np.isnan(grid.entropy[:, :start]).all() and (grid.top_ids[:, stop:answer] == -1).all()
        np.testing.assert_array_equal(grid.entropy[:, answer], res.answer[name].entropy[:, 0])
    for name in shown.grids:  # the figures of that window draw from it, on the same colour scale
        figure = layer_position_heatmap(shown, "entropy", window=(start, stop), decoder=name)
        z = np.asarray(figure.data[0].z, dtype=float)
        np.testing.assert_array_equal(z, shown.grids[name].entropy[:, start:stop])
    assert not res.grid("logit_lens").is_filled(0, start)


def test_the_first_view_is_whole_chunks_and_the_answer_column_is_not_decoded_again(tiny_lm):
    """The `VIEW` positions ending at the answer (the Explore page's first heatmap) cost their own
    chunks and nothing more, and the answer's column comes from the analysis, not from a second decode."""
    res = sv.analyze(tiny_lm, LONG)
    n, view, layers = len(res.tokens), windows.VIEW, tiny_lm.num_layers
    assert n > 2 * view
    totals = {}
    res.windowed(n - view, n, decoders=["logit_lens", "spade"],
                 progress=lambda done, total, stage: totals.setdefault(stage, total))
    assert totals == {"logit lens": (layers + 1) * (view - 1), "SPADE at every position": layers * (view - 1)}
    for store in res.stores.values():
        assert store.is_filled(n - view, n) and max(stop for _, stop in store.missing()) == n - view
        assert np.isnan(store.arrays["entropy"][:, n - 1]).all()  # never decoded here: `Grid` shows the answer's
    for layers in range(1, 100):  # every width divides the view and keeps a chunk within its rows
        width = windows.chunk_width(layers)
        assert view % width == 0 and (width == 1 or width * (layers + 1) <= windows._CHUNK_ROWS)
    assert windows.chunk_width(30) == 7  # the default model: the first view is two chunks of 217 rows


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_written_into_a_reused_buffer_are_the_heads_own(tiny_lms, family):
    """`head(states, out=buffer)` (the grids' reused logits) is bit for bit the unembedding's product,
    written into the buffer where the head is a plain linear layer."""
    lm = tiny_lms[family]
    vocab, width = lm.adapter.lm_head.weight.shape  # (OPT: the width after its project_out)
    states = torch.randn(3, 5, width, generator=torch.Generator().manual_seed(0)).to(lm.dtype)
    buffers = stats_module.Buffers()
    for _ in range(2):  # the second call reuses the first's memory
        out = buffers.take("logits", (3, 5, vocab), lm.dtype)
        got = lm.adapter.head(states, out=out)
        torch.testing.assert_close(got, lm.adapter.head(states), rtol=0, atol=0)
    assert (got.data_ptr() == out.data_ptr()) == (type(lm.adapter.lm_head) is torch.nn.Linear
                                                 and lm.adapter.lm_head.bias is None)
