"""Server-side cost of one threshold-slider move on the Early-exit page.

The page keeps an `ExitSimulator` built from cached per-example arrays; a slider move calls
`simulator.at(threshold)` (exit layers, answers, accuracy, compute) and nothing else touches
the model. This prints the median time of that call for 1000 examples x 30 layers (31 with
layer 0), the goal being under 50 ms, plus the one-off costs for reference.

    .venv/bin/python bench/exit_slider.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from spade_viz.exit import Checkpoints, ExitSimulator  # noqa: E402
from spade_viz.exit.synthetic import synthetic_arrays, synthetic_cost  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    arrays = synthetic_arrays(1000, 30)
    cost = synthetic_cost()
    build_ms = median_ms(lambda: ExitSimulator(arrays, cost, Checkpoints()), 20)
    sim = ExitSimulator(arrays, cost, Checkpoints())
    taus = iter(np.tile(np.linspace(0.1, 4.0, 50), 40))
    slider_ms = median_ms(lambda: sim.at(next(taus)), 2000)
    curve_ms = median_ms(lambda: sim.curve(count=200), 10)

    # what the page's fragment does on a slider move besides the numbers: the marker on the cached
    # trade-off figure, a new histogram, the examples table
    from spade_viz.exit.study import ExitStudy
    from spade_viz.viz import exit_figures as xf

    view = ExitStudy(arrays, cost).view()
    fig = xf.tradeoff_figure(view.curve, view.at(1.0).point.to_dict(), view.classic, view.fixed, view.full,
                             view.oracle, view.points)

    def page_move():
        outcome = view.at(float(np.random.uniform(0.1, 4.0)))
        xf.set_current(fig, outcome.point.to_dict())
        xf.exit_histogram(outcome.exit_layer, arrays.num_layers)
        view.examples_table(outcome)

    page_ms = median_ms(page_move, 50)
    print(f"examples x layers: {len(arrays)} x {arrays.num_layers + 1}")
    print(f"slider recompute ms: {slider_ms:.3f}")
    print(f"(page) recompute + figure marker + histogram + table ms: {page_ms:.1f}")
    print(f"(one-off) simulator build ms: {build_ms:.2f}; 200-threshold curve ms: {curve_ms:.2f}")
    print(f"goal < 50 ms: {'met' if slider_ms < 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
