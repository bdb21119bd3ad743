"""SPADE: decode layer l by continuing only the `<s>` and `<a>` rows through blocks l+1..L.

Exactness shortcut (docs/method.md): under causal attention the `<s>` row never sees later
tokens, so its keys and values at every block are those of a one-token pass on `<s>` alone.
SPADE at layer l is therefore the single `<a>` row, injected after block l, attending to that
cached `<s>` and to itself (`engine.continue_rows`). All start layers (and all examples of a
dataset) go in one batched call of the model itself. Rows that start late run a few wasted
blocks on one token; in return every architecture works through its own forward, masks and caches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..engine import PreparedExample, batches, continue_rows, continue_rows_in_bands, read_rows
from ..errors import InputError
from ..models.loading import LoadedModel
from ..progress import Progress

POSITION_MODES = ("original", "renumbered")
_SPADE_CHUNK = 1024  # SPADE rows continued in one model call


def spade_position(answer_position: int, mode: str, with_bos: bool = True) -> int:
    """Position id of the `<a>` row: its own (original) or the next after what is kept (renumbered)."""
    if mode not in POSITION_MODES:
        raise InputError(f"spade_positions must be one of {', '.join(POSITION_MODES)}")
    if mode == "original":
        return answer_position
    return 1 if with_bos else 0


def spade_final_states(
    lm: LoadedModel,
    residuals: torch.Tensor,
    final_hidden: torch.Tensor,
    token_id: int,
    answer_position: int,
    mode: str = "original",
    variants: tuple[bool, ...] = (True,),
) -> list[torch.Tensor]:
    """SPADE for every layer 0..L at one answer position, as final-normed states [L+1, d'].

    residuals [L, d]: the full pass's raw h_l[T] for l < L; final_hidden [d']: its final-normed
    h_L[T], which is SPADE at layer L (the model's own output). One result per entry of
    `variants` (True: with `<s>`, False: the ablation without it), all from one batched call.
    """
    layers = lm.num_layers
    with_bos = torch.tensor(variants).repeat_interleave(layers)
    positions = torch.tensor([spade_position(answer_position, mode, keep) for keep in variants])
    continued = continue_rows(  # one call: for a few dozen rows, weight reads dominate and bands cost more
        lm,
        residuals.repeat(len(variants), 1),
        torch.arange(layers).repeat(len(variants)),
        torch.full((len(variants) * layers,), token_id),
        positions.repeat_interleave(layers),
        with_bos=with_bos,
    )
    top = final_hidden.to(continued.device, continued.dtype).view(1, -1)
    return [torch.cat([part, top]) for part in continued.split(layers)]


def spade_rows(
    lm: LoadedModel,
    residuals: torch.Tensor,
    layers: torch.Tensor,
    token_ids: torch.Tensor,
    answer_positions: torch.Tensor,
    mode: str = "original",
    chunk: int = _SPADE_CHUNK,
    groups: int = 5,
) -> torch.Tensor:
    """SPADE final-normed states [n, d'] of rows (h_l[T] [n, d], l [n], x_T [n], T [n]).

    Rows are grouped by start layer into about `groups` bands (`continue_rows_in_bands`).
    """
    if mode == "original":
        positions = answer_positions
    else:
        positions = torch.full_like(answer_positions, spade_position(0, mode, True))
    return continue_rows_in_bands(lm, residuals, layers, token_ids, positions, bands=groups, chunk=chunk)


@dataclass
class AnswerRows:
    """Residuals, the model's own final states and SPADE's states at examples' answer rows."""

    residuals: torch.Tensor  # [N, L, d] raw h_0..h_{L-1} at T
    final: torch.Tensor  # [N, d'] final-normed h_L at T (the model's own output)
    spade: torch.Tensor  # [N, L, d'] SPADE final-normed states for layers 0..L-1


def batch_answer_rows(lm: LoadedModel, batch: Sequence[PreparedExample], mode: str):
    """(residuals [B, L, d], final [B, d'], spade [B, L, d']) at the answer rows of one batch."""
    layers = lm.num_layers
    residuals, final = read_rows(lm, [p.token_ids for p in batch], [[p.answer_position] for p in batch])
    n = len(batch)
    states = spade_rows(
        lm,
        residuals.reshape(n * layers, -1),
        torch.arange(layers).repeat(n),
        torch.tensor([p.token_ids[-1] for p in batch]).repeat_interleave(layers),
        torch.tensor([p.answer_position for p in batch]).repeat_interleave(layers),
        mode,
    )
    return residuals, final, states.view(n, layers, -1)


def answer_rows(lm: LoadedModel, prepared: Sequence[PreparedExample], mode: str = "original",
                batch_size: int = 16, progress: Progress | None = None) -> AnswerRows:
    """Residuals, final states and SPADE states at the answer rows of `prepared`, in its order."""
    spade_position(0, mode)  # a clear error for a bad mode before any work
    n, done = len(prepared), 0
    parts: dict[int, tuple] = {}
    if progress:
        progress(0, n, "SPADE at the answer rows")
    for batch in batches(prepared, batch_size):
        res, fin, spade = batch_answer_rows(lm, [prepared[i] for i in batch], mode)
        for j, i in enumerate(batch):
            parts[i] = (res[j], fin[j], spade[j])
        done += len(batch)
        if progress:
            progress(done, n, "SPADE at the answer rows")
    return AnswerRows(*(torch.stack([parts[i][k] for i in range(n)]) for k in range(3)))
