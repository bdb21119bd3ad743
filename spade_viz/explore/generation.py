"""The lens at every step of a greedy generation: what each layer would have emitted, token by token.

The tokens are the model's own greedy generation (`model.generate(..., do_sample=False)`). One
forward pass over the prompt and the generated tokens then gives, at the position that emitted
each token, the logit lens at every layer, and SPADE continued from the same residuals (each
emitting position in turn is SPADE's answer position). Per token and decoder, `first_layer` is the
first layer from which the top-1 is the emitted token and stays so.

`exit_blocks` says what the hybrid exit (SPADE's entropy as the confidence, SPADE answering) would
have cost for the whole answer, in the exit simulation's block units (`exit.cost`): each step is
counted as its own prompt of the tokens before it, as the simulation counts examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis import check_prompt
from ..engine import continue_rows_in_bands
from ..errors import InputError, check_int, check_number
from ..exit.cost import Checkpoints, CostModel, full_cost, hybrid_costs
from ..lenses.spade import POSITION_MODES, spade_position
from ..lenses.stats import DecodeStats, distribution_stats
from ..limits import DEFAULT_TOKEN_LIMIT
from ..models.loading import LoadedModel, operation

MAX_GENERATE = 512  # tokens of one generation (a server may allow fewer)
_CHUNK_ROWS = 256


@dataclass
class Generation:
    """A greedy generation decoded at every layer of each step."""

    model_name: str
    num_layers: int
    prompt_ids: list[int]  # with `<s>`
    token_ids: list[int]  # the generated tokens, in order
    positions: list[int]  # the position that emitted each token (its input is the token before it)
    grids: dict[str, DecodeStats]  # decoder -> [L+1, N]; the target is the emitted token
    vocab: dict[int, str]
    cost: CostModel

    @property
    def tokens(self) -> list[str]:
        return [self.vocab[i] for i in self.token_ids]

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def token(self, token_id: int) -> str:
        """The text of a token id that appears in the generation's statistics."""
        return self.vocab[int(token_id)]

    def first_layer(self, decoder: str) -> list[int | None]:
        """Per generated token: the first layer from which the decoder's top-1 is that token and stays so
        (None: not even at the last layer, a near tie the cached generation broke the other way)."""
        top1 = self.grids[decoder].top1  # [L+1, N]
        out = []
        for step, token_id in enumerate(self.token_ids):
            wrong = np.nonzero(top1[:, step] != token_id)[0]
            first = int(wrong[-1]) + 1 if len(wrong) else 0
            out.append(first if first <= self.num_layers else None)
        return out

    def exit_blocks(self, threshold: float, checkpoints: Checkpoints | None = None,
                    continuation_tokens: float = 1.0) -> dict:
        """The hybrid exit at `threshold` (nats of SPADE's entropy, checked at `checkpoints`) over the
        whole answer: its exit layer per token, its block units against the full model's, and how many
        of its answers (SPADE's top-1 at the exit) differ from the emitted tokens."""
        threshold = check_number("threshold", threshold, 0)
        mask = (checkpoints or Checkpoints()).mask(self.num_layers)
        spade = self.grids["spade"]
        entropy = np.where(mask[:-1, None], spade.entropy[:-1], np.inf)  # [L, N]
        below = entropy < threshold
        layers = np.where(below.any(0), below.argmax(0), self.num_layers)
        n_tokens = len(self.prompt_ids) + np.arange(len(self.token_ids))
        cost = self.cost.with_options(continuation_tokens=continuation_tokens)
        hybrid = hybrid_costs(n_tokens, self.num_layers, cost, mask)[np.arange(len(layers)), layers]
        answers = spade.top1[layers, np.arange(len(layers))]
        return {"threshold": threshold, "exit_layers": layers.tolist(), "hybrid_blocks": float(hybrid.sum()),
                "full_blocks": float(full_cost(n_tokens, self.num_layers, cost).sum()),
                "changed": int((answers != np.asarray(self.token_ids)).sum())}

    def to_dict(self) -> dict:
        """JSON-ready: the generated tokens and ids, and each decoder's first layer per token."""
        return {"tokens": self.tokens, "token_ids": self.token_ids, "text": self.text,
                "first_layer": {name: self.first_layer(name) for name in self.grids}}


def _greedy(lm: LoadedModel, ids: list[int], max_new_tokens: int) -> list[int]:
    """The model's own greedy continuation of `ids` (it may stop early at its end token)."""
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    inputs = torch.tensor([ids], device=lm.input_device)
    out = lm.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                            min_new_tokens=None, do_sample=False, num_beams=1, pad_token_id=pad)
    return [int(i) for i in out[0, len(ids):]]


def _lens_grid(lm: LoadedModel, residuals, logits, final_logprobs, targets, k) -> DecodeStats:
    """Logit lens at layers 0..L-1 of the picked positions (residuals [L, N, d]), the model's logits at L."""
    layers = residuals.shape[0]
    rows = [distribution_stats(lm.adapter.logit_lens(residuals[layer]), final_logprobs, targets, k)
            for layer in range(layers)]
    rows.append(distribution_stats(logits, final_logprobs, targets, k))
    return DecodeStats.stack(rows, (layers + 1, residuals.shape[1]))


def _spade_grid(lm: LoadedModel, residuals, final_hidden, final_logprobs, token_ids, positions, targets, mode, k):
    """SPADE at layers 0..L-1 of the picked positions, each in turn the answer; the model's own output at L."""
    layers, width, _ = residuals.shape
    rows_l = torch.arange(layers).repeat_interleave(width)
    rows_i = torch.arange(width).repeat(layers)
    position_ids = positions[rows_i] if mode == "original" else torch.full_like(rows_i, spade_position(0, mode))
    states = continue_rows_in_bands(lm, residuals[rows_l, rows_i], rows_l, token_ids[rows_i], position_ids,
                                    chunk=_CHUNK_ROWS)
    dev_i = rows_i.to(final_logprobs.device)
    stats = distribution_stats(lm.adapter.head(states), final_logprobs[dev_i], targets[dev_i], k)
    top = distribution_stats(lm.adapter.head(final_hidden), final_logprobs, targets, k)
    return DecodeStats.stack([stats, top], (layers + 1, width))


@operation
def follow_generation(lm: LoadedModel, prompt: str, max_new_tokens: int = 16, spade_positions: str = "original",
                      top_k: int = 5, max_tokens: int = DEFAULT_TOKEN_LIMIT, limit: int = MAX_GENERATE) -> Generation:
    """Generate up to `max_new_tokens` greedily, then decode each step at every layer by the logit lens
    and SPADE (`limit`: the most a caller allows, e.g. a server's)."""
    limit = check_int("limit", limit, 1, MAX_GENERATE)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1, limit)
    top_k = check_int("top_k", top_k, 1, 100)
    if spade_positions not in POSITION_MODES:
        raise InputError(f"spade_positions must be one of {', '.join(POSITION_MODES)}, not {spade_positions!r}")
    ids = check_prompt(lm, prompt, max_tokens)
    if lm.max_positions and len(ids) + max_new_tokens > lm.max_positions:
        raise InputError(f"the prompt ({len(ids)} tokens) and {max_new_tokens} generated tokens exceed the model's "
                         f"context of {lm.max_positions}: generate fewer")
    with torch.no_grad():
        generated = _greedy(lm, ids, max_new_tokens)
        if not generated:
            raise InputError("the model generated no token (it ended at once)")
        sequence = ids + generated[:-1]
        out = lm.model(input_ids=torch.tensor([sequence], device=lm.input_device), output_hidden_states=True,
                       use_cache=False)
        positions = torch.arange(len(ids) - 1, len(sequence))
        residuals = torch.stack([h[0, positions.to(h.device)] for h in out.hidden_states[:-1]])  # [L, N, d]
        final_hidden = out.hidden_states[-1][0, positions.to(out.hidden_states[-1].device)]
        logits = out.logits[0, positions.to(out.logits.device)].to(lm.device)
        final_logprobs = torch.log_softmax(logits.float(), dim=-1)
        targets = torch.tensor(generated, device=final_logprobs.device)
        token_ids = torch.tensor(sequence)[positions]
        grids = {"logit_lens": _lens_grid(lm, residuals, logits, final_logprobs, targets, top_k),
                 "spade": _spade_grid(lm, residuals.to(lm.device), final_hidden.to(lm.device), final_logprobs,
                                      token_ids, positions, targets, spade_positions, top_k)}
    seen = set(generated) | {int(i) for grid in grids.values() for i in np.unique(grid.top_ids)}
    return Generation(lm.name, lm.num_layers, ids, generated, positions.tolist(), grids,
                      {i: lm.token_str(i) for i in seen}, CostModel.from_lm(lm))
