"""One position of an analysed prompt read in full: every decoder's top-k at every layer, and the
probability and rank of pinned tokens across the layers.

`Analysis` keeps top-5 per cell; a panel wants 10 and any pinned token. Both come exactly from
the states the analysis kept, decoded again at one position: the final-normed states every
decoder kept at the answer, or, at another position, the logit lens from the kept residuals and
SPADE continued from them (`spade_final_states`, one batched call of L rows). Layer L is the
model's own output (`head(final_hidden)`), so a trajectory ends at the model's softmax probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis import Analysis, resolve_target
from ..decoders import ordered
from ..errors import InputError, check_int
from ..lenses.affine import AffineLens
from ..lenses.spade import spade_final_states
from ..models.loading import LoadedModel, operation

MAX_PINS = 5
MAX_K = 50


@dataclass
class PositionReading:
    """Every decoder at one position: top-k per layer and the pinned tokens' trajectories."""

    position: int
    num_layers: int
    top_ids: dict[str, np.ndarray]  # decoder -> int64 [L+1, k]
    top_probs: dict[str, np.ndarray]  # decoder -> float32 [L+1, k]
    pins: dict[str, int]  # pin as given -> its token id
    pin_probs: dict[str, dict[str, np.ndarray]]  # pin -> decoder -> float32 [L+1]
    pin_ranks: dict[str, dict[str, np.ndarray]]  # pin -> decoder -> int64 [L+1]; 1 = the top token
    vocab: dict[int, str]

    @property
    def decoders(self) -> list[str]:
        return list(self.top_ids)

    def token(self, token_id: int) -> str:
        """The text of a token id of the reading (a top token or a pin)."""
        return self.vocab[int(token_id)]

    def top(self, decoder: str, layer: int) -> list[tuple[int, str, float]]:
        """(token id, token text, probability) of the decoder's top-k at `layer`, most probable first."""
        if decoder not in self.top_ids:
            raise InputError(f"no decoder {decoder!r} at position {self.position} (have {', '.join(self.top_ids)})")
        layer = check_int("layer", layer, 0, self.num_layers)
        return [(int(i), self.vocab[int(i)], float(p))
                for i, p in zip(self.top_ids[decoder][layer], self.top_probs[decoder][layer])]

    def trajectories(self, metric: str = "prob") -> dict[str, dict[str, list[float]]]:
        """{pin: {decoder: [value at layer 0..L]}}: `metric` "prob" or "rank"."""
        if metric not in ("prob", "rank"):
            raise InputError(f"metric must be 'prob' or 'rank', not {metric!r}")
        table = self.pin_probs if metric == "prob" else self.pin_ranks
        return {pin: {d: [v.item() for v in values] for d, values in per.items()} for pin, per in table.items()}


def position_states(lm: LoadedModel, analysis: Analysis, position: int,
                    lenses: Mapping[str, AffineLens] | None = None) -> dict[str, torch.Tensor]:
    """Final-normed states [L+1, d'] per decoder at `position`, which the head turns into logits.

    At the answer: every decoder the analysis has (kept, no model call). Elsewhere: the logit lens,
    SPADE (position 0 is `<s>`, with nothing to drop: the model's own output at every layer), and
    a tuned lens when it is in the analysis's grids and given in `lenses`."""
    if not isinstance(analysis, Analysis):
        raise InputError(f"read_position needs an Analysis from analyze, not {type(analysis).__name__}")
    if analysis.num_layers != lm.num_layers or analysis.residuals.shape[-1] != lm.model.config.hidden_size:
        raise InputError(f"this analysis is of another model ({analysis.model_name}), not of {lm.name}")
    position = check_int("position", position, 0, len(analysis.tokens) - 1)
    if position == analysis.answer_position:
        return {name: states.to(lm.device, lm.dtype) for name, states in analysis.answer_states.items()}
    residuals = analysis.residuals[:, position].to(lm.device, lm.dtype)
    final = analysis.final_hidden[position : position + 1].to(lm.device, lm.dtype)
    out = {"logit_lens": torch.cat([lm.adapter.finalize(residuals), final.to(lm.adapter.output_device)])}
    tuned = (lenses or {}).get("tuned_lens")
    if tuned is not None and "tuned_lens" in analysis.grids:
        tuned.check_matches(lm)
        out["tuned_lens"] = torch.cat([lm.adapter.finalize(tuned.apply(residuals)), final.to(lm.adapter.output_device)])
    if position == 0:
        out["spade"] = final.expand(lm.num_layers + 1, -1)
    else:
        (out["spade"],) = spade_final_states(lm, residuals, final[0], analysis.token_ids[position], position,
                                             analysis.spade_positions)
    return out


def _pins(lm: LoadedModel, pins: Sequence[str | int]) -> dict[str, int]:
    if isinstance(pins, (str, int)) or len(pins) > MAX_PINS:
        raise InputError(f"pins are a list of at most {MAX_PINS} tokens (text, '#id' or an id)")
    resolved = {}
    for pin in pins:
        if isinstance(pin, str) and not pin:
            raise InputError("a pinned token is empty: give its text (with its leading space) or #id")
        resolved[str(pin)] = resolve_target(lm, pin, 0)
    return resolved


@operation
def read_position(lm: LoadedModel, analysis: Analysis, position: int | None = None, pins: Sequence[str | int] = (),
                  k: int = 10, lenses: Mapping[str, AffineLens] | None = None) -> PositionReading:
    """Top-`k` of every decoder at every layer of `position` (default: the answer), and the
    probability and rank at every layer of each pinned token (text, '#id' or id; at most 5)."""
    k = check_int("k", k, 1, MAX_K)
    position = analysis.answer_position if position is None else position
    resolved = _pins(lm, pins)
    with torch.no_grad():
        states = position_states(lm, analysis, position, lenses)
        top_ids, top_probs = {}, {}
        pin_probs: dict[str, dict] = {pin: {} for pin in resolved}
        pin_ranks: dict[str, dict] = {pin: {} for pin in resolved}
        for name in ordered(states):
            logprobs = torch.log_softmax(lm.adapter.head(states[name]).float(), dim=-1)  # [L+1, V]
            top = logprobs.topk(k, dim=-1)
            top_ids[name], top_probs[name] = top.indices.cpu().numpy(), top.values.exp().cpu().numpy()
            for pin, token_id in resolved.items():
                picked = logprobs[:, token_id : token_id + 1]
                pin_probs[pin][name] = picked[:, 0].exp().cpu().numpy()
                pin_ranks[pin][name] = ((logprobs > picked).sum(-1) + 1).cpu().numpy()
    seen = set(resolved.values()) | {int(i) for ids in top_ids.values() for i in np.unique(ids)}
    vocab = {i: analysis.vocab.get(i) or lm.token_str(i) for i in seen}
    return PositionReading(int(position), analysis.num_layers, top_ids, top_probs, resolved, pin_probs, pin_ranks,
                           vocab)
