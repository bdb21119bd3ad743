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
    early_exit = (root / "spade_viz/app/sweeps.py").read_text()
    assert "cached_sweep(lm, subset, linear_spade_map=lens, fallback_shipped=True)" in early_exit
    assert "cached_sweep(lm, subset, fallback_shipped=True)" in (root / "pages/compare_decoders.py").read_text()


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


def _ship(tmp_path, monkeypatch, lm, dataset, settings) -> None:
    """Ship, as scripts/precompute_sweeps.py does, the sweep of `dataset` made with no saved lens."""
    shipped = tmp_path / "shipped"
    key = sweep_cache_key(lm, dataset, settings)
    sweep_cache.write_entry(shipped, key, run_sweep(lm, dataset, settings, use_cache=False), compressed=True)
    (shipped / "index.json").write_text(json.dumps({"toy": {"key": key}}))
    monkeypatch.setattr(sweep_cache, "PRECOMPUTED", shipped)
    sweep_cache.shipped_sweeps.cache_clear()


def test_saved_lenses_keep_the_shipped_sweep_and_say_what_it_lacks(tiny_lm, tmp_path, monkeypatch, isolated_cache):
    from spade_viz.lenses.affine import default_lens_path
    from spade_viz.sweep import shipped_sweep_problem

    toy = sv.load_dataset(write_dataset(tmp_path / "toy.jsonl", toy_rows()))
    other = sv.load_dataset(write_dataset(tmp_path / "other.jsonl", [
        {"id": f"o{i}", "prompt": f"Count: {i} {i + 1} {i + 2}", "answer": f" {i + 3}"} for i in range(8)]))
    settings = SweepSettings()
    _ship(tmp_path, monkeypatch, tiny_lm, toy, settings)
    try:
        exact = cached_sweep(tiny_lm, toy, settings)
        assert exact is not None and exact.info["precomputed"]  # no saved lens: the very key
        sv.fit_linear_spade(tiny_lm, other, save=True)  # a map fitted on other examples: another key
        lens, _ = sv.train_tuned_lens(tiny_lm, ["France: Paris", "Japan: Tokyo"], steps=2, batch=2)
        lens.save(default_lens_path(tiny_lm, "tuned_lens"))
        assert cached_sweep(tiny_lm, toy, settings) is None  # the key covers the saved lenses
        shown = cached_sweep(tiny_lm, toy, settings, fallback_shipped=True)
        assert shown is not None and shown.info["precomputed"]
        differs = " | ".join(shown.info["differs"])
        assert "linear SPADE" in differs and "tuned-lens" in differs and "fp32" not in differs
        assert "tuned_lens" not in shown.decoders
        for name in exact.decoders:
            np.testing.assert_array_equal(shown.top1[name], exact.top1[name])
            np.testing.assert_array_equal(shown.entropy[name], exact.entropy[name])
        assert shipped_sweep_problem(tiny_lm, toy, settings) is None
        assert cached_sweep(tiny_lm, toy, SweepSettings(spade_positions="renumbered"), fallback_shipped=True) is None
        assert "default settings" in shipped_sweep_problem(tiny_lm, toy, SweepSettings(spade_positions="renumbered"))
        gpt2 = sv.load_model(str(Path(tiny_lm.name).parent / "gpt2"))
        assert cached_sweep(gpt2, toy, settings, fallback_shipped=True) is None
        assert "weights differ" in shipped_sweep_problem(gpt2, toy, settings)
        assert shipped_sweep_problem(tiny_lm, other, settings) is None  # nothing shipped for it
    finally:
        sweep_cache.shipped_sweeps.cache_clear()
