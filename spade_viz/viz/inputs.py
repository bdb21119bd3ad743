"""What the prompt figures read, as structural types: `spade_viz.analysis.Analysis` (with its
`DecodeStats`) is one such object, and a test can build another from a few numpy arrays, so the
figures need neither a model nor torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np


class LayerStats(Protocol):
    """One decoder's statistics, arrays [layers, positions, ...] (see `spade_viz.lenses.stats.DecodeStats`)."""

    top_ids: np.ndarray  # int [layers, positions, k]
    top_probs: np.ndarray  # float [layers, positions, k]
    entropy: np.ndarray  # float [layers, positions]
    kl_to_final: np.ndarray
    target_prob: np.ndarray
    target_rank: np.ndarray  # int, 1 = the top token

    @property
    def top1(self) -> np.ndarray: ...


class PromptLayers(Protocol):
    """One prompt decoded at every layer (see `spade_viz.analysis.Analysis`)."""

    num_layers: int
    tokens: Sequence[str]
    answer_position: int
    top_k: int
    target_id: int
    grids: Mapping[str, LayerStats]  # decoder -> [L+1, positions]
    answer: Mapping[str, LayerStats]  # decoder -> [L+1, 1] at the answer position

    @property
    def decoders(self) -> list[str]: ...

    def token(self, token_id: int) -> str:
        """The string of a token id that appears in the statistics."""
        ...

    def first_stable_layer(self, decoder: str) -> int | None:
        """First layer from which the decoder's top-1 equals the final answer and stays equal."""
        ...
