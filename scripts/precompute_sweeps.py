"""Precompute the built-in tasks' sweeps on the embedded default model and ship them in the package.

    .venv/bin/python scripts/precompute_sweeps.py               # every built-in task (minutes of CPU)
    .venv/bin/python scripts/precompute_sweeps.py capitals      # some of them

Each task is swept as the Early-exit and Compare pages sweep it by default (its first 200 examples,
default settings, linear SPADE cross-fitted, no tuned lens), on the CPU in fp32, with a cache folder
that holds only the default model, so no lens a user saved changes the numbers. The result is
written, compressed, under the very key the pages look up (`sweep_cache_key`: model fingerprint,
dtype, device, the task's content hash, settings, the linear-SPADE plan) into
spade_viz/assets/sweeps/, with index.json naming task, key, fingerprint and task hash. A page whose
key misses the user's disk cache finds it there (`sweep.cache.load_cached`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "spade_viz" / "assets" / "sweeps"
PAGE_LIMIT = 200  # the pages' default number of examples


def main(argv: list[str] | None = None) -> int:
    """Sweep the named built-in tasks (all by default) and write them into the package."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="*", help="built-in task names (default: all)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the sweeps go (default: the package)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from spade_viz.models.loading import cache_dir, ensure_default_model

    ensure_default_model()
    models = cache_dir() / "models"
    with tempfile.TemporaryDirectory() as clean:  # only the default model: no saved lens in the key
        (Path(clean) / "models").symlink_to(models, target_is_directory=True)
        os.environ["SPADE_VIZ_CACHE"] = clean
        import spade_viz as sv
        from spade_viz.sweep import SweepSettings, run_sweep, sweep_cache_key
        from spade_viz.sweep.cache import write_entry

        lm = sv.load_model(sv.DEFAULT_MODEL, device="cpu", dtype="fp32")
        tasks = args.tasks or list(sv.builtin_tasks())
        index_path = args.out / "index.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        for name in tasks:
            task = sv.load_builtin(name)
            subset = task.head(min(len(task), PAGE_LIMIT))
            settings = SweepSettings()
            key = sweep_cache_key(lm, subset, settings)
            start = time.perf_counter()
            result = run_sweep(lm, subset, settings, use_cache=False)
            write_entry(args.out, key, result, compressed=True)
            stale = index.get(name, {}).get("key")
            if stale and stale != key:
                for suffix in (".npz", ".json"):
                    (args.out / f"{stale}{suffix}").unlink(missing_ok=True)
            index[name] = {"key": key, "fingerprint": lm.fingerprint(), "task_hash": subset.source_hash,
                           "examples": result.num_examples, "linear_spade": result.linear_spade_source}
            index_path.write_text(json.dumps(dict(sorted(index.items())), indent=1) + "\n")
            size = sum((args.out / f"{key}{s}").stat().st_size for s in (".npz", ".json"))
            print(f"{name}: {result.num_examples} examples in {time.perf_counter() - start:.0f} s, "
                  f"{size / 1024:.0f} KiB, key {key}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
