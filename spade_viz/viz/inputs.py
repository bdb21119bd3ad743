"""What the prompt figures read, as structural types: `spade_viz.analysis.Analysis` (with its
`DecodeStats`) is one such object, and a test can build another from a few numpy arrays, so the
figures need neither a model nor torch."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from ..errors import InputError


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


_NEEDED = ("num_layers", "tokens", "answer_position", "grids", "answer", "decoders")


def reads_prompt_layers(func):
    """Check a figure builder's first argument (a `PromptLayers`, e.g. an Analysis) and the decoder
    names it is given (`decoder`, `decoders`, `a`, `b`), with InputError, before any drawing."""
    @functools.wraps(func)
    def checked(res, *args, **kwargs):
        if any(not hasattr(res, name) for name in _NEEDED):
            raise InputError(f"{func.__name__} needs an analysis (from spade_viz.analyze), not {type(res).__name__}")
        bound = _signature(func).bind(res, *args, **kwargs)
        names = [bound.arguments.get(k) for k in ("decoder", "a", "b")] + list(bound.arguments.get("decoders") or [])
        for name in names:
            if name is not None and name not in res.grids and name not in res.answer:
                raise InputError(f"this analysis has no decoder {name!r}: choose one of {', '.join(res.decoders)}")
        return func(res, *args, **kwargs)

    return checked


@functools.cache
def _signature(func):
    import inspect

    return inspect.signature(func)
