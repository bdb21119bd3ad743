"""One model, many sessions: what does sharing cost the people waiting?

On the default model, in one process (as the app shares one model between every session):
  throughput: N threads each analysing its own 32-token prompt at once, against the same N
              analyses one after the other (> 1: running side by side gains throughput);
  latency:    one analysis while another thread runs a sweep, against the same analysis on an
              idle model (the issue's bar: within 3x).
Medians of interleaved repetitions, printed as ratios measured in this run, because absolute
times on shared machines drift.

    python bench/concurrency.py [--sessions 4] [--reps 3] [--sweep-examples 60]
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

import spade_viz as sv
from spade_viz.data import load_builtin
from spade_viz.sweep import SweepSettings, run_sweep

WORDS = ("river stone light music garden paper window market silver winter planet engine story "
         "forest bridge ocean letter mountain city teacher").split()


def make_prompt(lm, rng: random.Random, tokens: int = 32) -> str:
    words = []
    while len(lm.encode(" ".join(words))) < tokens:
        words.append(rng.choice(WORDS))
    return lm.tokenizer.decode(lm.encode(" ".join(words))[1:tokens])


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def side_by_side(calls) -> float:
    """Wall clock of running every call in its own thread, all released together."""
    gate = threading.Barrier(len(calls) + 1)

    def work(call):
        gate.wait()
        call()

    threads = [threading.Thread(target=work, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sv.DEFAULT_MODEL)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sweep-examples", type=int, default=60)
    args = parser.parse_args()

    lm = sv.load_model(args.model)
    rng = random.Random(0)
    sv.analyze(lm, make_prompt(lm, rng))  # warm-up

    serial, parallel = [], []
    for rep in range(args.reps):
        prompts = [make_prompt(lm, rng) for _ in range(args.sessions)]
        calls = [lambda p=p: sv.analyze(lm, p) for p in prompts]
        runs = [("serial", lambda: [call() for call in calls]), ("parallel", lambda: side_by_side(calls))]
        for name, run in runs if rep % 2 == 0 else runs[::-1]:
            (serial if name == "serial" else parallel).append(timed(run))
    throughput = statistics.median(serial) / statistics.median(parallel)

    task = load_builtin("capitals")
    dataset = type(task)(task.name, task.examples[: args.sweep_examples], (), f"bench-{args.sweep_examples}")
    settings = SweepSettings(linear_spade="crossfit", tuned_lens=False)
    idle, busy = [], []
    for _rep in range(args.reps):
        prompt = make_prompt(lm, rng)
        idle.append(timed(lambda: sv.analyze(lm, prompt)))
        sweeping = threading.Thread(target=lambda: run_sweep(lm, dataset, settings, use_cache=False))
        sweeping.start()
        time.sleep(1.0)  # let the sweep get going
        busy.append(timed(lambda: sv.analyze(lm, prompt)))
        sweeping.join()
    latency = statistics.median(busy) / statistics.median(idle)

    print(f"model {lm.name}, {args.sessions} sessions, 32-token prompts, {args.reps} interleaved reps")
    print(f"throughput, {args.sessions} analyses side by side / one after the other: {throughput:.2f}x "
          f"(serial {statistics.median(serial):.2f} s, side by side {statistics.median(parallel):.2f} s)")
    print(f"latency of one analysis while a {len(dataset)}-example sweep runs / on an idle model: {latency:.2f}x "
          f"(idle {statistics.median(idle) * 1000:.0f} ms, during the sweep {statistics.median(busy) * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
