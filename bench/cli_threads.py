"""Two CLI commands at once: how much slower than one alone, for each thread count.

Runs `python -m spade_viz calibrate --dataset capitals` (linear SPADE on the default model) alone,
then two copies at once, under SPADE_VIZ_THREADS = each count asked (default: every core, which is
torch's own default, the CLI's default min(cores, 4), and 1). Prints wall-clock seconds and the
ratio two-at-once / alone, measured in this one run (absolute times on a shared machine drift;
the ratios are the point).

    .venv/bin/python bench/cli_threads.py [--threads 1,2,4] [--dataset capitals]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from spade_viz.cli import thread_count  # noqa: E402


def run(copies: int, threads: int, dataset: str, folder: Path) -> float:
    """Wall-clock seconds for `copies` calibrate commands started together (each its own process)."""
    env = {**os.environ, "SPADE_VIZ_THREADS": str(threads)}
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "spade_viz", "calibrate", "--dataset", dataset, "--out",
                               str(folder / f"lens-{threads}-{copies}-{i}.safetensors")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(copies)]
    if any(proc.wait() != 0 for proc in procs):
        raise SystemExit("a calibrate command failed")
    return time.perf_counter() - started


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=None, help=f"comma-separated counts (default: {cores} and "
                                                        f"{thread_count({})}, and 1)")
    parser.add_argument("--dataset", default="capitals")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({cores, thread_count({}), 1})
    print(f"{cores} cores; calibrate --dataset {args.dataset}; the CLI's default is {thread_count({})} threads",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run(1, counts[0], args.dataset, Path(tmp))  # warm the file cache and the model conversion
        for threads in counts:
            alone = run(1, threads, args.dataset, Path(tmp))
            both = run(2, threads, args.dataset, Path(tmp))
            print(f"threads {threads:3d}: alone {alone:6.1f} s, two at once {both:6.1f} s "
                  f"(x{both / alone:.2f}; x{both / (2 * alone):.2f} of running them one after the other)", flush=True)


if __name__ == "__main__":
    main()
