"""Synthetic sweep arrays with the shape of a real one, for the slider benchmark and tests."""

from __future__ import annotations

import numpy as np

from ..decoders import WITHOUT_SAVED_LENS
from .arrays import ExitArrays
from .cost import CostModel


def synthetic_arrays(n_examples: int = 1000, num_layers: int = 30, seed: int = 0, accuracy: float = 0.7) -> ExitArrays:
    """Each example "finds" its answer at a random layer: SPADE early, the logit lens late; entropies
    fall around that layer. The full model is right on `accuracy` of the examples."""
    rng = np.random.default_rng(seed)
    L = num_layers
    layers = np.arange(L + 1)[None, :]
    right = rng.random(n_examples) < accuracy
    found = {"spade": rng.integers(L // 3, L + 1, n_examples)}
    found["linear_spade"] = np.minimum(L, found["spade"] + rng.integers(0, 3, n_examples))
    found["logit_lens"] = np.minimum(L, found["spade"] + rng.integers(2, L // 3 + 3, n_examples))
    top1, correct, agree, entropy = {}, {}, {}, {}
    for name in WITHOUT_SAVED_LENS:  # a sweep of a model with no tuned lens saved
        knows = layers >= found[name][:, None]
        knows[:, L] = True
        agree[name] = knows
        correct[name] = knows & right[:, None]
        top1[name] = np.where(knows, np.where(right, " gold", " other")[:, None], " noise").astype(object)
        noise = rng.normal(0.0, 0.3, (n_examples, L + 1))
        entropy[name] = np.clip(np.where(knows, 0.8, 4.0) + noise - 0.05 * layers, 0.0, None)
    ids = np.array([f"ex-{i:05d}" for i in range(n_examples)], dtype=object)
    n_tokens = rng.integers(20, 60, n_examples)
    return ExitArrays(ids, n_tokens, L, top1, correct, agree, entropy, None, {})


def synthetic_cost(continuation_tokens: float = 1.0) -> CostModel:
    """Parameter counts of a LLaMA-7B-like model (block 202M, head 4096 x 32000, map 4096 x 4096)."""
    return CostModel(202_383_360.0, 4096.0 * 32000, 4096.0 * 4097, continuation_tokens)
