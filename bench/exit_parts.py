"""Why the real early exit saves less wall clock than the simulated compute fraction promises.

The simulation counts work in block-token units (multiply-adds: `exit/cost.py`). On a CPU a
block over a whole prompt reads each weight once for n rows, while the exit's one-row parts
(a checkpoint's unembedding, SPADE's one-token continuation) read every weight for a single row:
they are memory-bound, so a unit of theirs takes longer. This prints, for the default model and
one prompt of each length, the wall clock of each part per block-token unit, relative to the
full forward pass's (1.0 = as the simulation assumes).

    .venv/bin/python bench/exit_parts.py [--tokens 32,128] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import spade_viz as sv  # noqa: E402
from spade_viz.exit import CostModel  # noqa: E402
from spade_viz.exit.real import full_answer, spade_continue  # noqa: E402


def median_s(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sv.DEFAULT_MODEL)
    parser.add_argument("--tokens", default="32,128")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    lm = sv.load_model(args.model, device="cpu")
    cost = CostModel.from_lm(lm)
    L = lm.num_layers
    dim = lm.model.config.hidden_size
    row = torch.randn(1, dim, dtype=lm.dtype)
    head = lm.adapter.lm_head.weight
    text = "The quick brown fox jumps over the lazy dog while the sun sets behind the hills. " * 40
    print(f"{lm.name}: {L} blocks, d={dim}, vocabulary {head.shape[0]}; one unembedding row = "
          f"{cost.head_units:.1f} block-token units, one linear-SPADE map = {cost.map_units:.2f}")
    for n in [int(t) for t in args.tokens.split(",")]:
        ids = lm.encode(text)[:n]
        with torch.no_grad():
            full_s = median_s(lambda: full_answer(lm, ids), args.repeats)
            head_s = median_s(lambda: torch.nn.functional.linear(row, head), args.repeats)
            spade_s = median_s(lambda: spade_continue(lm, row[0], L - 4, ids[-1], n - 1), args.repeats)
        per_unit = full_s / (L * n + cost.head_units)  # seconds per block-token unit in the full pass
        spade_units = 4 * cost.continuation_tokens + cost.head_units
        print(f"{n:4d} tokens: full pass {1000 * full_s:6.1f} ms; wall clock per unit relative to the full pass: "
              f"checkpoint unembedding {head_s / cost.head_units / per_unit:5.1f}x, "
              f"SPADE over the last 4 blocks + answer head {spade_s / spade_units / per_unit:5.1f}x "
              f"({1000 * spade_s:.1f} ms)")


if __name__ == "__main__":
    main()
