"""Server-side cost of the Early-exit page's threshold slider.

The slider itself runs in the browser (`spade_viz.app.live_slider`, measured by
bench/browser_latency.py): the server computes every slider position's numbers once per view
(`exit.session.slider_grid`) and, on release, the examples table at one threshold. This prints,
for 1000 examples x 30 layers (31 with layer 0), the cost of one `simulator.at(threshold)`, of the
whole grid a view sends to the browser, and of the release's table, plus one-off costs.

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

    from spade_viz.exit.session import ThresholdGrid, slider_grid
    from spade_viz.exit.study import ExitStudy

    view = ExitStudy(arrays, cost).view()
    scale = ThresholdGrid(view)
    grid_ms = median_ms(lambda: slider_grid(view, scale), 5)
    release_ms = median_ms(lambda: view.examples_table(view.at(float(np.random.uniform(0.1, 4.0)))), 50)
    print(f"examples x layers: {len(arrays)} x {arrays.num_layers + 1}")
    print(f"slider recompute ms: {slider_ms:.3f}")
    print(f"(per view) every slider position's numbers for the browser, {len(slider_grid(view, scale)['tau'])} "
          f"positions, ms: {grid_ms:.1f}")
    print(f"(per release) the examples table at one threshold ms: {release_ms:.1f}")
    print(f"(one-off) simulator build ms: {build_ms:.2f}; 200-threshold curve ms: {curve_ms:.2f}")
    print(f"goal < 50 ms: {'met' if slider_ms < 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
