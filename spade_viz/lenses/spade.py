"""SPADE: decode layer l by continuing only the `<s>` and `<a>` rows through blocks l+1..L.

Exactness shortcut (DESIGN.md 2): under causal attention the `<s>` row never sees later
tokens, so its keys and values at every block are those of a one-token pass on `<s>`
alone. SPADE at layer l is therefore the single `<a>` row, injected after block l, attending
to that cached `<s>` and to itself. All start layers (and all examples of a dataset) go in
one batched call of the model itself: a forward hook on block l-1 swaps in the saved state
of every row that starts at layer l. Rows that start late run a few wasted blocks on one
token; in return every architecture works through its own forward, masks and caches.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from ..models.loading import LoadedModel

POSITION_MODES = ("original", "renumbered")


def _bos_cache(lm: LoadedModel):
    """Keys/values of `<s>` alone at position 0, computed once per model."""
    cache = getattr(lm, "_spade_bos_cache", None)
    if cache is None:
        ids = torch.tensor([[lm.bos_id]], device=lm.device)
        with torch.no_grad():
            cache = lm.model(input_ids=ids, position_ids=torch.zeros_like(ids), use_cache=True).past_key_values
        lm._spade_bos_cache = cache
    return cache


@contextmanager
def inject_states(lm: LoadedModel, states: torch.Tensor, start_layers: torch.Tensor):
    """While active, row r of the batch leaves block start_layers[r]-1 holding states[r] (all its tokens)."""
    handles = []
    for layer in sorted(set(start_layers.tolist())):
        if layer == 0:
            continue  # layer 0 is the embedding the model computes itself
        rows = (start_layers == layer).nonzero().squeeze(-1)

        def swap(_module, _inputs, output, rows=rows):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden.clone()
            hidden[rows] = states[rows].to(hidden.dtype).view_as(hidden[rows])
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handles.append(lm.adapter.blocks[layer - 1].register_forward_hook(swap))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def continue_rows(
    lm: LoadedModel,
    states: torch.Tensor,
    start_layers: torch.Tensor,
    token_ids: torch.Tensor,
    positions: torch.Tensor,
    with_bos: bool | torch.Tensor = True,
) -> torch.Tensor:
    """Final-normed states after continuing each `<a>` row from its start layer to the top.

    states [R, d]: the row's residual h_l[T] (ignored for start layer 0, which embeds token_ids);
    start_layers [R] in 0..L-1; positions [R]: the position id the `<a>` row gets;
    with_bos: True/False, or [R] booleans: rows without `<s>` (the ablation) mask its key out,
    which is exactly the one-row pass, so both kinds share one call.
    Returns [R, d'] = what the unembedding reads (apply `lm.adapter.head`).
    """
    rows = states.shape[0]
    device = lm.device
    keep_bos = torch.as_tensor(with_bos, device=device).expand(rows)
    kwargs = {}
    if keep_bos.any():
        cache = copy.deepcopy(_bos_cache(lm))
        cache.batch_repeat_interleave(rows)
        kwargs["past_key_values"] = cache
        kwargs["attention_mask"] = torch.stack([keep_bos.long(), torch.ones_like(keep_bos, dtype=torch.long)], 1)
    with torch.no_grad(), inject_states(lm, states.to(device).unsqueeze(1), start_layers.cpu()):
        # the decoder without its head: its last hidden state is final-normed, and no logits are
        # computed that the caller would throw away
        out = lm.model.base_model(
            input_ids=token_ids.to(device).view(rows, 1),
            position_ids=positions.to(device).view(rows, 1),
            use_cache=bool(kwargs),
            **kwargs,
        )
    return out.last_hidden_state[:, -1]


def spade_position(answer_position: int, mode: str, with_bos: bool = True) -> int:
    """Position id of the `<a>` row: its own (original) or the next after what is kept (renumbered)."""
    if mode not in POSITION_MODES:
        raise ValueError(f"spade positions must be one of {POSITION_MODES}, not {mode!r}")
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
    continued = continue_rows(
        lm,
        residuals.repeat(len(variants), 1),
        torch.arange(layers).repeat(len(variants)),
        torch.full((len(variants) * layers,), token_id),
        positions.repeat_interleave(layers),
        with_bos=with_bos,
    )
    top = final_hidden.to(continued.device, continued.dtype).view(1, -1)
    return [torch.cat([part, top]) for part in continued.split(layers)]
