"""Additions to an analysis from its kept states, no new forward pass: SPADE at every position
(`spade_grid`), another decoder's full grid (`with_grid`), the "SPADE without <s>" ablation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from .analysis import Analysis, answer_stats_of, check_states_fit
from .errors import InputError
from .lenses.spade import spade_final_states
from .lenses.stats import DecodeStats
from .models.loading import LoadedModel, operation
from .progress import Progress
from .windows import with_answer


def _vocab_with(lm: LoadedModel, analysis: Analysis, stats: DecodeStats) -> dict[int, str]:
    """The analysis's token strings and those of the new statistics' top tokens."""
    vocab = dict(analysis.vocab)
    for token_id in set(np.unique(stats.top_ids).tolist()) - set(vocab):
        vocab[token_id] = lm.token_str(token_id)
    return vocab


@operation
def with_spade_no_bos(lm: LoadedModel, analysis: Analysis) -> Analysis:
    """The analysis with the "SPADE without <s>" ablation at the answer position (as
    `analyze(..., without_bos=True)` computes it), from its kept states: no new forward pass."""
    check_states_fit(lm, analysis, "with_spade_no_bos")
    if "spade_no_bos" in analysis.answer:
        return analysis
    answer = analysis.answer_position
    with torch.no_grad():
        final = analysis.final_hidden[answer].to(lm.device, lm.dtype)
        (states,) = spade_final_states(lm, analysis.residuals[:, answer].to(lm.device, lm.dtype), final,
                                       analysis.token_ids[-1], answer, analysis.spade_positions, (False,))
        final_logprobs = torch.log_softmax(lm.adapter.head(final.unsqueeze(0))[0].float(), dim=-1)
        stats = answer_stats_of(lm, states, final_logprobs, analysis.target_id, analysis.top_k)
    return replace(analysis, answer={**analysis.answer, "spade_no_bos": stats}, vocab=_vocab_with(lm, analysis, stats),
                   answer_states={**analysis.answer_states, "spade_no_bos": states.cpu()})


def spade_grid(lm: LoadedModel, analysis: Analysis, progress: Progress | None = None,
               cancel: Callable[[], bool] | None = None, start: int = 0, stop: int | None = None) -> DecodeStats:
    """SPADE at every (layer, position) of an analysed prompt, each position in turn the answer.

    [L+1, positions] statistics like the logit lens's grid (or positions [start, stop) only),
    from the analysis's kept hidden states (no new forward pass), in its SPADE position mode;
    position i follows the model's final top-1 there (the analysis's target at the answer).
    Position 0 is `<s>` itself, which has nothing to drop: SPADE there is the model's own output
    at every layer. Computed chunk by chunk once per analysis (`analysis.grid("spade")`, shared
    with its retargets); `progress(done, total, stage)` counts rows; `cancel()` turning true
    stops it between chunks with `Cancelled`. `with_grid(analysis, "spade", grid)` puts it
    beside the others. Not itself an operation on the model: its chunks are, one by one.
    """
    if not isinstance(lm, LoadedModel):
        raise InputError(f"spade_grid needs a model from load_model as its first argument, not {type(lm).__name__}")
    check_states_fit(lm, analysis, "spade_grid")
    return analysis.grid("spade").window(start, stop, cancel=cancel, progress=progress)


def with_grid(lm: LoadedModel, analysis: Analysis, name: str, grid: DecodeStats) -> Analysis:
    """The analysis with one more decoder's full grid (e.g. `spade_grid`'s), under `name`.

    Its answer column's target probability and rank follow the analysis's target (as `retarget`
    leaves them), so a grid computed once serves every target; the grid's tokens join `vocab`.
    """
    if not isinstance(analysis, Analysis):
        raise InputError(f"with_grid needs an Analysis from analyze, not {type(analysis).__name__}")
    shape = (analysis.num_layers + 1, len(analysis.tokens))
    if grid.entropy.shape != shape:
        raise InputError(f"a grid of shape {grid.entropy.shape} does not fit this analysis {shape}")
    grid = with_answer(grid, analysis.answer_position, analysis.answer.get(name))
    return replace(analysis, grids={**analysis.grids, name: grid}, vocab=_vocab_with(lm, analysis, grid))
