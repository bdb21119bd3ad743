"""Model passes the lenses build on, each exact while other threads use the same model.

- `read_rows`: one right-padded forward (`pad_right`); the residual rows at chosen positions of
  every layer.
- `continue_rows`: rows injected after some block continue, as one token each, through the
  blocks above it, attending to the cached `<s>` (SPADE's continuation, and the real exit's).
- `continue_rows_in_bands`: the same for thousands of rows, with the blocks below each band of
  start layers doing no work.

Every change to the model while it runs goes through `spade_viz.models.surgery`. Inputs go to
the device of the model's input embedding (`lm.input_device`), results come back on `lm.device`
(the unembedding's): on a model spread over devices, surgery and the adapter move the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from ..models import surgery
from ..models.loading import LoadedModel


def read_rows(lm: LoadedModel, sequences: Sequence[Sequence[int]], picks: Sequence[Sequence[int]]):
    """One right-padded forward over `sequences`; hidden states at positions `picks[b]` of each.

    Returns (residuals [n, L, d]: raw h_0..h_{L-1}; final [n, d']: the final-normed h_L), rows
    in the order of the picks. Right padding with a mask leaves every real token's states as in
    an unpadded run (causal attention never looks right). Only the picked rows of each layer are
    kept, not every position of every layer (`output_hidden_states`). Both are on `lm.device`.
    """
    ids, mask = pad_right(lm, sequences)
    rows = torch.tensor([b for b, chosen in enumerate(picks) for _ in chosen], device=lm.device)
    cols = torch.tensor([p for chosen in picks for p in chosen], device=lm.device)
    with torch.no_grad(), surgery.capturing(lm.adapter.blocks, rows, cols) as taken:
        lm.model.base_model(input_ids=ids.to(lm.input_device), attention_mask=mask.to(lm.input_device),
                            use_cache=False)
        residuals = torch.stack(taken[:-1], dim=1)
        final = lm.adapter.finalize(taken[-1])
    return residuals, final


def pad_right(lm: LoadedModel, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) [n, longest] on the CPU: each sequence from the left, then padding."""
    width = max(len(seq) for seq in sequences)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.bos_id
    ids = torch.full((len(sequences), width), int(pad), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def continue_rows(
    lm: LoadedModel,
    states: torch.Tensor,
    start_layers: torch.Tensor,
    token_ids: torch.Tensor,
    positions: torch.Tensor,
    with_bos: bool | torch.Tensor = True,
    skip_below: int = 0,
) -> torch.Tensor:
    """Final-normed states after continuing each `<a>` row from its start layer to the top.

    states [R, d]: the row's residual h_l[T] (ignored for start layer 0, which embeds token_ids);
    start_layers [R] in 0..L-1; positions [R]: the position id the `<a>` row gets;
    with_bos: True/False, or [R] booleans: rows without `<s>` (the ablation) mask its key out,
    which is exactly the one-row pass, so both kinds share one call. `skip_below`: blocks below
    it do no work (every row must start at or above it; exact where `skip_is_exact`).
    Returns [R, d'] on `lm.device` = what the unembedding reads (apply `lm.adapter.head`).

    Exactness: under causal attention `<s>` never sees later tokens, so its keys and values at
    every block are those of a one-token pass on `<s>` alone (`lm.start_cache`).
    """
    rows = states.shape[0]
    device = lm.input_device
    keep_bos = torch.as_tensor(with_bos, device=device).expand(rows)
    kwargs = {}
    if keep_bos.any():
        cache = copy.deepcopy(lm.start_cache)
        cache.batch_repeat_interleave(rows)
        kwargs["past_key_values"] = cache
        kwargs["attention_mask"] = torch.stack([keep_bos.long(), torch.ones_like(keep_bos, dtype=torch.long)], 1)
    with torch.no_grad(), surgery.injecting(lm.adapter.blocks, states, start_layers, skip_below):
        # the decoder without its head: its last hidden state is final-normed, and no logits are
        # computed that the caller would throw away
        out = lm.model.base_model(
            input_ids=token_ids.to(device).view(rows, 1),
            position_ids=positions.to(device).view(rows, 1),
            use_cache=bool(kwargs),
            **kwargs,
        )
    return out.last_hidden_state[:, -1].to(lm.device)


def skip_is_exact(lm: LoadedModel) -> bool:
    """Whether skipping the blocks below a row's start layer leaves the continuation unchanged for
    this model: checked once per model on two rows, under the model's lock (any difference or
    error turns the shortcut off)."""
    with lm.lock:
        if lm.skip_exact is None:
            lm.skip_exact = _check_skip(lm)
        return lm.skip_exact


def _check_skip(lm: LoadedModel) -> bool:
    layers = lm.num_layers
    if layers < 2:
        return False
    try:
        dim = lm.model.config.hidden_size
        probe = torch.stack([torch.linspace(-2, 2, dim), torch.cos(torch.arange(dim) * 0.7)]).to(lm.device, lm.dtype)
        starts = torch.tensor([layers - 1, max(1, layers // 2)])
        args = (probe, starts, torch.tensor([lm.bos_id, lm.bos_id]), torch.tensor([3, 3]))
        plain = continue_rows(lm, *args)
        skipped = continue_rows(lm, *args, skip_below=int(starts.min()))
        return bool(torch.allclose(plain.float(), skipped.float(), rtol=1e-4, atol=1e-4))
    except Exception:  # an architecture whose blocks cannot be passed through: no shortcut
        return False


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
    same result (where `skip_is_exact`; otherwise one band). Worth it for a sweep's thousands of
    rows; for one prompt's few dozen rows, reading the weights dominates and each extra call
    costs more than it saves (measured: 1 band 132 ms, 5 bands 238 ms).
    """
    start_layers = start_layers.cpu()
    keep_bos = torch.as_tensor(with_bos).cpu().expand(states.shape[0])
    skip = skip_is_exact(lm)
    width = max(1, -(-lm.num_layers // max(1, bands))) if skip else lm.num_layers
    out = None
    for band_start in range(0, lm.num_layers, width):
        rows = ((start_layers >= band_start) & (start_layers < band_start + width)).nonzero().squeeze(-1)
        for first in range(0, len(rows), chunk):
            part = rows[first : first + chunk]
            continued = continue_rows(lm, states[part], start_layers[part], token_ids[part], positions[part],
                                      with_bos=keep_bos[part], skip_below=band_start if skip else 0)
            if out is None:
                out = torch.empty(states.shape[0], continued.shape[-1], dtype=continued.dtype, device=continued.device)
            out[part.to(out.device)] = continued
    return out
