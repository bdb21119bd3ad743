"""Statistics of a decoded next-token distribution, computed in one pass over the vocabulary.

Every decoder (logit lens, SPADE, linear SPADE, tuned lens) ends in logits; these are the
numbers the views and the early-exit simulation read. Entropy and KL are in nats.
KL is KL(final || decoded): how many nats the layer's guess loses against the model's answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DecodeStats:
    """Per (layer, position) statistics of one decoder; arrays are [layers, positions, ...]."""

    top_ids: np.ndarray  # int64 [layers, positions, k]
    top_probs: np.ndarray  # float32 [layers, positions, k]
    entropy: np.ndarray  # float32 [layers, positions]
    kl_to_final: np.ndarray  # float32 [layers, positions]
    target_prob: np.ndarray  # float32 [layers, positions]
    target_rank: np.ndarray  # int64 [layers, positions]; 1 = the top token

    @property
    def top1(self) -> np.ndarray:
        return self.top_ids[..., 0]

    def column(self, position: int) -> "DecodeStats":
        """The same statistics restricted to one position (kept 2-D: [layers, 1])."""
        pick = slice(position, position + 1) if position != -1 else slice(-1, None)
        return DecodeStats(**{name: value[:, pick] for name, value in self.__dict__.items()})

    @staticmethod
    def stack(rows: list[dict[str, torch.Tensor]], shape: tuple[int, int]) -> "DecodeStats":
        """Join chunked results (each a dict of [n, ...] tensors) into [layers, positions] arrays."""
        joined = {key: torch.cat([row[key] for row in rows]).cpu().numpy() for key in rows[0]}
        return DecodeStats(**{key: value.reshape(*shape, *value.shape[1:]) for key, value in joined.items()})


def distribution_stats(
    logits: torch.Tensor, final_logprobs: torch.Tensor, target_ids: torch.Tensor, k: int
) -> dict[str, torch.Tensor]:
    """Stats of softmax(logits) per row. logits [n, V]; final_logprobs and target_ids broadcast to it."""
    logits = logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    probs = logprobs.exp()
    entropy = -(probs * logprobs).sum(-1)
    kl = (final_logprobs.exp() * (final_logprobs - logprobs)).sum(-1)
    top = logits.topk(k, dim=-1)
    target_ids = target_ids.to(logits.device).expand(logits.shape[:-1]).unsqueeze(-1)
    target_logit = logits.gather(-1, target_ids)
    return {
        "top_ids": top.indices,
        "top_probs": (top.values - torch.logsumexp(logits, -1, keepdim=True)).exp(),
        "entropy": entropy,
        "kl_to_final": kl.clamp_min(0.0),
        "target_prob": logprobs.gather(-1, target_ids).squeeze(-1).exp(),
        "target_rank": (logits > target_logit).sum(-1) + 1,
    }
