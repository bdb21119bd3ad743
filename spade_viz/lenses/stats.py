"""Statistics of a decoded next-token distribution: the one statistics kernel of the package.

Every decoder (logit lens, SPADE, linear SPADE, tuned lens) ends in logits; these are the
numbers the views, the sweep, the early-exit confidence and its simulation read. Entropy and KL
are in nats. KL is KL(final || decoded): how many nats the layer's guess loses against the
model's answer.

- `distribution_stats`: everything one prompt's views show (top-k, entropy, KL, target rank);
- `logit_stats`: what a sweep keeps (top-1 and entropy, over the vocabulary and over choices);
- `entropy_top1`: the confidence of one decoded row, by the same formula as `logit_stats`, so a
  real early exit decides exactly as the simulation of it.
"""

from __future__ import annotations

import math
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


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) for a [..., V] and b [..., V] broadcasting to it, with no [..., V] temporary.

    einsum keeps a broadcast `b` (the final distribution of each position, shared by every layer)
    as it is; `matmul` on an expanded view would first copy it (measured 8x slower).
    """
    b = b.reshape((1,) * (a.dim() - b.dim()) + tuple(b.shape))
    letters = "abcdefgh"[: a.dim() - 1]
    kept = [i for i in range(a.dim() - 1) if b.shape[i] == a.shape[i]]  # the others b broadcasts over
    b = b.reshape([b.shape[i] for i in kept] + [b.shape[-1]])
    return torch.einsum(f"{letters}v,{''.join(letters[i] for i in kept)}v->{letters}", a, b)


class Buffers:
    """Scratch tensors one caller reuses from call to call (the chunks of one grid fill): a fresh
    [rows, V] buffer costs its page faults, measured as much as the pass that fills it, and torch's
    CPU allocator hands such sizes back to the system when freed. Not thread-safe: one per caller."""

    def __init__(self):
        self._kept: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
             device: torch.device | str = "cpu") -> torch.Tensor:
        """An uninitialised contiguous tensor of `shape`, the memory of the last one taken as `name`
        where it is large enough (so the previous one must no longer be in use)."""
        size, kept = math.prod(shape), self._kept.get(name)
        if kept is None or kept.numel() < size or kept.dtype != dtype or kept.device != torch.device(device):
            kept = self._kept[name] = torch.empty(size, dtype=dtype, device=device)
        return kept[:size].view(shape)


_BLOCK_ELEMENTS = 1 << 24  # float32 logits per block of rows: bounds each temporary to ~64 MiB


def distribution_stats(
    logits: torch.Tensor, final_logprobs: torch.Tensor, target_ids: torch.Tensor, k: int, scratch: bool = False,
    buffers: Buffers | None = None,
) -> dict[str, torch.Tensor]:
    """Stats of softmax(logits) per row. logits [..., V]; final_logprobs and target_ids broadcast to it.

    Fused and chunked: the rows go in blocks of at most about `_BLOCK_ELEMENTS` values (whole
    positions with every layer where they fit, so a block reads each position's final
    distribution once), each through every statistic before the next: log-softmax, entropy,
    top-k, target and rank, KL, written into preallocated results (no concatenation). Memory is
    bounded by the block whatever the caller passes; larger blocks measured faster on 2 cores
    (1M-value blocks took 2.6x the time of one 16M-value block: per-operation overhead, not
    cache misses, dominates there). bf16/fp16 logits are read as float32 by the log-softmax.
    KL(final || p) = sum_v f_v (log f_v - log p_v) = -H(final) - <f, log p>.

    Few large allocations: a fresh [rows, V] buffer costs its page faults, which measured more
    than the pass that fills it (exp into a new tensor 62 ms, into a reused one 24 ms, [248, V]).
    So one log-probability buffer and one work buffer serve every block; `scratch=True` says the
    float32 `logits` are the caller's temporary, which then serves as the work buffer; `buffers`
    keeps both buffers for the caller's next call.
    """
    shape, vocab = logits.shape[:-1], logits.shape[-1]
    outer, width = shape[:-1].numel(), (shape[-1] if shape else 1)
    logits = logits.reshape(outer, width, vocab)  # a view of a product's output
    device = logits.device
    final_logprobs = final_logprobs.to(device, torch.float32)
    full = final_logprobs.dim() > 2  # one final distribution per row: sliced like the logits
    if full:
        final_logprobs = final_logprobs.expand(*shape, vocab).reshape(outer, width, vocab)
    final_probs = final_logprobs.exp()
    final_entropy = -(final_probs * final_logprobs).sum(-1)
    per_column = not full and final_logprobs.dim() == 2 and final_logprobs.shape[0] == width and width > 1
    targets = torch.as_tensor(target_ids, device=device).expand(shape).reshape(outer, width)
    out = {
        "top_ids": torch.empty((outer, width, k), dtype=torch.long, device=device),
        "top_probs": torch.empty((outer, width, k), device=device),
        "entropy": torch.empty((outer, width), device=device),
        "kl_to_final": torch.empty((outer, width), device=device),
        "target_prob": torch.empty((outer, width), device=device),
        "target_rank": torch.empty((outer, width), dtype=torch.long, device=device),
    }
    cols = max(1, _BLOCK_ELEMENTS // (outer * vocab))
    rows = outer if cols > 1 else max(1, _BLOCK_ELEMENTS // vocab)
    block = min(rows, outer) * min(cols, width) * vocab
    buffers = Buffers() if buffers is None else buffers
    logprobs_buffer = buffers.take("logprobs", (block,), device=device)
    own = scratch and logits.dtype == torch.float32
    work_buffer = None if own else buffers.take("work", (block,), device=device)
    for col in range(0, width, cols):
        for row in range(0, outer, rows):
            where = (slice(row, row + rows), slice(col, col + cols))
            if full:
                final = (final_probs[where], final_entropy[where])
            elif per_column:
                final = (final_probs[where[1]], final_entropy[where[1]])
            else:
                final = (final_probs, final_entropy)
            part = logits[where]
            size = part.numel()
            logprobs = logprobs_buffer[:size].view(part.shape)
            work = part if own else work_buffer[:size].view(part.shape)
            _block_stats(part, logprobs, work, *final, targets[where], k, out, where)
    return {key: value.reshape(*shape, *value.shape[2:]) for key, value in out.items()}


def _block_stats(logits, logprobs, work, final_probs, final_entropy, targets, k, out, where) -> None:
    """`distribution_stats` of one block of rows, written into `out[...][where]`; `logprobs` and
    `work` are float32 buffers of the block's shape (`work` may be `logits` itself). The fewest
    full-width passes measured: log-softmax (one fused kernel, reading bf16 as float32), its
    exponent, the entropy's row dot product, top-k, the rank count (only where a target is
    outside the top-k), the KL's product with the final distributions."""
    torch.log_softmax(logits, -1, dtype=torch.float32, out=logprobs)
    probs = torch.exp(logprobs, out=work)  # logits are read no more: `work` may be them
    out["entropy"][where] = -_rowdot(probs, logprobs)
    top = logprobs.topk(k, dim=-1)
    out["top_ids"][where] = top.indices
    out["top_probs"][where] = top.values.exp()
    picked = logprobs.gather(-1, targets.unsqueeze(-1))
    out["target_prob"][where] = picked.squeeze(-1).exp()
    if (top.indices == targets.unsqueeze(-1)).any(-1).all():  # every target in its top-k: count there
        rank = (top.values > picked).sum(-1)
    else:  # 0/1 as float32 into the work buffer, summed there: exact below 2**24 tokens, and no
        # [rows, V] bool and int copies (a bool tensor's integer sum converts it whole first)
        rank = torch.gt(logprobs, picked, out=work).sum(-1)
    out["target_rank"][where] = rank.long() + 1
    kl = -final_entropy - _rowdot(logprobs, final_probs)  # -H(final) - <f, log p>
    out["kl_to_final"][where] = kl.clamp_min(0.0)


def _shifted_entropy_(z: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(z) per row, shifting `z` in place by its row maximum (z must be float32
    and the caller's temporary): log S - sum(e z) / S, with one [n, V] allocation."""
    z.sub_(z.amax(-1, keepdim=True))  # max 0 per row: exp cannot overflow
    e = torch.exp(z)
    total = e.sum(-1)
    return torch.log(total) - e.mul_(z).sum(-1) / total


def entropy_top1(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropy, top-1) of softmax(logits) per row of [..., V]; `logits` is left as it is."""
    z = logits.float().clone()
    top1 = z.argmax(-1)
    return _shifted_entropy_(z), top1


def logit_stats(logits: torch.Tensor, choices: torch.Tensor, shortlist: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
    """top1/entropy over the vocabulary and, for rows with choices (ids >= 0), over the choices.

    logits [n, V] (float32 logits are shifted in place: pass a temporary); choices [n, C] with -1
    padding. Returns top1, entropy (restricted where a row has choices), top1_vocab,
    entropy_vocab, each [n]. Few full-width passes and no extra [n, V] allocation but one:
    on CPUs these element-wise passes cost more than the unembedding product itself.
    `shortlist` [S] token ids: a row without choices takes its `entropy` over these tokens only
    (a cheap early-exit confidence, see `shortlist_entropy`); its top-1 stays the vocabulary's.
    """
    z = logits.float()
    top1_vocab = z.argmax(-1)
    entropy_vocab = _shifted_entropy_(z)
    valid = choices >= 0
    restricted = valid.any(-1).to(z.device)
    top1, entropy = top1_vocab.clone(), entropy_vocab.clone()
    if shortlist is not None and not bool(restricted.all()):
        entropy = torch.where(restricted, entropy, shortlist_entropy(z.index_select(1, shortlist.to(z.device))))
    if restricted.any():
        valid = valid.to(z.device)
        ids = choices.clamp_min(0).to(z.device)
        c_entropy, c_top1 = _over_choices(z.gather(1, ids), valid, ids)
        top1 = torch.where(restricted, c_top1, top1)
        entropy = torch.where(restricted, c_entropy, entropy)
    return {"top1": top1, "entropy": entropy, "top1_vocab": top1_vocab, "entropy_vocab": entropy_vocab}


def _over_choices(picked: torch.Tensor, valid: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropy, top-1 token id) of the softmax over each row's valid choices; picked [n, C] are their
    float32 logits, ids [n, C] their token ids."""
    picked = picked.masked_fill(~valid, float("-inf"))
    c_lse = torch.logsumexp(picked, -1, keepdim=True)
    c_probs = torch.exp(picked - c_lse)
    c_entropy = c_lse[:, 0] - torch.where(valid, c_probs * picked, torch.zeros_like(picked)).sum(-1)
    return c_entropy, ids.gather(1, picked.argmax(-1, keepdim=True))[:, 0]


def shortlist_entropy(picked: torch.Tensor) -> torch.Tensor:
    """Entropy [n] of the softmax over a shortlist of the vocabulary, from its logits [n, S]: how
    sure a decoded row is among the tokens a task's answers are made of. Reading S rows of the
    unembedding instead of all V makes an early-exit checkpoint cost what it should."""
    z = picked.float()
    entropy, _ = _over_choices(z, torch.ones_like(z, dtype=torch.bool), torch.zeros_like(z, dtype=torch.long))
    return entropy


def choice_entropy_top1(logits: torch.Tensor, choices: torch.Tensor, columns: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropy, top-1 token id) per row as `logit_stats` records them: over the row's choices
    (choices [n, C] token ids, -1 padding), over the vocabulary where a row has none.

    logits [n, V]; or, with `columns` [n, C], logits [n, U] of only the vocabulary rows the choices
    use (column j of row r is the logit of choices[r, j]): every row must then have choices."""
    z = logits.float()
    valid = (choices >= 0).to(z.device)
    ids = choices.clamp_min(0).to(z.device)
    entropy, top1 = _over_choices(z.gather(1, ids if columns is None else columns.to(z.device)), valid, ids)
    plain = ~valid.any(-1)
    if bool(plain.any()):
        entropy[plain], top1[plain] = entropy_top1(z[plain])
    return entropy, top1
