"""How much does a full analysis cost beyond the work no implementation can avoid?

On the default model with a 32-token prompt, time `sv.analyze` against, measured in the same
process with plain torch:
  forward: one forward pass with hidden states;
  floor:   that pass plus a full-vocabulary log-softmax, entropy and top-5 at every
           (layer, position) logit-lens cell, batched over all layers at once (the fastest way
           measured; a floor done one layer at a time would flatter the ratio);
and, from that pass's hidden states, SPADE's own answer column (the answer row continued from every
layer through the remaining blocks, unembedded, then log-softmax, entropy and top-5), the part of the
analysis the floor does not contain. Repetitions are interleaved (the order rotating each round) and
each uses a different prompt; medians are reported as ratios, because absolute times on shared
machines drift.

    .venv/bin/python bench/analyze.py [--reps 9] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import spade_viz as sv  # noqa: E402

WORDS = ("river stone light music garden paper window market silver winter planet engine story "
         "forest bridge ocean letter mountain city teacher").split()


def make_prompt(lm, rng: random.Random, tokens: int) -> str:
    """A prompt of exactly `tokens` tokens (with `<s>`), different each call."""
    words = []
    while len(lm.encode(" ".join(words))) < tokens:
        words.append(rng.choice(WORDS))
    ids = lm.encode(" ".join(words))[1:tokens]
    return lm.tokenizer.decode(ids)


def forward(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)


def floor(lm, ids):
    """Forward + log-softmax, entropy and top-5 over every (layer, position) of the logit lens, done the
    fastest honest way measured: all layers' logits in one batched product, one fused pass each after."""
    with torch.no_grad():
        out = forward(lm, ids)
        hidden = torch.stack(out.hidden_states[:-1])[:, 0]  # [L, P, d]
        logits = torch.cat([lm.adapter.logit_lens(hidden), out.logits]).float()  # [L+1, P, V]
        logp = torch.log_softmax(logits, -1)
        (-(logp.exp() * logp).sum(-1)).sum().item()
        logp.topk(5, -1)


def spade_column(lm, out, ids):
    """SPADE at the answer position for every layer, from a finished pass `out` (what `sv.analyze`
    adds to the floor's work): the continuation, the unembedding and the statistics of its rows."""
    from spade_viz.lenses.spade import spade_final_states

    with torch.no_grad():
        residuals = torch.stack([h[0, -1] for h in out.hidden_states[:-1]])  # [L, d]
        (states,) = spade_final_states(lm, residuals, out.hidden_states[-1][0, -1], ids[-1], len(ids) - 1)
        logp = torch.log_softmax(lm.adapter.head(states).float(), -1)
        (-(logp.exp() * logp).sum(-1)).sum().item()
        logp.topk(5, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sv.DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()

    torch.manual_seed(0)
    lm = sv.load_model(args.model)
    rng = random.Random(0)
    prompts = [make_prompt(lm, rng, args.tokens) for _ in range(args.reps + 1)]
    passes = {p: forward(lm, torch.tensor([lm.encode(p)])) for p in prompts}  # SPADE's column starts from one
    runs = {
        "forward": lambda p: forward(lm, torch.tensor([lm.encode(p)])),
        "floor": lambda p: floor(lm, torch.tensor([lm.encode(p)])),
        "analysis": lambda p: sv.analyze(lm, p),
        "spade": lambda p: spade_column(lm, passes[p], lm.encode(p)),
    }
    times = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run(prompts[-1])
    names = list(runs)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            start = time.perf_counter()
            runs[name](prompts[rep])
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"model {lm.name}, {args.tokens}-token prompts, {args.reps} interleaved reps, "
          f"{torch.get_num_threads()} threads")
    for name, value in med.items():
        print(f"  median {name:<9} {value * 1000:8.1f} ms")
    print(f"analysis/forward ratio: {med['analysis'] / med['forward']:.2f}")
    print(f"analysis/floor ratio: {med['analysis'] / med['floor']:.2f}")
    print(f"SPADE's answer column ({lm.num_layers} rows continued, unembedded, their statistics) / floor: "
          f"{med['spade'] / med['floor']:.2f}")


if __name__ == "__main__":
    main()
