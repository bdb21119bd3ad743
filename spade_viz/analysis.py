"""Analysis of one prompt: every layer decoded by the logit lens and SPADE, answer first.

`analyze` runs the model once with hidden states and decodes only the answer position, for every
decoder: the answer views cost one forward pass plus one column. The layers x positions grids (logit
lens, tuned lens, SPADE at every position) are computed on demand, a window at a time, from the kept
hidden states (`spade_viz.windows`); reading a whole grid computes all of it. Kept hidden states, not a
[layers x positions x vocab] tensor, also let the target change without running the model (`retarget`).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from . import viz
from .data.datasets import overlong
from .errors import InputError, check_int, check_text
from .lenses.affine import AffineLens
from .lenses.spade import POSITION_MODES, spade_final_states
from .lenses.stats import Buffers, DecodeStats, distribution_stats
from .limits import DEFAULT_TOKEN_LIMIT
from .models.loading import LoadedModel, operation
from .progress import Progress
from .windows import Grid, GridStore, lens_store, spade_store, with_answer

_MAX_TARGET_CHARS = 1000


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
    grids: dict[str, Grid | DecodeStats]  # decoder -> [L+1, positions]; always has "logit_lens"
    answer: dict[str, DecodeStats]  # decoder -> [L+1, 1] at the answer position
    vocab: dict[int, str]  # strings of every token id that appears in the stats
    residuals: torch.Tensor = field(repr=False)  # [L, positions, d]: h_0..h_{L-1}, raw
    final_hidden: torch.Tensor = field(repr=False)  # [positions, d']: h_L, final-normed (what the head reads)
    answer_states: dict[str, torch.Tensor] = field(repr=False)  # decoder -> [L+1, d'] final-normed states at T
    # decoder -> its chunk cache, shared with every retarget of this analysis; has "spade"
    stores: dict[str, GridStore] = field(default_factory=dict, repr=False)
    token_str: Callable[[int], str] | None = field(default=None, repr=False)  # for tokens of later chunks

    @property
    def decoders(self) -> list[str]:
        return list(self.answer)

    @property
    def logit_lens(self) -> Grid | DecodeStats:
        return self.grids["logit_lens"]

    @property
    def final_answer_id(self) -> int:
        return int(self.answer["logit_lens"].top1[-1, 0])

    def grid(self, decoder: str) -> Grid | DecodeStats:
        """The decoder's grid, computed a window at a time (`Grid.window`, `Grid.fill`): one of
        `grids`, or "spade" (SPADE at every position, as `spade_grid` returns it)."""
        if decoder in self.grids:
            return self.grids[decoder]
        if decoder in self.stores:
            return Grid(self.stores[decoder], self.answer_position, self.answer[decoder])
        raise InputError(f"no grid of {decoder!r} here; there are {', '.join([*self.grids, *self.stores])}")

    def windowed(self, start: int, stop: int, decoders: list[str] | None = None,
                 cancel: Callable[[], bool] | None = None, progress: Progress | None = None) -> Analysis:
        """A copy whose grids are plain statistics with positions [start, stop) computed (NaN, top id
        -1 elsewhere, whatever was computed before): what a figure of that window reads, at the cost of
        that window. `decoders`: the grids to fill (default all of `grids`; "spade"
        adds SPADE at every position)."""
        grids, buffers = {}, Buffers()  # one set of scratch tensors for every grid's chunks
        for name in decoders if decoders is not None else list(self.grids):
            grid = self.grid(name)
            if isinstance(grid, Grid):
                grid.fill(start, stop, cancel=cancel, progress=progress, buffers=buffers)
                grid = grid.partial(start, stop)
            grids[name] = grid
        return replace(self, grids=grids)

    def is_filled(self, start: int, stop: int, decoders: list[str]) -> bool:
        """Whether `windowed(start, stop, decoders)` has nothing left to compute."""
        return all(not isinstance(g := self.grid(d), Grid) or g.store.is_filled(start, stop) for d in decoders)

    def buffers(self) -> dict[int, int]:
        """Bytes held, per buffer (keyed by identity, so an analysis and its retargets share keys):
        hidden states, answer statistics and each grid's cache at full size (it never grows)."""
        found: dict[int, int] = {}
        for value in [self.residuals, self.final_hidden, *self.answer_states.values()]:
            found[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
        for store in self.stores.values():
            found[id(store)] = store.nbytes
        for stats in [*self.answer.values(), *(g for g in self.grids.values() if isinstance(g, DecodeStats))]:
            for array in vars(stats).values():
                owner = array if array.base is None else array.base
                found[id(owner)] = owner.nbytes
        return found

    def token(self, token_id: int) -> str:
        """The string of a token id that appears in the stats."""
        token_id = int(token_id)
        text = self.vocab.get(token_id)
        if text is None and self.token_str is not None and token_id >= 0:
            text = self.token_str(token_id)  # a top token of a chunk computed after the analysis
        if text is None:
            raise KeyError(token_id)
        return text

    def figures(self, metric: str = "entropy") -> dict:
        """The Explore page's figures by name (in Jupyter: `res.figures()[name]`)."""
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
            "layers": [{"layer": layer, **{name: self._cell(stats, layer, 0) for name, stats in self.answer.items()}}
                       for layer in range(self.num_layers + 1)],
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
        frames += [self._frame(name, stats, [self.answer_position])
                   for name, stats in self.answer.items() if name not in self.grids]
        return pd.concat(frames, ignore_index=True)


def answer_stats_of(lm: LoadedModel, states: torch.Tensor, final_logprobs, target_id, k, logits=None) -> DecodeStats:
    """Stats of final-normed states [L+1, d'] at the answer, as [L+1, 1] (from their `logits` if given)."""
    logits = lm.adapter.head(states) if logits is None else logits
    stats = distribution_stats(logits, final_logprobs, torch.tensor(target_id, device=logits.device), k, scratch=True)
    return DecodeStats.stack([stats], (states.shape[0], 1))


def answer_columns(lm: LoadedModel, states: dict[str, torch.Tensor], target, k) -> tuple[int, dict[str, DecodeStats]]:
    """(target id, answer stats) of final-normed answer states {decoder: [L+1, d']}, "logit_lens" among them: one
    unembedding product for all (the [V, d] weight read once, not once a decoder and again for the model's own)."""
    logits = lm.adapter.head(torch.cat([value.to(lm.device, lm.dtype) for value in states.values()]))
    parts = dict(zip(states, logits.split([value.shape[0] for value in states.values()])))
    final_logprobs = torch.log_softmax(parts["logit_lens"][-1].float(), dim=-1)  # [V], the model's own
    target_id = resolve_target(lm, target, int(final_logprobs.argmax()))
    return target_id, {n: answer_stats_of(lm, states[n], final_logprobs, target_id, k, logits=parts[n]) for n in states}


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


def check_prompt(lm: LoadedModel, prompt: str, max_tokens: int = DEFAULT_TOKEN_LIMIT) -> list[int]:
    """Token ids (with `<s>`) of a usable prompt, or an InputError saying what is wrong; a prompt
    over `max_tokens` is refused naming that parameter (the CLI and the page say their own setting)."""
    check_text("the prompt", prompt)
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty: type some text to analyse")
    context = lm.max_positions or max_tokens
    limit = min(max_tokens, context)
    lift = (f"the model reads at most {context} tokens: shorten it" if context <= max_tokens
            else f"shorten it or raise `max_tokens` (up to {context})")
    too_long = overlong(prompt, limit)  # refused before tokenizing megabytes of text
    if too_long:
        raise InputError(f"the prompt has {too_long} (the limit); {lift}")
    ids = lm.encode(prompt)
    if len(ids) > limit:
        raise InputError(f"the prompt has {len(ids)} tokens (with the start token); the limit is {limit}: {lift}")
    return ids


def _forward(lm: LoadedModel, ids: list[int]):
    """The model's forward pass with hidden states; where the model allows, its head reads only
    the last position (the grids unembed their own chunks): a [positions x vocab] product saved."""
    kwargs = {"output_hidden_states": True, "use_cache": False}
    if "logits_to_keep" in inspect.signature(lm.model.forward).parameters:
        kwargs["logits_to_keep"] = 1
    return lm.model(input_ids=torch.tensor([ids], device=lm.device), **kwargs)


@operation
def analyze(
    lm: LoadedModel,
    prompt: str,
    top_k: int = 5,
    target: str | int | None = None,
    spade_positions: str = "original",
    without_bos: bool = False,
    max_tokens: int = DEFAULT_TOKEN_LIMIT,
    lenses: dict[str, AffineLens] | None = None,
) -> Analysis:
    """Decode every layer of `prompt` at its answer position, for the logit lens and SPADE.

    One forward pass, then the answer column of every decoder; the grids over all positions
    (`res.grids`, `res.grid("spade")`) are computed when read, a window at a time.
    `lenses` adds fitted affine decoders by name: a tuned lens gets a grid like the logit
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
    for lens in (lenses or {}).values():
        lens.check_matches(lm)
    ids = check_prompt(lm, prompt, max_tokens)
    answer = len(ids) - 1
    with torch.no_grad():
        out = _forward(lm, ids)
        residuals = torch.stack([h[0] for h in out.hidden_states[:-1]])  # [L, P, d]
        final_hidden = out.hidden_states[-1][0]  # [P, d'] after the final norm (and OPT's project_out)
        del out
        variants = {"spade": True, "spade_no_bos": False} if without_bos else {"spade": True}
        states = spade_final_states(lm, residuals[:, answer], final_hidden[answer], ids[-1], answer,
                                    spade_positions, tuple(variants.values()))
        answer_states = dict(zip(variants, states))
        # final-normed states at the answer for every decoder, so `retarget` needs no forward pass
        kept = {"logit_lens": lm.adapter.finalize(residuals[:, answer])}
        for name, lens in (lenses or {}).items():
            mapped = lens.apply(residuals[:, answer])
            if lens.kind == "tuned_lens":
                kept[name] = lm.adapter.finalize(mapped)
            else:
                answer_states[name] = torch.cat([mapped, final_hidden[answer : answer + 1]])
        for name, states in kept.items():
            answer_states[name] = torch.cat([states.to(final_hidden.device), final_hidden[answer : answer + 1]])
        target_id, answer_stats = answer_columns(lm, answer_states, target, top_k)

    residuals, final_hidden = residuals.cpu(), final_hidden.cpu()
    stores = {"logit_lens": lens_store(lm, residuals, final_hidden, top_k)}
    for name, lens in (lenses or {}).items():
        if lens.kind == "tuned_lens":
            stores[name] = lens_store(lm, residuals, final_hidden, top_k, lens, label=name.replace("_", " "))
    stores["spade"] = spade_store(lm, residuals, final_hidden, ids, spade_positions, top_k)
    seen = set(ids) | {target_id}
    for stats in answer_stats.values():
        seen |= set(np.unique(stats.top_ids).tolist())
    vocab = {i: lm.token_str(i) for i in seen}
    return Analysis(
        model_name=lm.name,
        num_layers=lm.num_layers,
        token_ids=ids,
        tokens=[vocab[i] for i in ids],
        answer_position=answer,
        spade_positions=spade_positions,
        top_k=top_k,
        target_id=target_id,
        grids={name: Grid(store, answer, answer_stats[name]) for name, store in stores.items() if name != "spade"},
        answer={name: answer_stats[name] for name in [*kept, *(n for n in answer_stats if n not in kept)]},
        vocab=vocab,
        residuals=residuals,
        final_hidden=final_hidden,
        answer_states={k: v.cpu() for k, v in answer_states.items()},
        stores=stores,
        token_str=functools.lru_cache(maxsize=None)(lm.token_str),
    )


def check_states_fit(lm: LoadedModel, analysis, what: str) -> None:
    """InputError unless `analysis` is an Analysis whose kept states this model can continue."""
    if not isinstance(analysis, Analysis):
        raise InputError(f"{what} needs an Analysis from analyze, not {type(analysis).__name__}")
    if analysis.model_name != lm.name or analysis.num_layers != lm.num_layers \
            or analysis.residuals.shape[-1] != lm.model.config.hidden_size:
        raise InputError(f"this analysis is of another model ({analysis.model_name}), not of {lm.name}")


@operation
def retarget(lm: LoadedModel, analysis: Analysis, target: str | int | None) -> Analysis:
    """The same analysis with another target token at the answer position; no model forward.

    The copy shares the hidden states and every array the target does not change (no tensor copied).
    """
    check_states_fit(lm, analysis, "retarget")
    answer = analysis.answer_position
    with torch.no_grad():
        states = {name: analysis.answer_states[name] for name in analysis.answer}
        target_id, answer_stats = answer_columns(lm, states, target, analysis.top_k)
    grids = {name: with_answer(grid, answer, answer_stats.get(name)) for name, grid in analysis.grids.items()}
    vocab = dict(analysis.vocab)
    vocab.setdefault(target_id, lm.token_str(target_id))
    return replace(analysis, target_id=target_id, grids=grids, answer=answer_stats, vocab=vocab)
