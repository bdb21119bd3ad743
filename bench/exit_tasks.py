"""Per built-in task on a model: final accuracy, the first layer where SPADE reaches it, and the
hybrid exit with every choice made on examples it is not scored on, simulated and real.

For each task:
1. sweep the whole task (linear SPADE by 5-fold cross-fitting: no example is scored by a map fitted
   on it), write <out>/<task>.csv (+ .meta.json); choose the checkpoint layout and threshold (the
   largest speedup within 1 point) on every other example and score that choice on the others:
   what `python -m spade_viz exit-curve --sweep <that CSV>` prints;
2. real exit, as `python -m spade_viz real-exit --calibrate-split` runs it: fit linear SPADE, sweep
   and choose on a calibration part of the task, then run the real early exit on the held-out rest
   at that setting, timed against full forward passes (interleaved, same process).

    .venv/bin/python bench/exit_tasks.py [--tasks capitals,yes_no] [--out DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import spade_viz as sv  # noqa: E402
from spade_viz.data import builtin_tasks, load_builtin  # noqa: E402
from spade_viz.exit import Checkpoints, CostModel, ExitArrays, ExitSimulator, search_checkpoints  # noqa: E402
from spade_viz.exit.honest import calibrated_real_exit  # noqa: E402
from spade_viz.sweep import SweepSettings, run_sweep  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(point: dict) -> str:
    return f"acc {point['accuracy']:.3f} @ {point['speedup']:.2f}x"


def task_numbers(lm, task: str, out: Path, repeats: int, heldout: float, batch_size: int) -> dict:
    dataset = load_builtin(task)
    cost = CostModel.from_lm(lm)
    log(f"{task}: sweep of {len(dataset)} examples (cross-fitted linear SPADE)")
    full = run_sweep(lm, dataset, SweepSettings(linear_spade="crossfit"), use_cache=False)
    arrays = ExitArrays.from_sweep(full)
    full.to_csv(out / f"{task}.csv")
    sim = ExitSimulator(arrays, cost)
    chosen_on, scored_on = arrays.calibration_split()
    best = search_checkpoints(chosen_on, cost).iloc[0]
    layout, tau = Checkpoints.parse(best["checkpoints"]), float(best["threshold_within_1pt"])
    scored = ExitSimulator(scored_on, cost, layout)

    log(f"{task}: real exit, chosen on {1 - heldout:.0%} of the task and measured on the rest")
    honest = calibrated_real_exit(lm, dataset, 1 - heldout, repeats, cost=cost, batch_size=batch_size,
                                  progress=lambda done, total, message: log(message))
    real = honest.to_dict()
    return {
        "task": task,
        "examples": len(arrays),
        "mean_tokens": float(arrays.n_tokens.mean()),
        "final_accuracy": sim.full_model().accuracy,
        "first_layer_spade": sim.first_layer_reaching("spade"),
        "first_layer_logit_lens": sim.first_layer_reaching("logit_lens"),
        "first_layer_spade_within_1pt": sim.first_layer_reaching("spade", tolerance=0.01),
        "oracle": sim.oracle().point.to_dict(),
        "simulated": {
            "n_calibration": len(chosen_on), "n_heldout": len(scored_on),
            "checkpoints": layout.describe(), "threshold": tau,
            "calibration_speedup_within_1pt": float(best["speedup_within_1pt"]),
            "heldout_full_model": scored.full_model().to_dict(),
            "heldout": scored.at(tau, with_answers=False).point.to_dict(),
        },
        "real": {key: real[key] for key in ("full_accuracy", "accuracy", "measured_speedup", "simulated_speedup",
                                             "checkpoints", "threshold", "confidence", "n_calibration",
                                             "n_heldout", "simulated_calibration_speedup", "warnings")}
        | {"batch_size": batch_size},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sv.DEFAULT_MODEL)
    parser.add_argument("--tasks", default=",".join(builtin_tasks()))
    parser.add_argument("--out", default="test-artifacts/exit_tasks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heldout", type=float, default=0.5, help="share of each task the real exit is measured on")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass of the real exit")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = sv.load_model(args.model, device="cpu")
    rows = []
    for task in [t for t in args.tasks.split(",") if t]:
        row = task_numbers(lm, task, out, args.repeats, args.heldout, args.batch_size)
        (out / f"{task}.json").write_text(json.dumps(row, indent=1))
        rows.append(row)
        s, r = row["simulated"], row["real"]
        print(f"{task:18} n={row['examples']:3d} final acc {row['final_accuracy']:.3f}; SPADE reaches it at layer "
              f"{row['first_layer_spade']} (logit lens {row['first_layer_logit_lens']})", flush=True)
        print(f"{'':18} simulated, chosen on {s['n_calibration']} ({s['checkpoints']}, tau {s['threshold']:.2f}, "
              f"{s['calibration_speedup_within_1pt']:.2f}x there), scored on the other {s['n_heldout']}: "
              f"{fmt(s['heldout'])} against the full model's acc {s['heldout_full_model']['accuracy']:.3f}",
              flush=True)
        print(f"{'':18} real exit, chosen on {r['n_calibration']} ({r['checkpoints']}, tau {r['threshold']:.2f}), "
              f"measured on the other {r['n_heldout']}: acc {r['accuracy']:.3f} against {r['full_accuracy']:.3f}, "
              f"measured {r['measured_speedup']:.2f}x vs simulated {r['simulated_speedup']:.2f}x", flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
