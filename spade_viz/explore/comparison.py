"""Two analyses side by side: two prompts (a fact and its counterfactual), or one prompt on two models.

Pure numpy over what the analyses hold: at the answer position, per decoder and layer, the entropy
and the target probability of each run and their difference (b - a, where both have that layer),
and per decoder the final answer and the first layer that gives it and keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..decoders import ordered
from ..errors import InputError


@dataclass
class Comparison:
    """Run a and run b at their answer positions (`compare_analyses`)."""

    names: tuple[str, str]  # how each run is called in the views ("prompt A", a model's name...)
    decoders: list[str]  # decoders both runs have, in reading order
    layers: pd.DataFrame  # decoder, layer, depth (layer / L), entropy_a/b, target_prob_a/b, d_entropy, d_target_prob
    summary: pd.DataFrame  # one row per decoder: final answer and first stable layer of each run
    same_depth: bool  # both have as many layers: layer l of one is layer l of the other


def _per_layer(res, name: str) -> pd.DataFrame:
    stats = res.answer[name]
    layers = np.arange(res.num_layers + 1)
    return pd.DataFrame({"layer": layers, "depth": layers / res.num_layers, "entropy": stats.entropy[:, 0],
                         "target_prob": stats.target_prob[:, 0]})


def compare_analyses(a, b, names: tuple[str, str] = ("A", "B")) -> Comparison:
    """The difference view of two analyses (any `Analysis`-shaped objects) at their answer positions."""
    if not hasattr(a, "answer") or not hasattr(b, "answer"):
        raise InputError("compare_analyses needs two analyses from analyze")
    common = ordered(name for name in a.answer if name in b.answer)
    frames, rows = [], []
    for name in common:
        left, right = _per_layer(a, name), _per_layer(b, name)
        joined = left.merge(right, on="layer", how="outer", suffixes=("_a", "_b"))
        joined["d_entropy"] = joined["entropy_b"] - joined["entropy_a"]
        joined["d_target_prob"] = joined["target_prob_b"] - joined["target_prob_a"]
        if a.num_layers != b.num_layers:  # layer l is another depth in each model: no difference
            joined[["d_entropy", "d_target_prob"]] = np.nan
        joined.insert(0, "decoder", name)
        frames.append(joined)
        rows.append({"decoder": name,
                     "final_answer_a": a.token(a.final_answer_id), "final_answer_b": b.token(b.final_answer_id),
                     "first_layer_a": a.first_stable_layer(name), "first_layer_b": b.first_stable_layer(name),
                     "layers_a": a.num_layers, "layers_b": b.num_layers,
                     "entropy_last_a": float(a.answer[name].entropy[-1, 0]),
                     "entropy_last_b": float(b.answer[name].entropy[-1, 0])})
    layers = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Comparison(tuple(names), common, layers, pd.DataFrame(rows), a.num_layers == b.num_layers)
