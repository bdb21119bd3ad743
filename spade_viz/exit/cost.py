"""Compute accounting for early exit, in block-token units, and checkpoint layouts.

Convention (shown in the app and the CLI):

* One **unit** = one decoder block applied to one token. A block's cost is counted by its
  parameter count (multiply-adds per token); the attention-score work, which grows with the
  prompt length, is left out (small for prompts of a few hundred tokens or less).
* **Full forward pass** of an example with ``n`` tokens (with ``<s>``): ``L * n`` units plus one
  unembedding of the answer row (``head`` = d x V parameters, expressed in blocks).
* **Hybrid exit at layer l** (l < L): ``l * n`` full-sequence blocks, ``(L - l) * c`` one-token
  blocks for the SPADE continuation of the ``<a>`` row (``c = continuation_tokens``: 1 by default,
  since the ``<s>`` row's keys and values are the same for every prompt and cached once; the
  paper charges 2), one unembedding for the answer, plus the **checkpoint overheads**: every
  checkpoint passed (the exit one included) costs one linear-SPADE matvec (d x d) and one
  unembedding for its entropy: d x V, or d x C when the example has C answer choices (the
  entropy is then over the choices, and only their C rows of the unembedding are read).
* **Never confident**: the full model answers: ``L * n + head`` plus the overheads of all
  checkpoints passed (there is no saving, only the overhead).
* **Classic early exit** (logit-lens confidence): each checkpoint costs one unembedding, and
  the exit answer is that unembedding's top token: ``l * n`` plus the checkpoint overheads.
* **Fixed layer / oracle SPADE**: ``l * n + (L - l) * c + head``, no checkpoints.

The compute fraction of an example is its cost over its own full-pass cost; a dataset's
compute fraction is the mean of its examples' fractions, and speedup = 1 / that mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError, check_int, check_number


@dataclass(frozen=True)
class CostModel:
    """Parameter counts that turn exits into block-token units (see the module doc)."""

    block_params: float  # parameters of one decoder block (the mean over blocks)
    head_params: float  # one unembedding of one row: d_model x vocab
    map_params: float  # one linear-SPADE map: d_out x d_in (+ bias)
    continuation_tokens: float = 1.0  # rows continued through the remaining blocks (paper: 2)
    include_head: bool = True  # charge the answer's unembedding in every pass
    vocab_size: float | None = None  # rows of the unembedding (to charge C of V rows for choice tasks)

    def __post_init__(self):
        if not self.block_params > 0:
            raise InputError("the cost model needs a positive block parameter count")
        if self.head_params < 0 or self.map_params < 0 or self.continuation_tokens < 0:
            raise InputError("cost model parameter counts must not be negative")
        for name in ("block_params", "head_params", "map_params", "continuation_tokens", "vocab_size"):
            value = getattr(self, name)
            if value is not None:
                check_number(f"the cost model's {name}", value, 0)  # NaN and infinity: refused

    @property
    def head_units(self) -> float:
        return self.head_params / self.block_params

    @property
    def map_units(self) -> float:
        return self.map_params / self.block_params

    @property
    def answer_head_units(self) -> float:
        return self.head_units if self.include_head else 0.0

    def with_options(self, **changes) -> "CostModel":
        """A copy with some fields changed (e.g. `continuation_tokens=2`, the paper's charge)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-ready fields, with the derived head and map costs in block units."""
        return {
            "block_params": float(self.block_params),
            "head_params": float(self.head_params),
            "map_params": float(self.map_params),
            "continuation_tokens": float(self.continuation_tokens),
            "include_head": bool(self.include_head),
            "vocab_size": None if self.vocab_size is None else float(self.vocab_size),
            "head_units": self.head_units,
            "map_units": self.map_units,
        }

    @classmethod
    def from_dict(cls, data: dict, **overrides) -> "CostModel":
        """From parameter counts (a sweep's metadata, `to_dict`); overrides that are not None win."""
        try:
            values = {key: float(data[key]) for key in ("block_params", "head_params", "map_params")}
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"cost parameters need block_params, head_params and map_params ({err})") from None
        if "continuation_tokens" in data:
            values["continuation_tokens"] = float(data["continuation_tokens"])
        if data.get("vocab_size") is not None:
            values["vocab_size"] = float(data["vocab_size"])
        if "include_head" in data:
            values["include_head"] = str(data["include_head"]).strip().lower() in ("1", "true", "yes")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_lm(cls, lm, **options) -> "CostModel":
        """Counted on a loaded model (`LoadedModel.parameter_counts`)."""
        return cls.from_dict(lm.parameter_counts(), **options)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoints:
    """Where the exit test runs: every `every`-th layer from `start` (or an explicit list), below L.

    Layer l means the residual after block l (layer 0 = the embeddings).
    """

    every: int = 1
    start: int = 1
    layers: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "every", check_int("checkpoints: the step", self.every, 1))
        object.__setattr__(self, "start", check_int("checkpoints: the first layer", self.start, 0))
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
                raise InputError(f"checkpoints: layers is a list of layer numbers, not {self.layers!r}")
            object.__setattr__(self, "layers", tuple(check_int("checkpoints: a layer", layer, 0)
                                                     for layer in self.layers))

    def mask(self, num_layers: int) -> np.ndarray:
        """Boolean [L+1]: True at checkpoint layers (never at L, where the model is done anyway)."""
        mask = np.zeros(num_layers + 1, dtype=bool)
        if self.layers is not None:
            picked = [layer for layer in self.layers if 0 <= layer < num_layers]
            mask[picked] = True
        else:
            mask[self.start : num_layers : self.every] = True
        return mask

    def describe(self) -> str:
        """The layout in words, for reports: e.g. 'every 2 layers from 4'."""
        if self.layers is not None:
            return "layers " + ",".join(map(str, self.layers))
        if self.every == 1:
            return f"every layer from {self.start}"
        return f"every {self.every} layers from {self.start}"

    @classmethod
    def parse(cls, text: str | None) -> "Checkpoints":
        """'all', 'every:K', 'from:M', 'every:K,from:M' (either order) or 'layers:3,5,8'."""
        text = (text or "all").strip().lower().replace(" ", "")
        if text in ("", "all"):
            return cls()
        if text.startswith("layers:"):
            try:
                layers = tuple(sorted({int(part) for part in text[7:].split(",") if part}))
            except ValueError:
                raise InputError(f"checkpoints {text!r}: layers must be integers, e.g. layers:8,12,16") from None
            if not layers:
                raise InputError("checkpoints: 'layers:' needs at least one layer")
            return cls(layers=layers)
        every, start = 1, 1
        for part in text.split(","):
            match = re.fullmatch(r"(every|from):(\d+)", part)
            if not match:
                raise InputError(
                    f"checkpoints {text!r} not understood: use all, every:K, from:M, every:K,from:M or layers:A,B,..."
                )
            if match.group(1) == "every":
                every = int(match.group(2))
            else:
                start = int(match.group(2))
        return cls(every=every, start=start)


# --------------------------------------------------------------------------------------------
# Cost tables: [N, L+1] cost of each example exiting at each layer
# --------------------------------------------------------------------------------------------


def full_cost(n_tokens: np.ndarray, num_layers: int, cost: CostModel) -> np.ndarray:
    """[N] block-token units of each example's full forward pass."""
    return num_layers * np.asarray(n_tokens, dtype=np.float64) + cost.answer_head_units


def continuation_costs(n_tokens: np.ndarray, num_layers: int, cost: CostModel) -> np.ndarray:
    """[N, L+1]: SPADE from layer l (full-sequence blocks, the one-token continuation, one head); l=L is
    the full pass. No checkpoint overhead: the fixed-layer and oracle baselines."""
    layers = np.arange(num_layers + 1, dtype=np.float64)
    n = np.asarray(n_tokens, dtype=np.float64)[:, None]
    table = layers * n + (num_layers - layers) * cost.continuation_tokens + cost.answer_head_units
    return table


def checkpoint_head_share(cost: CostModel, n_choices: np.ndarray | None, n_examples: int) -> np.ndarray:
    """[N] share of a full unembedding one checkpoint reads: C / V for an example with C choices, else 1."""
    share = np.ones(n_examples)
    if n_choices is not None and cost.vocab_size:
        choices = np.asarray(n_choices, dtype=np.float64)
        share = np.where(choices > 0, np.minimum(choices / cost.vocab_size, 1.0), 1.0)
    return share


def hybrid_costs(n_tokens: np.ndarray, num_layers: int, cost: CostModel, mask: np.ndarray,
                 n_choices: np.ndarray | None = None) -> np.ndarray:
    """[N, L+1]: hybrid exit at layer l (column L = never confident, all checkpoint overheads paid)."""
    share = checkpoint_head_share(cost, n_choices, len(n_tokens))
    per_checkpoint = cost.map_units + cost.head_units * share[:, None]
    passed = np.cumsum(mask).astype(np.float64)[None, :]  # checkpoints at layers <= l
    return continuation_costs(n_tokens, num_layers, cost) + passed * per_checkpoint


def classic_costs(n_tokens: np.ndarray, num_layers: int, cost: CostModel, mask: np.ndarray,
                  n_choices: np.ndarray | None = None) -> np.ndarray:
    """[N, L+1]: logit-lens early exit: l full-sequence blocks plus one unembedding per checkpoint
    passed (the exit checkpoint's unembedding is the answer); column L = the full pass plus them all."""
    layers = np.arange(num_layers + 1, dtype=np.float64)
    n = np.asarray(n_tokens, dtype=np.float64)[:, None]
    share = checkpoint_head_share(cost, n_choices, len(n_tokens))
    passed = np.cumsum(mask).astype(np.float64)[None, :] * cost.head_units * share[:, None]
    table = layers * n + passed
    table[:, num_layers] += cost.answer_head_units
    return table
