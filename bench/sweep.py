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


def work_ratio(lm, prepared, groups: int = 5) -> dict:
    """Multiply-adds of the forward passes over those of the sweep (weights only, no attention scores).

    Sweep: the forward (residuals at every layer, the answer row unembedded once), SPADE rows in
    start-layer bands (a row of band b runs the blocks from the band's first layer up), and three
    full-vocabulary unembeddings per layer (logit lens, SPADE, linear SPADE plus its d x d map).
    """
    from spade_viz.exit.cost import CostModel

    cost = CostModel.from_lm(lm)
    layers, block, head = lm.num_layers, cost.block_params, cost.head_params
    width = -(-layers // groups)
    spade_blocks = sum(min(width, layers - start) * (layers - start) for start in range(0, layers, width))
    tokens = sum(len(p.token_ids) for p in prepared)
    n = len(prepared)
    lean = tokens * layers * block + n * head
    plain = tokens * layers * block + tokens * head
    sweep = lean + n * (spade_blocks * block + layers * (3 * head + cost.map_params))
    return {"plain": plain / sweep, "lean": lean / sweep}


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
    jobs = {
        "forward": lambda: forward_passes(lm, prepared, args.batch_size),
        "sweep": lambda: parts.append(run_sweep(lm, dataset, settings, use_cache=False).info["timings_s"]),
        "forward_lean": lambda: forward_passes(lm, prepared, args.batch_size, lean=True),
    }
    wall = {name: [] for name in jobs}
    cpu = {name: [] for name in jobs}
    parts: list[dict] = []
    for _ in range(args.reps):
        for name, job in jobs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            job()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    med = {name: statistics.median(values) for name, values in wall.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    for name, values in wall.items():
        print(f"{name:>13}: median {med[name]:.2f} s wall, {med_cpu[name]:.2f} s cpu  "
              f"(wall {', '.join(f'{v:.2f}' for v in values)})")
    print("sweep breakdown (median wall s): " + ", ".join(
        f"{key} {statistics.median(p[key] for p in parts):.2f}" for key in parts[0]))
    print(f"cpu-time ratios (less sensitive to other load): forward/sweep {med_cpu['forward'] / med_cpu['sweep']:.2f}, "
          f"lean forward/sweep {med_cpu['forward_lean'] / med_cpu['sweep']:.2f}")
    work = work_ratio(lm, prepared)
    print(f"multiply-add ratio forward/sweep: {work['plain']:.2f} (lean forward/sweep {work['lean']:.2f}): the "
          "throughput ratio if every multiply-add ran at one speed")
    print(f"sweep/lean-forward throughput ratio: {med['forward_lean'] / med['sweep']:.2f}")
    print(f"sweep/forward throughput ratio: {med['forward'] / med['sweep']:.2f}")


if __name__ == "__main__":
    main()
