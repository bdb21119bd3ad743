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
import threading
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


_SKIP = threading.local()
_SKIP_LOCK = threading.Lock()


@contextmanager
def _skipping_blocks(lm: LoadedModel, below: int):
    """While active, in this thread only, blocks 0..below-1 hand their input on unchanged.

    `continue_rows` runs every row through every block and swaps a row's state in after block
    l-1; a row that starts at layer l >= below loses nothing when the blocks before `below` do
    no work (their forward hooks, which do the swapping, still run). Other threads see the
    blocks as they are. (Replacing `forward` on the instance is the one way to skip a module
    that works through every architecture's own forward.)
    """
    blocks = lm.adapter.blocks
    with _SKIP_LOCK:
        users = getattr(lm, "_spade_skip_users", 0)
        if users == 0:
            for index, block in enumerate(blocks):
                block.forward = _passthrough(block.forward, index)
        lm._spade_skip_users = users + 1
    _SKIP.below = below
    try:
        yield
    finally:
        _SKIP.below = 0
        with _SKIP_LOCK:
            lm._spade_skip_users -= 1
            if lm._spade_skip_users == 0:
                for block in blocks:
                    block.__dict__.pop("forward", None)


def _passthrough(forward, index: int):
    def maybe_skip(*args, **kwargs):
        if index < getattr(_SKIP, "below", 0):
            return args[0] if args else kwargs["hidden_states"]
        return forward(*args, **kwargs)

    return maybe_skip


def _skip_is_exact(lm: LoadedModel) -> bool:
    """Whether skipping the blocks below a row's start layer leaves SPADE unchanged for this model
    (checked once per model on two rows; any difference or error turns the shortcut off)."""
    verdict = getattr(lm, "_spade_skip_ok", None)
    if verdict is None:
        layers = lm.num_layers
        verdict = False
        if layers >= 2:
            try:
                with torch.no_grad():
                    dim = lm.model.config.hidden_size
                    probe = torch.stack([torch.linspace(-2, 2, dim), torch.cos(torch.arange(dim) * 0.7)])
                    probe = probe.to(lm.device)
                    starts = torch.tensor([layers - 1, max(1, layers // 2)])
                    args = (probe.to(lm.dtype), starts, torch.tensor([lm.bos_id, lm.bos_id]), torch.tensor([3, 3]))
                    plain = continue_rows(lm, *args)
                    with _skipping_blocks(lm, int(starts.min())):
                        skipped = continue_rows(lm, *args)
                verdict = bool(torch.allclose(plain.float(), skipped.float(), rtol=1e-4, atol=1e-4))
            except Exception:  # an architecture whose blocks cannot be passed through: no shortcut
                verdict = False
        lm._spade_skip_ok = verdict
    return verdict


def continue_rows_in_bands(
    lm: LoadedModel,
    states: torch.Tensor,
    start_layers: torch.Tensor,
    token_ids: torch.Tensor,
    positions: torch.Tensor,
    with_bos: bool | torch.Tensor = True,
    bands: int = 5,
    chunk: int = 1024,
) -> torch.Tensor:
    """`continue_rows`, with rows grouped by start layer into about `bands` bands.

    Each band is one call (per `chunk` rows) in which the blocks below the band's first layer do
    no work: about 40% less block work than continuing every row through every block, for the
    same result (checked once per model by `_skip_is_exact`; without it, one band). Worth it for
    a sweep's thousands of rows; for one prompt's few dozen rows, reading the weights dominates
    and each extra call costs more than it saves (measured: 1 band 132 ms, 5 bands 238 ms).
    """
    start_layers = start_layers.cpu()
    keep_bos = torch.as_tensor(with_bos).cpu().expand(states.shape[0])
    skip = _skip_is_exact(lm)
    width = max(1, -(-lm.num_layers // max(1, bands))) if skip else lm.num_layers
    out = None
    for band_start in range(0, lm.num_layers, width):
        rows = ((start_layers >= band_start) & (start_layers < band_start + width)).nonzero().squeeze(-1)
        for first in range(0, len(rows), chunk):
            part = rows[first : first + chunk]
            with _skipping_blocks(lm, band_start if skip else 0):
                continued = continue_rows(lm, states[part], start_layers[part], token_ids[part], positions[part],
                                          with_bos=keep_bos[part])
            if out is None:
                out = torch.empty(states.shape[0], continued.shape[-1], dtype=continued.dtype, device=continued.device)
            out[part.to(out.device)] = continued
    return out


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
