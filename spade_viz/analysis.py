"""Analysis of one prompt: every layer decoded by the logit lens (all positions) and SPADE (answer).

`analyze` runs the model once with hidden states, decodes the logit-lens grid in batched
chunks, and continues the answer row for SPADE at every layer in one batched call. The
result keeps the hidden states (small) rather than any [layers x positions x vocab] tensor,
so the target token can be changed afterwards without running the model (`retarget`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from . import viz
from .data.datasets import overlong
from .errors import InputError, check_int, check_text
from .lenses.affine import AffineLens
from .lenses.spade import POSITION_MODES, spade_final_states, spade_grid_stats
from .lenses.stats import DecodeStats, distribution_stats
from .models.loading import LoadedModel, operation

DEFAULT_MAX_TOKENS = 512
_MAX_TARGET_CHARS = 1000
_GRID_CHUNK_ROWS = 256  # logit-lens rows decoded at once: bounds memory at ~256 x vocab floats


@dataclass
class Analysis:
    """Everything the views, the CLI and the tests read about one prompt."""

    model_name: str
    num_layers: int
    token_ids: list[int]
    tokens: list[str]
    answer_position: int
    spade_positions: str
    top_k: int
    target_id: int  # target token at the answer position
    grids: dict[str, DecodeStats]  # decoder -> [L+1, positions]; always has "logit_lens"
    answer: dict[str, DecodeStats]  # decoder -> [L+1, 1] at the answer position
    vocab: dict[int, str]  # strings of every token id that appears in the stats
    residuals: torch.Tensor = field(repr=False)  # [L, positions, d]: h_0..h_{L-1}, raw
    final_hidden: torch.Tensor = field(repr=False)  # [positions, d']: h_L, final-normed (what the head reads)
    answer_states: dict[str, torch.Tensor] = field(repr=False)  # decoder -> [L+1, d'] final-normed states at T

    @property
    def decoders(self) -> list[str]:
        return list(self.answer)

    @property
    def logit_lens(self) -> DecodeStats:
        return self.grids["logit_lens"]

    @property
    def final_answer_id(self) -> int:
        return int(self.logit_lens.top1[-1, self.answer_position])

    def token(self, token_id: int) -> str:
        """The string of a token id that appears in the stats."""
        return self.vocab[int(token_id)]

    def figures(self, metric: str = "entropy") -> dict:
        """The Explore page's plotly figures of this analysis, by name (in Jupyter: `res.figures()[name]`)."""
        return viz.analysis_figures(self, metric)

    def first_stable_layer(self, decoder: str) -> int | None:
        """First layer from which the decoder's top-1 equals the final answer and stays equal."""
        if not isinstance(decoder, str) or decoder not in self.answer:
            raise InputError(f"this analysis has no decoder {decoder!r}: choose one of {', '.join(self.answer)}")
        top1 = self.answer[decoder].top1[:, 0]
        wrong = np.nonzero(top1 != self.final_answer_id)[0]
        first = int(wrong[-1]) + 1 if len(wrong) else 0
        return first if first <= self.num_layers else None

    def _cell(self, stats: DecodeStats, layer: int, position: int) -> dict:
        return {
            "top": [
                {"token": self.token(i), "prob": float(p)}
                for i, p in zip(stats.top_ids[layer, position], stats.top_probs[layer, position])
            ],
            "entropy": float(stats.entropy[layer, position]),
            "target_prob": float(stats.target_prob[layer, position]),
            "target_rank": int(stats.target_rank[layer, position]),
            "kl_to_final": float(stats.kl_to_final[layer, position]),
        }

    def to_dict(self) -> dict:
        """JSON-ready summary: every decoder's top tokens at the answer, per layer, and the logit-lens grid."""
        lens = self.logit_lens
        return {
            "model": self.model_name,
            "num_layers": self.num_layers,
            "tokens": self.tokens,
            "token_ids": self.token_ids,
            "answer_position": self.answer_position,
            "spade_positions": self.spade_positions,
            "target": self.token(self.target_id),
            "final_answer": self.token(self.final_answer_id),
            "layers": [
                {
                    "layer": layer,
                    **{name: self._cell(stats, layer, 0) for name, stats in self.answer.items()},
                }
                for layer in range(self.num_layers + 1)
            ],
            "grid": [
                [
                    {
                        "top1": self.token(lens.top_ids[layer, pos, 0]),
                        "prob": float(lens.top_probs[layer, pos, 0]),
                        "entropy": float(lens.entropy[layer, pos]),
                    }
                    for pos in range(len(self.tokens))
                ]
                for layer in range(self.num_layers + 1)
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        """`to_dict` as JSON text, non-ASCII tokens kept as they are."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def _frame(self, decoder: str, stats: DecodeStats, positions: list[int]) -> pd.DataFrame:
        layers, width = stats.entropy.shape
        layer_col = np.repeat(np.arange(layers), width)
        pos_col = np.tile(np.asarray(positions), layers)
        frame = pd.DataFrame(
            {
                "decoder": decoder,
                "layer": layer_col,
                "position": pos_col,
                "input_token": [self.tokens[p] for p in pos_col],
                "top1": [self.token(i) for i in stats.top1.ravel()],
                "top1_prob": stats.top_probs[..., 0].ravel(),
                "entropy": stats.entropy.ravel(),
                "kl_to_final": stats.kl_to_final.ravel(),
                "target_prob": stats.target_prob.ravel(),
                "target_rank": stats.target_rank.ravel(),
            }
        )
        for rank in range(1, stats.top_ids.shape[-1]):
            frame[f"top{rank + 1}"] = [self.token(i) for i in stats.top_ids[..., rank].ravel()]
            frame[f"top{rank + 1}_prob"] = stats.top_probs[..., rank].ravel()
        return frame

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (decoder, layer, position) the analysis decoded."""
        positions = list(range(len(self.tokens)))
        frames = [self._frame(name, stats, positions) for name, stats in self.grids.items()]
        frames += [
            self._frame(name, stats, [self.answer_position])
            for name, stats in self.answer.items()
            if name not in self.grids
        ]
        return pd.concat(frames, ignore_index=True)


def _logit_lens_grid(
    lm: LoadedModel, residuals, final_logprobs, target_ids, k, lens: AffineLens | None = None
) -> DecodeStats:
    """Logit lens (or a tuned lens) at every (layer, position): raw residuals [L, P, d], then the
    model's own final states at layer L."""
    layers, positions, _ = residuals.shape
    per_chunk = max(1, _GRID_CHUNK_ROWS // positions)
    rows = []
    for start in range(0, layers, per_chunk):
        chunk = residuals[start : start + per_chunk]
        if lens is None:
            logits = lm.adapter.logit_lens(chunk)
        else:
            logits = lens.logits(lm, chunk, slice(start, start + per_chunk))
        stats = distribution_stats(logits, final_logprobs, target_ids, k)
        rows.append({key: value.flatten(0, 1) for key, value in stats.items()})
    rows.append(distribution_stats(final_logprobs, final_logprobs, target_ids, k))  # layer L: the model's own
    return DecodeStats.stack(rows, (layers + 1, positions))


def _answer_stats(lm: LoadedModel, states: torch.Tensor, final_logprobs, target_id, k) -> DecodeStats:
    """Stats of final-normed states [L+1, d'] at the answer position, as [L+1, 1]."""
    logits = lm.adapter.head(states)
    stats = distribution_stats(logits, final_logprobs, torch.tensor(target_id, device=logits.device), k)
    return DecodeStats.stack([stats], (states.shape[0], 1))


def resolve_target(lm: LoadedModel, target: str | int | None, default_id: int) -> int:
    """A target given as a token id, an exact vocabulary token, or text (its first token)."""
    if target is None or (isinstance(target, str) and target == ""):
        return default_id
    vocab_size = lm.adapter.lm_head.weight.shape[0]
    if isinstance(target, bool) or not isinstance(target, str) and not hasattr(target, "__index__"):
        raise InputError(f"the target is a token id (int), token text or None, not {target!r} "
                         f"({type(target).__name__})")
    if isinstance(target, str):
        check_text("the target", target)
        if len(target) > _MAX_TARGET_CHARS:  # only its first token counts: no need to tokenize a book
            raise InputError(f"the target is one token; {len(target):,} characters of text is too long")
    if not isinstance(target, str):
        try:
            token_id = int(target.__index__())
        except (TypeError, ValueError, RuntimeError):  # a tensor or array of several numbers
            raise InputError(f"the target is one token id, not {type(target).__name__} of shape "
                             f"{tuple(getattr(target, 'shape', ()))}") from None
    elif target.startswith("#") and target[1:].isdigit():
        token_id = int(target[1:])  # "#1234": a raw token id
    else:
        ids = lm.tokenizer(target, add_special_tokens=False).input_ids
        vocab_id = lm.tokenizer.convert_tokens_to_ids(target)
        unk = lm.tokenizer.unk_token_id
        if isinstance(vocab_id, int) and vocab_id != unk and vocab_id is not None:
            token_id = vocab_id
        elif ids:
            token_id = ids[0]
        else:
            raise InputError(f"target {target!r} is not a token of this model's vocabulary")
    if not 0 <= token_id < vocab_size:
        raise InputError(f"target token id {token_id} is outside the vocabulary (0..{vocab_size - 1})")
    return token_id


def check_prompt(lm: LoadedModel, prompt: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> list[int]:
    """Token ids (with `<s>`) of a usable prompt, or an InputError saying what is wrong."""
    check_text("the prompt", prompt)
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty: type some text to analyse")
    limit = min(max_tokens, lm.max_positions or max_tokens)
    too_long = overlong(prompt, limit)  # refused before tokenizing megabytes of text
    if too_long:
        raise InputError(f"the prompt has {too_long} (the limit): shorten it")
    ids = lm.encode(prompt)
    if len(ids) > limit:
        raise InputError(
            f"the prompt has {len(ids)} tokens (with the start token); the limit is {limit}: shorten it"
        )
    return ids


@operation
def analyze(
    lm: LoadedModel,
    prompt: str,
    top_k: int = 5,
    target: str | int | None = None,
    spade_positions: str = "original",
    without_bos: bool = False,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    lenses: dict[str, AffineLens] | None = None,
) -> Analysis:
    """Decode every layer of `prompt` with the logit lens (all positions) and SPADE (answer position).

    `lenses` adds fitted affine decoders by name: a tuned lens gets a full grid like the logit
    lens; linear SPADE, fitted to imitate SPADE at the answer, gets the answer column.
    `without_bos` adds the "SPADE without <s>" ablation, which doubles SPADE's block work: a view
    that shows it can also add it later with `with_spade_no_bos`, from the kept states.
    """
    if not isinstance(spade_positions, str) or spade_positions not in POSITION_MODES:
        raise InputError(f"spade_positions must be one of {', '.join(POSITION_MODES)}, not {spade_positions!r}")
    top_k = check_int("top_k", top_k, 1, 100)
    max_tokens = check_int("max_tokens", max_tokens, 2)
    if not isinstance(without_bos, bool):
        raise InputError(f"without_bos must be True or False, not {without_bos!r}")
    if lenses is not None and (not isinstance(lenses, dict)
                               or not all(isinstance(lens, AffineLens) for lens in lenses.values())):
        raise InputError("lenses must be a dict of name -> AffineLens (or None)")
    ids = check_prompt(lm, prompt, max_tokens)
    answer = len(ids) - 1
    layers = lm.num_layers
    with torch.no_grad():
        out = lm.model(
            input_ids=torch.tensor([ids], device=lm.device), output_hidden_states=True, use_cache=False
        )
        residuals = torch.stack([h[0] for h in out.hidden_states[:-1]])  # [L, P, d]
        final_hidden = out.hidden_states[-1][0]  # [P, d'] after the final norm (and OPT's project_out)
        final_logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)  # [P, V]
        default_targets = final_logprobs.argmax(-1)
        target_id = resolve_target(lm, target, int(default_targets[answer]))
        grid_targets = default_targets.clone()
        grid_targets[answer] = target_id
        grid = _logit_lens_grid(lm, residuals, final_logprobs, grid_targets, top_k)

        variants = {"spade": True, "spade_no_bos": False} if without_bos else {"spade": True}
        states = spade_final_states(lm, residuals[:, answer], final_hidden[answer], ids[-1], answer,
                                    spade_positions, tuple(variants.values()))
        answer_states = dict(zip(variants, states))
        grids = {"logit_lens": grid}
        answer_stats = {"logit_lens": grid.column(answer)}
        # final-normed states at the answer for every decoder, so `retarget` needs no forward pass
        kept = {"logit_lens": lm.adapter.finalize(residuals[:, answer])}
        for name, lens in (lenses or {}).items():
            lens.check_matches(lm)
            mapped = lens.apply(residuals[:, answer])
            if lens.kind == "tuned_lens":
                grids[name] = _logit_lens_grid(lm, residuals, final_logprobs, grid_targets, top_k,
                                               lens=lens)
                answer_stats[name] = grids[name].column(answer)
                kept[name] = lm.adapter.finalize(mapped)
            else:
                answer_states[name] = torch.cat([mapped, final_hidden[answer : answer + 1]])
        for name, states in answer_states.items():
            answer_stats[name] = _answer_stats(lm, states, final_logprobs[answer], target_id, top_k)
        for name, states in kept.items():
            answer_states[name] = torch.cat([states, final_hidden[answer : answer + 1]])

    seen = set(ids) | {target_id}
    for stats in [*grids.values(), *answer_stats.values()]:
        seen |= set(np.unique(stats.top_ids).tolist())
    vocab = {i: lm.token_str(i) for i in seen}
    return Analysis(
        model_name=lm.name,
        num_layers=layers,
        token_ids=ids,
        tokens=[vocab[i] for i in ids],
        answer_position=answer,
        spade_positions=spade_positions,
        top_k=top_k,
        target_id=target_id,
        grids=grids,
        answer=answer_stats,
        vocab=vocab,
        residuals=residuals.cpu(),
        final_hidden=final_hidden.cpu(),
        answer_states={k: v.cpu() for k, v in answer_states.items()},
    )


@operation
def retarget(lm: LoadedModel, analysis: Analysis, target: str | int | None) -> Analysis:
    """The same analysis with another target token at the answer position; no model forward.

    The copy shares the hidden states and every array the target does not change (no tensor copied).
    """
    _check_states_fit(lm, analysis, "retarget")
    answer = analysis.answer_position
    with torch.no_grad():
        final_logits = lm.adapter.head(analysis.final_hidden[answer : answer + 1].to(lm.device, lm.dtype))
        final_logprobs = torch.log_softmax(final_logits.float(), dim=-1)[0]
        target_id = resolve_target(lm, target, int(final_logprobs.argmax()))
        answer_stats = {
            name: _answer_stats(lm, analysis.answer_states[name].to(lm.device, lm.dtype), final_logprobs,
                                target_id, analysis.top_k)
            for name in analysis.answer
        }
    grids = {}
    for name, grid in analysis.grids.items():
        grid = replace(grid, target_prob=grid.target_prob.copy(), target_rank=grid.target_rank.copy())
        grid.target_prob[:, answer] = answer_stats[name].target_prob[:, 0]
        grid.target_rank[:, answer] = answer_stats[name].target_rank[:, 0]
        grids[name] = grid
    vocab = dict(analysis.vocab)
    vocab.setdefault(target_id, lm.token_str(target_id))
    return replace(analysis, target_id=target_id, grids=grids, answer=answer_stats, vocab=vocab)


def _check_states_fit(lm: LoadedModel, analysis, what: str) -> None:
    """InputError unless `analysis` is an Analysis whose kept states this model can continue."""
    if not isinstance(analysis, Analysis):
        raise InputError(f"{what} needs an Analysis from analyze, not {type(analysis).__name__}")
    if analysis.model_name != lm.name or analysis.num_layers != lm.num_layers \
            or analysis.residuals.shape[-1] != lm.model.config.hidden_size:
        raise InputError(f"this analysis is of another model ({analysis.model_name}), not of {lm.name}")


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
    _check_states_fit(lm, analysis, "with_spade_no_bos")
    if "spade_no_bos" in analysis.answer:
        return analysis
    answer = analysis.answer_position
    with torch.no_grad():
        final = analysis.final_hidden[answer].to(lm.device, lm.dtype)
        (states,) = spade_final_states(lm, analysis.residuals[:, answer].to(lm.device, lm.dtype), final,
                                       analysis.token_ids[-1], answer, analysis.spade_positions, (False,))
        final_logprobs = torch.log_softmax(lm.adapter.head(final.unsqueeze(0))[0].float(), dim=-1)
        stats = _answer_stats(lm, states, final_logprobs, analysis.target_id, analysis.top_k)
    return replace(analysis, answer={**analysis.answer, "spade_no_bos": stats}, vocab=_vocab_with(lm, analysis, stats),
                   answer_states={**analysis.answer_states, "spade_no_bos": states.cpu()})


@operation
def spade_grid(lm: LoadedModel, analysis: Analysis, progress=None) -> DecodeStats:
    """SPADE at every (layer, position) of an analysed prompt, each position in turn the answer.

    [L+1, positions] statistics like the logit lens's grid, from the analysis's kept hidden states
    (no new forward pass), in its SPADE position mode; position i follows the model's final top-1
    there (the analysis's target at the answer). Position 0 is `<s>` itself, which has nothing to
    drop: SPADE there is the model's own output at every layer. `progress(done, total, stage)` is
    called as the rows are continued. `with_grid(analysis, "spade", grid)` puts it beside the others.
    """
    _check_states_fit(lm, analysis, "spade_grid")
    with torch.no_grad():
        final_hidden = analysis.final_hidden.to(lm.device, lm.dtype)
        targets = torch.log_softmax(lm.adapter.head(final_hidden).float(), dim=-1).argmax(-1)
        targets[analysis.answer_position] = analysis.target_id
        return spade_grid_stats(lm, analysis.residuals, final_hidden, analysis.token_ids, targets,
                                analysis.spade_positions, analysis.top_k, progress=progress)


def with_grid(lm: LoadedModel, analysis: Analysis, name: str, grid: DecodeStats) -> Analysis:
    """The analysis with one more decoder's full grid (e.g. `spade_grid`'s), under `name`.

    Its answer column's target probability and rank follow the analysis's target (as `retarget`
    leaves them), so a grid computed once serves every target; the grid's tokens join `vocab`.
    """
    if not isinstance(analysis, Analysis):
        raise InputError(f"with_grid needs an Analysis from analyze, not {type(analysis).__name__}")
    if grid.entropy.shape != analysis.logit_lens.entropy.shape:
        raise InputError(f"a grid of shape {grid.entropy.shape} does not fit this analysis "
                         f"{analysis.logit_lens.entropy.shape}")
    answer = analysis.answer_position
    if name in analysis.answer:
        grid = replace(grid, target_prob=grid.target_prob.copy(), target_rank=grid.target_rank.copy())
        grid.target_prob[:, answer] = analysis.answer[name].target_prob[:, 0]
        grid.target_rank[:, answer] = analysis.answer[name].target_rank[:, 0]
    return replace(analysis, grids={**analysis.grids, name: grid}, vocab=_vocab_with(lm, analysis, grid))
