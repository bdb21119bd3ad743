"""Sweep throughput against plain batched forward passes over the same examples.

On the default model and a built-in task, time in the same process:
  forward: plain batched forward passes (`model(input_ids, attention_mask)`: logits at every
           position, as a user would run the model) over the same batches the sweep makes
           (examples sorted by length, right-padded, same batch size);
  sweep:   `run_sweep` without its cache (logit lens, SPADE at every layer, linear SPADE
           cross-fitted; every statistic over the vocabulary).
Repetitions are interleaved (forward, sweep, forward, sweep...) and medians are compared,
because absolute times on a shared machine drift. Also printed: a leaner forward that
computes logits only for the last position (`logits_to_keep=1`), and the sweep's breakdown.

Throughput ratio = forward time / sweep time (examples per second of the sweep over those of
the forward). The goal is >= 0.7.

    .venv/bin/python bench/sweep.py [--dataset capitals] [--limit 64] [--reps 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import spade_viz as sv  # noqa: E402
from spade_viz.data import Dataset, load_builtin  # noqa: E402
from spade_viz.sweep import SweepSettings, _batches, prepare_examples, run_sweep  # noqa: E402


def forward_passes(lm, prepared, batch_size: int, lean: bool = False) -> None:
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.bos_id
    with torch.no_grad():
        for batch in _batches(prepared, batch_size):
            seqs = [prepared[i].token_ids for i in batch]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(seqs):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            extra = {"logits_to_keep": 1} if lean else {}
            lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False, **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sv.DEFAULT_MODEL)
    parser.add_argument("--dataset", default="capitals", help="built-in task (default capitals)")
    parser.add_argument("--limit", type=int, default=64, help="first N examples (default 64; 0 = all)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    lm = sv.load_model(args.model)
    full = load_builtin(args.dataset)
    examples = full.examples[: args.limit] if args.limit else full.examples
    dataset = Dataset(full.name, examples, (), f"{full.source_hash}:{len(examples)}")
    prepared, _ = prepare_examples(lm, dataset.examples)
    settings = SweepSettings(batch_size=args.batch_size, linear_spade="crossfit", tuned_lens=False)
    tokens = sum(len(p.token_ids) for p in prepared)
    print(f"{lm.name}: {lm.num_layers} layers; '{dataset.name}': {len(prepared)} examples, "
          f"{tokens / len(prepared):.1f} tokens each on average; batch size {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}")

    forward_passes(lm, prepared[: args.batch_size], args.batch_size)  # warm-up
    run_sweep(lm, Dataset("warm", dataset.examples[:4], (), "warm"), settings, use_cache=False)
    times = {"forward": [], "forward_lean": [], "sweep": []}
    parts = []
    for _ in range(args.reps):
        start = time.perf_counter()
        forward_passes(lm, prepared, args.batch_size)
        times["forward"].append(time.perf_counter() - start)
        start = time.perf_counter()
        result = run_sweep(lm, dataset, settings, use_cache=False)
        times["sweep"].append(time.perf_counter() - start)
        parts.append(result.info["timings_s"])
        start = time.perf_counter()
        forward_passes(lm, prepared, args.batch_size, lean=True)
        times["forward_lean"].append(time.perf_counter() - start)
    med = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:>13}: median {med[name]:.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    keys = parts[0].keys()
    print("sweep breakdown (median s): " + ", ".join(
        f"{key} {statistics.median(p[key] for p in parts):.2f}" for key in keys))
    print(f"sweep/lean-forward throughput ratio: {med['forward_lean'] / med['sweep']:.2f}")
    print(f"sweep/forward throughput ratio: {med['forward'] / med['sweep']:.2f}")


if __name__ == "__main__":
    main()
