"""Sweep throughput against plain batched forward passes over the same examples.

On the default model and a built-in task, time in the same process:
  forward: plain batched forward passes (`model(input_ids, attention_mask)`: logits at every
           position, as a user would run the model) over the same batches the sweep makes
           (examples sorted by length, right-padded, same batch size);
  sweep:   `run_sweep` without its cache (logit lens, SPADE at every layer, linear SPADE
           cross-fitted; every statistic over the vocabulary).
The work is cut in slices of one batch; per slice the forward, the sweep and the lean forward
run back to back (interleaved), and the printed ratio is the median over slices and rounds of
forward time / sweep time, because absolute times on a shared machine drift (each slice's sweep
cross-fits linear SPADE within the slice). Also printed: a leaner forward that computes logits
only for the last position (`logits_to_keep=1`), the sweep's breakdown, CPU-time ratios, and
the ratio of multiply-adds (what the ratio would be if all work ran at one speed).

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
from spade_viz.engine import batches, prepare_examples  # noqa: E402
from spade_viz.sweep import SweepSettings, run_sweep  # noqa: E402


def forward_passes(lm, prepared, batch_size: int, lean: bool = False) -> None:
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.bos_id
    with torch.no_grad():
        for batch in batches(prepared, batch_size):
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

    # Work in slices of one batch each: per slice, forward / sweep / lean forward back to back, so a
    # change of load on a shared machine hits all three alike; then medians over slices and rounds.
    slices = [examples[start : start + args.batch_size] for start in range(0, len(examples), args.batch_size)]
    slices = [part for part in slices if len(part) >= 2]
    warm = slices[0]
    forward_passes(lm, prepare_examples(lm, warm)[0], args.batch_size)  # warm-up
    run_sweep(lm, Dataset("warm", warm, (), "warm"), settings, use_cache=False)
    wall = {"forward": [], "sweep": [], "forward_lean": []}
    cpu = {name: [] for name in wall}
    parts: list[dict] = []
    for rep in range(args.reps):
        for index, part in enumerate(slices):
            sub = Dataset(dataset.name, part, (), f"{dataset.source_hash}:{rep}:{index}")
            sub_prepared = prepare_examples(lm, part)[0]
            jobs = {
                "forward": lambda: forward_passes(lm, sub_prepared, args.batch_size),
                "sweep": lambda: parts.append(run_sweep(lm, sub, settings, use_cache=False).info["timings_s"]),
                "forward_lean": lambda: forward_passes(lm, sub_prepared, args.batch_size, lean=True),
            }
            for name, job in jobs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                job()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    pairs = len(wall["sweep"])
    paired = [wall["forward"][i] / wall["sweep"][i] for i in range(pairs)]
    paired_lean = [wall["forward_lean"][i] / wall["sweep"][i] for i in range(pairs)]
    for name, values in wall.items():
        print(f"{name:>13}: median {statistics.median(values):.2f} s wall, {statistics.median(cpu[name]):.2f} s cpu "
              f"per slice of {args.batch_size} (total wall {sum(values):.1f} s over {pairs} slices)")
    print("sweep breakdown (median wall s per slice): " + ", ".join(
        f"{key} {statistics.median(p[key] for p in parts):.2f}" for key in parts[0]))
    print(f"totals: forward/sweep {sum(wall['forward']) / sum(wall['sweep']):.2f} wall, "
          f"{sum(cpu['forward']) / sum(cpu['sweep']):.2f} cpu; lean forward/sweep "
          f"{sum(wall['forward_lean']) / sum(wall['sweep']):.2f} wall")
    print(f"paired ratios per slice: {', '.join(f'{r:.2f}' for r in paired)}")
    work = work_ratio(lm, prepared)
    print(f"multiply-add ratio forward/sweep: {work['plain']:.2f} (lean forward/sweep {work['lean']:.2f}): the "
          "throughput ratio if every multiply-add ran at one speed")
    print(f"sweep/lean-forward throughput ratio: {statistics.median(paired_lean):.2f}")
    print(f"sweep/forward throughput ratio: {statistics.median(paired):.2f}")


if __name__ == "__main__":
    main()
