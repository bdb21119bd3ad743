"""Sweeps shipped with the package (spade_viz/assets/sweeps, written by scripts/precompute_sweeps.py):
every built-in task is there under the key the pages look up, a key that misses the disk cache is
served from them, and (slow) a stored sweep equals a fresh one on a subset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import spade_viz as sv
from spade_viz.sweep import SweepSettings, cached_sweep, run_sweep, sweep_cache_key
from spade_viz.sweep import cache as sweep_cache
from test_sweep import toy_rows, write_dataset

STORE = Path(str(sweep_cache.PRECOMPUTED))
PAGE_LIMIT = 200


def _index() -> dict:
    return json.loads((STORE / "index.json").read_text())


def test_every_builtin_task_is_shipped_under_its_key():
    index = _index()
    assert set(index) == set(sv.builtin_tasks())
    total = 0
    for name, entry in index.items():
        task = sv.load_builtin(name)
        subset = task.head(min(len(task), PAGE_LIMIT))
        assert entry["task_hash"] == subset.source_hash, f"{name} changed since its sweep was precomputed"
        result = sweep_cache.read_entry(STORE, entry["key"])
        assert result is not None, name
        assert result.dataset_hash == subset.source_hash and result.fingerprint == entry["fingerprint"]
        assert result.example_ids == [e.id for e in subset.examples][: result.num_examples]
        assert result.linear_spade_source and "cross" in result.linear_spade_source  # no example scored by its own map
        total += sum((STORE / f"{entry['key']}{suffix}").stat().st_size for suffix in (".npz", ".json"))
    assert total < 4 * 2**20  # compact: a few MiB for every task


def test_a_key_missing_on_disk_is_served_from_the_shipped_sweeps(tiny_lm, tmp_path, monkeypatch, isolated_cache):
    toy = sv.load_dataset(write_dataset(tmp_path / "toy.jsonl", toy_rows()))
    settings = SweepSettings(linear_spade="off")
    shipped = tmp_path / "shipped"
    fresh = run_sweep(tiny_lm, toy, settings, use_cache=False)
    sweep_cache.write_entry(shipped, sweep_cache_key(tiny_lm, toy, settings), fresh, compressed=True)
    assert cached_sweep(tiny_lm, toy, settings) is None
    monkeypatch.setattr(sweep_cache, "PRECOMPUTED", shipped)
    served = cached_sweep(tiny_lm, toy, settings)
    assert served is not None and served.info["precomputed"] and served.from_cache
    for name in fresh.decoders:
        np.testing.assert_array_equal(served.top1[name], fresh.top1[name])
        np.testing.assert_array_equal(served.entropy[name], fresh.entropy[name])
    # run_sweep takes it too (no model run), and another model's shapes are refused
    assert run_sweep(tiny_lm, toy, settings).info["precomputed"]
    assert sweep_cache.read_entry(shipped, sweep_cache_key(tiny_lm, toy, settings), sv.load_model(
        str(Path(tiny_lm.name).parent / "gpt2"))) is None


def test_a_shipped_sweep_equals_a_fresh_sweep_on_a_subset(default_lm, cache_without_lenses):
    """The first examples of a task, swept now, give the shipped numbers (linear SPADE aside: it is
    cross-fitted over the whole task, so a subset's maps differ by construction)."""
    task = sv.load_builtin("capitals")
    stored = cached_sweep(default_lm, task.head(min(len(task), PAGE_LIMIT)))
    assert stored is not None and stored.info.get("precomputed")
    fresh = run_sweep(default_lm, task.head(6), SweepSettings(linear_spade="off"), use_cache=False)
    rows = [stored.example_ids.index(i) for i in fresh.example_ids]
    np.testing.assert_array_equal(stored.final_ids[rows], fresh.final_ids)
    np.testing.assert_array_equal(stored.gold_ids[rows], fresh.gold_ids)
    for name in fresh.decoders:
        np.testing.assert_array_equal(stored.top1[name][rows], fresh.top1[name])
        np.testing.assert_allclose(stored.entropy[name][rows], fresh.entropy[name], atol=1e-3)


def test_the_script_is_what_the_pages_read():
    """The pages' default sweep of a built-in task (its first 200 examples, default settings)."""
    source = (Path(__file__).resolve().parent.parent / "scripts" / "precompute_sweeps.py").read_text()
    assert f"PAGE_LIMIT = {PAGE_LIMIT}" in source and "SweepSettings()" in source
    from spade_viz.app.state import DEFAULT_LIMIT, DataChoice

    assert DEFAULT_LIMIT == PAGE_LIMIT and DataChoice().examples(1000, 1000) == PAGE_LIMIT
    root = Path(__file__).resolve().parent.parent
    for reader in ("spade_viz/app/sweeps.py", "pages/compare_decoders.py"):
        assert "cached_sweep(lm, subset)" in (root / reader).read_text()


def test_the_early_exit_page_opens_a_shipped_sweep_at_once(default_lm, cache_without_lenses, monkeypatch):
    """On the default model a built-in task's sweep is there before anyone presses Run: no model run."""
    import spade_viz.app.sweeps as app_sweeps
    import spade_viz.sweep as sweep_module
    from apptest import open_page

    def no_sweep(*args, **kwargs):
        raise AssertionError("the page ran a sweep")

    monkeypatch.setattr(sweep_module, "run_sweep", no_sweep)
    monkeypatch.setattr(app_sweeps, "run_sweep", no_sweep)  # the page runs sweeps through the app package
    at = open_page("pages/early_exit.py", 300)
    at.query_params["task"] = "capitals"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("shipped with spade-viz" in c.value for c in at.caption)
    assert at.get("component_instance")  # the live threshold slider is drawn
