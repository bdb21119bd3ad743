"""The GPU path: one prompt's analysis against its floor, sweep throughput and the real early exit's
speedup, in bf16 on CUDA, for the default model and for a 1B-8B causal LM from the local Hugging
Face cache.

Per model, in one process:
  analysis/floor: `sv.analyze` against bench/analyze.py's floor (a forward with hidden states,
      then log-softmax, entropy and top-5 at every logit-lens cell, all layers batched);
  sweep: examples per second of `run_sweep` (no cache; logit lens, SPADE, cross-fitted linear
      SPADE) and of plain batched forward passes over the same batches, interleaved per round; the
      throughput ratio forward/sweep beside bench/sweep.py's multiply-add ratio (what the ratio
      would be if every multiply-add ran at one speed), and their quotient, the efficiency;
  (each round alternates which of the pair runs first, for the analysis and its floor as well);
  real exit: `calibrated_real_exit` on a built-in task (linear SPADE, checkpoints and threshold
      chosen on half, the other half timed against full forward passes): measured and simulated
      speedup, accuracy beside the full model's.
Every statistic is float32 whatever the weights (lenses/stats.py upcasts the logits). Times are
taken with the GPU synchronised; medians and ratios are printed, absolute times drift.

Without a CUDA GPU it prints one line and exits 0 (`--device cpu` runs the same measurements on
the CPU, to check the script itself). `--max-memory` spreads or offloads the model as the CLI's.

    .venv/bin/python bench/gpu.py [--model NAME ...] [--dtype bf16] [--task capitals] [--limit 64]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))
from analyze import floor, make_prompt  # noqa: E402  (bench/analyze.py: the floor's one definition)
from sweep import forward_passes, work_ratio  # noqa: E402  (bench/sweep.py)

import spade_viz as sv  # noqa: E402
from spade_viz.data import load_builtin  # noqa: E402
from spade_viz.engine import prepare_examples  # noqa: E402
from spade_viz.errors import SpadeVizError  # noqa: E402
from spade_viz.exit.honest import calibrated_real_exit  # noqa: E402
from spade_viz.sweep import SweepSettings, run_sweep  # noqa: E402

SIZES = (1e9, 8e9)  # parameters of the cached model to measure beside the default


def cached_causal_lm(low: float = SIZES[0], high: float = SIZES[1]) -> tuple[str, Path, float] | None:
    """(repo id, snapshot folder, parameters) of the largest causal LM with weights in the local
    Hugging Face cache whose parameter count is within [low, high], counted on the `meta` device
    from its config; None when there is none."""
    from huggingface_hub import scan_cache_dir
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, AutoModelForCausalLM

    try:
        repos = scan_cache_dir().repos
    except Exception:  # no cache folder at all
        return None
    found = []
    for repo in repos:
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            folder = Path(revision.snapshot_path)
            if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
                continue
            try:
                config = AutoConfig.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
                if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
                    continue
                with torch.device("meta"):
                    params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
            except Exception:  # a config this transformers cannot build: not a candidate
                continue
            if low <= params <= high:
                found.append((params, repo.repo_id, folder))
    if not found:
        return None
    params, repo_id, folder = max(found)
    return repo_id, folder, float(params)


def timed(sync, run) -> float:
    """Wall seconds of `run()`, the GPU synchronised before and after."""
    sync()
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start


def alternate(names: list[str], round_: int) -> list[str]:
    """The order of one round: reversed every other round, so neither side always runs first (on a
    warm or cooling GPU, after the other's allocations)."""
    return names if round_ % 2 == 0 else names[::-1]


def analysis_vs_floor(lm, sync, reps: int, tokens: int) -> None:
    rng = random.Random(0)
    prompts = [make_prompt(lm, rng, tokens) for _ in range(reps + 1)]
    runs = {
        "floor": lambda p: floor(lm, torch.tensor([lm.encode(p)], device=lm.device)),
        "analysis": lambda p: sv.analyze(lm, p),
    }
    for run in runs.values():
        run(prompts[-1])  # warm-up: kernels, allocator
    times = {name: [] for name in runs}
    for i, prompt in enumerate(prompts[:reps]):
        for name in alternate(list(runs), i):
            times[name].append(timed(sync, lambda: runs[name](prompt)))
    med = {name: statistics.median(values) for name, values in times.items()}
    stats = sv.analyze(lm, prompts[0]).answer["spade"]
    print(f"  analysis ({tokens} tokens, {reps} reps): median {med['analysis'] * 1000:.1f} ms, floor "
          f"{med['floor'] * 1000:.1f} ms; analysis/floor ratio {med['analysis'] / med['floor']:.2f} "
          f"(statistics {stats.entropy.dtype}, all finite: {bool(np.isfinite(stats.entropy).all())})")


def sweep_throughput(lm, sync, dataset, batch_size: int, reps: int) -> None:
    prepared, _ = prepare_examples(lm, dataset.examples)
    settings = SweepSettings(batch_size=batch_size, linear_spade="crossfit", tuned_lens=False)
    run_sweep(lm, dataset.head(min(len(dataset), 2 * batch_size)), settings, use_cache=False)  # warm-up
    forward_passes(lm, prepared[:batch_size], batch_size)
    runs = {"forward": lambda: forward_passes(lm, prepared, batch_size),
            "sweep": lambda: run_sweep(lm, dataset, settings, use_cache=False)}
    times = {name: [] for name in runs}
    for i in range(reps):
        for name in alternate(list(runs), i):
            times[name].append(timed(sync, runs[name]))
    n = len(prepared)
    forward_s, sweep_s = statistics.median(times["forward"]), statistics.median(times["sweep"])
    ratio, work = forward_s / sweep_s, work_ratio(lm, prepared)["plain"]
    print(f"  sweep of {n} examples (batch {batch_size}, {reps} rounds): {n / sweep_s:.1f} examples/s; plain "
          f"forward {n / forward_s:.1f} examples/s; throughput ratio forward/sweep {ratio:.2f}, multiply-add "
          f"ratio {work:.2f}, efficiency {ratio / work:.2f}")


def real_exit(lm, dataset, repeats: int) -> None:
    result = calibrated_real_exit(lm, dataset, 0.5, repeats=repeats)
    d = result.report.to_dict()
    print(f"  real exit on {result.n_heldout} held-out examples ({result.n_calibration} chose checkpoints "
          f"{result.checkpoints}, threshold {result.threshold:.3f}): measured speedup {d['measured_speedup']:.2f}x, "
          f"simulated {d['simulated_speedup']:.2f}x; mean exit layer {d['mean_exit_layer']:.1f} of "
          f"{d['num_layers']}; accuracy {d.get('accuracy', float('nan')):.3f} (full model "
          f"{d.get('full_accuracy', float('nan')):.3f}); {d['full_ms_per_example']:.1f} ms full, "
          f"{d['exit_ms_per_example']:.1f} ms exit per example")


def measure(name: str, args, dataset) -> None:
    cuda = args.device != "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        started = time.perf_counter()
        lm = sv.load_model(name, device=args.device, dtype=args.dtype, max_memory=args.max_memory)
    except SpadeVizError as err:
        print(f"{name}: not measured: {err}")
        return
    where = getattr(lm.model, "hf_device_map", None)
    print(f"{name}: {lm.num_layers} layers, {args.dtype}, loaded in {time.perf_counter() - started:.0f} s on "
          f"{lm.device}" + (f" (device map over {sorted({str(v) for v in where.values()})})" if where else "")
          + (", weights offloaded" if lm.offloaded else ""))
    analysis_vs_floor(lm, sync, args.reps, args.tokens)
    sweep_throughput(lm, sync, dataset, args.batch_size, args.rounds)
    real_exit(lm, dataset, args.repeats)
    if cuda:
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    del lm
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None,
                        help=f"model to measure (repeatable; default: {sv.DEFAULT_MODEL} and the largest 1B-8B "
                             "causal LM in the local Hugging Face cache)")
    parser.add_argument("--device", default="auto", help="auto (the GPUs; default), cuda:N, or cpu to check the script")
    parser.add_argument("--dtype", default="bf16", choices=list(sv.DTYPES))
    parser.add_argument("--max-memory", default=None, help="as the CLI's --max-memory, e.g. 0=20GiB,cpu=60GiB")
    parser.add_argument("--task", default="capitals", help="built-in task for the sweep and the real exit")
    parser.add_argument("--limit", type=int, default=64, help="its first N examples (default 64)")
    parser.add_argument("--tokens", type=int, default=32, help="prompt length of the analysis (default 32)")
    parser.add_argument("--reps", type=int, default=10, help="analysis repetitions (default 10)")
    parser.add_argument("--rounds", type=int, default=4, help="sweep rounds (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="real-exit timing rounds (default 3)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU here (torch.cuda.is_available() is False); nothing measured "
              "(--device cpu checks the script on the CPU)")
        return

    torch.manual_seed(0)
    names = args.model
    if names is None:
        names = [sv.DEFAULT_MODEL]
        found = cached_causal_lm()
        if found is None:
            print(f"no causal LM of {SIZES[0] / 1e9:.0f}B-{SIZES[1] / 1e9:.0f}B parameters with safetensors weights "
                  "in the local Hugging Face cache: measuring the default model only (--model NAME adds one)")
        else:
            repo_id, folder, params = found
            print(f"from the local Hugging Face cache: {repo_id} ({params / 1e9:.1f}B parameters)")
            names.append(str(folder))
    device = torch.cuda.get_device_name() if args.device != "cpu" else "cpu"
    print(f"torch {torch.__version__} on {device} ({torch.cuda.device_count() if args.device != 'cpu' else 0} "
          f"GPU(s)); task '{args.task}', first {args.limit} examples")
    dataset = load_builtin(args.task).head(args.limit)
    for name in names:
        measure(name, args, dataset)


if __name__ == "__main__":
    main()
