"""Per built-in task on a model: final accuracy, the first layer where SPADE reaches it, the hybrid
operating points, and the measured wall-clock speedup of the real early exit.

For each task:
1. sweep the whole task (linear SPADE by 5-fold cross-fitting: no example is scored by a map fitted
   on it), write <out>/<task>.csv (+ .meta.json): `python -m spade_viz exit-curve --sweep <that CSV>`
   prints the same curve and operating points headless;
2. real exit: fit linear SPADE on half of the task (`fit_linear_spade`, held-out half 0.5),
   sweep the held-out half with exactly that map, pick the checkpoint layout and threshold with the
   largest speedup within 1 point there, run the real early exit on the held-out prompts at that
   setting, timed against full forward passes (interleaved, same process), and check that every
   real exit layer equals the simulated one.

    .venv/bin/python bench/exit_tasks.py [--tasks capitals,yes_no] [--out DIR] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import spade_viz as sv  # noqa: E402
from spade_viz.data import builtin_tasks, load_builtin  # noqa: E402
from spade_viz.exit import Checkpoints, CostModel, ExitArrays, ExitSimulator, search_checkpoints  # noqa: E402
from spade_viz.exit.real import prepare_prompts, run_real_exit  # noqa: E402
from spade_viz.exit.report import exit_curve_report  # noqa: E402
from spade_viz.lenses.linear_spade import fit_linear_spade, split_examples  # noqa: E402
from spade_viz.sweep import SweepSettings, run_sweep  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(point: dict | None) -> str:
    if not point:
        return "-"
    return f"acc {point['accuracy']:.3f} @ {point['speedup']:.2f}x (tau {point['threshold']:.2f})"


def task_numbers(lm, task: str, out: Path, repeats: int, heldout: float, batch_size: int = 16) -> dict:
    dataset = load_builtin(task)
    cost = CostModel.from_lm(lm)
    log(f"{task}: sweep of {len(dataset)} examples (cross-fitted linear SPADE)")
    full = run_sweep(lm, dataset, SweepSettings(linear_spade="crossfit"))
    arrays = ExitArrays.from_sweep(full)
    full.to_csv(out / f"{task}.csv")
    report_all = exit_curve_report(arrays, cost, Checkpoints())
    searched = search_checkpoints(arrays, cost)
    layout = Checkpoints.parse(searched["checkpoints"].iloc[0])
    report_best = exit_curve_report(arrays, cost, layout)
    sim = ExitSimulator(arrays, cost)
    final_acc = report_all["full_model"]["accuracy"]

    log(f"{task}: calibrating linear SPADE on {1 - heldout:.0%} of the task")
    lens_path = out / f"{task}.linear_spade.safetensors"
    fitted = fit_linear_spade(lm, dataset, heldout=heldout, out=lens_path, save=True)
    usable = {p.example_id for p in prepare_prompts(lm, dataset.examples)}
    _train, held = split_examples([e for e in dataset.examples if e.id in usable], heldout)
    held_set = replace(dataset, name=f"{task}-heldout", examples=tuple(held), errors=(),
                       source_hash=f"{dataset.source_hash}:heldout{heldout}")
    log(f"{task}: sweep of the {len(held)} held-out examples with that map")
    held_result = run_sweep(lm, held_set, SweepSettings(linear_spade="saved"), linear_spade_map=fitted.lens)
    held_arrays = ExitArrays.from_sweep(held_result)
    held_search = search_checkpoints(held_arrays, cost)
    real_layout = Checkpoints.parse(held_search["checkpoints"].iloc[0])
    tau = float(held_search["threshold_within_1pt"].iloc[0])
    expected = ExitSimulator(held_arrays, cost, real_layout).at(tau)
    log(f"{task}: real exit on {len(held)} prompts x {repeats} rounds at {real_layout.describe()}, tau {tau:.3f}")
    prompts = prepare_prompts(lm, held)
    assert [p.example_id for p in prompts] == list(held_arrays.example_ids)
    real = run_real_exit(lm, prompts, fitted.lens, tau, real_layout, cost, repeats, batch_size=batch_size)
    same = int((real.exit_layers == expected.exit_layer).sum())
    return {
        "task": task,
        "examples": arrays.n_tokens.size,
        "mean_tokens": float(arrays.n_tokens.mean()),
        "final_accuracy": final_acc,
        "first_layer_spade": sim.first_layer_reaching("spade"),
        "first_layer_logit_lens": sim.first_layer_reaching("logit_lens"),
        "first_layer_spade_within_1pt": sim.first_layer_reaching("spade", tolerance=0.01),
        "all_checkpoints": report_all["operating_points"],
        "oracle": report_all["oracle"],
        "searched_checkpoints": layout.describe(),
        "searched": report_best["operating_points"],
        "real": {
            "heldout_examples": len(held),
            "checkpoints": real_layout.describe(),
            "threshold": tau,
            "measured_speedup": real.measured_speedup,
            "simulated_speedup": real.simulated_speedup,
            "simulated_compute_fraction": real.simulated_fraction,
            "accuracy": real.to_dict().get("accuracy"),
            "full_accuracy": real.to_dict().get("full_accuracy"),
            "agreement": real.to_dict()["agreement"],
            "mean_exit_layer": float(real.exit_layers.mean()),
            "exit_layers_equal_simulated": f"{same}/{len(held)}",
            "full_ms": 1000 * real.full_seconds / (len(held) * repeats),
            "exit_ms": 1000 * real.exit_seconds / (len(held) * repeats),
            "batch_size": batch_size,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sv.DEFAULT_MODEL)
    parser.add_argument("--tasks", default=",".join(builtin_tasks()))
    parser.add_argument("--out", default="test-artifacts/exit_tasks")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--heldout", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass of the real exit")
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
        r = row["real"]
        print(f"{task:18} n={row['examples']:3d} final acc {row['final_accuracy']:.3f}; SPADE reaches it at layer "
              f"{row['first_layer_spade']} (logit lens {row['first_layer_logit_lens']})", flush=True)
        print(f"{'':18} all checkpoints: best {fmt(row['all_checkpoints']['best_accuracy'])}; "
              f"1 pt {fmt(row['all_checkpoints']['within_1pt'])}", flush=True)
        print(f"{'':18} {row['searched_checkpoints']}: best {fmt(row['searched']['best_accuracy'])}; "
              f"1 pt {fmt(row['searched']['within_1pt'])}", flush=True)
        print(f"{'':18} real exit (held-out {r['heldout_examples']}, {r['checkpoints']}, tau {r['threshold']:.2f}): "
              f"measured {r['measured_speedup']:.2f}x vs simulated {r['simulated_speedup']:.2f}x; "
              f"exits equal simulated {r['exit_layers_equal_simulated']}; {r['full_ms']:.0f} -> {r['exit_ms']:.0f} ms",
              flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
