"""Dataset sweep: every example x every layer 0..L x every decoder, in batches.

For each example the model sees `<s>` + the tokens of the prompt, split where the gold answer
starts (`spade_viz.data.answer_split`); the answer position T is the last of them. Per batch:

- one right-padded forward with an attention mask (exact for every real token under causal
  attention) gives h_l[T] for l = 0..L at each example's own T;
- logit lens: final norm + unembedding of h_l[T] (layer L: the model's own output);
- SPADE: every (example, layer) row of the batch continued through the blocks above its layer
  (`continue_rows_in_bands`);
- linear SPADE: a per-layer affine map of h_l[T] (see `lenses.linear_spade`), then unembedding;
- tuned lens, when one is saved for this model.

Each decoder at each (example, layer) gives a top-1 token, whether it is the gold token and the
full model's answer, and an entropy. When a row has `choices`, top-1 is the best choice and
`entropy` is over the choices (`entropy_vocab` always covers the whole vocabulary).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.datasets import Dataset
from ..decoders import SWEEP_COLUMNS
from ..engine import batches
from ..errors import InputError
from ..lenses.affine import AffineLens, find_lens
from ..lenses.linear_spade import crossfit_states, fold_ids
from ..lenses.spade import batch_answer_rows
from ..lenses.stats import logit_stats
from ..models.loading import LoadedModel, operation
from ..progress import Progress
from .cache import cache_key, load_cached, read_shipped, save_cached, shipped_sweeps
from .linear_plan import LinearPlan, plan_linear_spade
from .prepared import prepare_dataset
from .results import SweepResult, SweepSettings

if TYPE_CHECKING:
    from .distributed import Processes

_STATS_CHUNK = 128  # rows decoded against the vocabulary at once (128 x V floats: < 32 MB, so the
# allocator reuses the memory instead of mapping fresh pages each time)
_FIELDS = ("top1", "entropy", "top1_vocab", "entropy_vocab")  # per decoder, each [n, L+1]


def _choice_matrix(choices: Sequence[tuple[int, ...] | None]) -> torch.Tensor:
    """[n, C] choice ids, -1 where a row has fewer (or none)."""
    width = max((len(c) for c in choices if c), default=0)
    matrix = torch.full((len(choices), max(width, 1)), -1, dtype=torch.long)
    for row, chosen in enumerate(choices):
        if chosen:
            matrix[row, : len(chosen)] = torch.as_tensor(chosen)
    return matrix


def _decode_rows(logits_of: Callable[[slice], torch.Tensor], n: int, choices: torch.Tensor,
                 shortlist: torch.Tensor | None = None):
    """Stats of n rows whose logits `logits_of(rows)` gives chunk by chunk; numpy arrays [n]."""
    parts = []
    for start in range(0, n, _STATS_CHUNK):
        rows = slice(start, min(start + _STATS_CHUNK, n))
        parts.append(logit_stats(logits_of(rows), choices[rows], shortlist))
    return {key: torch.cat([p[key] for p in parts]).cpu().numpy() for key in parts[0]}


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


def _shortlist(settings: SweepSettings) -> torch.Tensor | None:
    return torch.tensor(settings.confidence_shortlist) if settings.confidence_shortlist else None


def _readout(lm: LoadedModel, kind: str):
    return lm.adapter.logit_lens if kind == "lens" else lm.adapter.head


def _grid_stats(lm: LoadedModel, states: torch.Tensor, readout: str, final_stats: dict, choices: torch.Tensor,
                shortlist: torch.Tensor | None = None):
    """Stats of states [B, L, d] read by `readout`, with the model's own output as layer L: [B, L+1] each."""
    n, layers = states.shape[:2]
    flat = states.reshape(n * layers, -1)
    rows = choices.repeat_interleave(layers, 0)
    read = _readout(lm, readout)
    with torch.no_grad():
        stats = _decode_rows(lambda part: read(flat[part]), n * layers, rows, shortlist)
    return {key: np.concatenate([value.reshape(n, layers), final_stats[key][:, None]], 1)
            for key, value in stats.items()}


class _CrossfitInputs:
    """What cross-fitting needs of every example: its residual and SPADE states at the answer
    position [L, d] (float32, on the CPU), kept batch by batch and stacked in example order at the end."""

    def __init__(self):
        self.pieces: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []

    def add(self, batch: list[int], residuals: torch.Tensor, spade: torch.Tensor) -> None:
        self.pieces.append((batch, residuals.float().cpu(), spade.float().cpu()))

    def stacked(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals and SPADE states [n, L, d] in example order; each piece is let go once copied."""
        residuals = spade = None
        while self.pieces:
            batch, res, states = self.pieces.pop()
            if residuals is None:
                residuals = res.new_zeros((n, *res.shape[1:]))
                spade = states.new_zeros((n, *states.shape[1:]))
            residuals[batch] = res
            spade[batch] = states
        return residuals, spade


class _Swept:
    """The batches' numbers per example: every decoder's stats [n, L+1], the model's answer and the
    states cross-fitting needs; the rows of the batches this process swept (`rows`)."""

    def __init__(self, n: int, layers: int, names: list[str], crossfit: bool):
        self.out = {f: {name: np.zeros((n, layers + 1), dtype=np.int64 if "top1" in f else np.float32)
                        for name in names} for f in _FIELDS}
        self.final_ids = np.zeros(n, dtype=np.int64)
        self.kept = _CrossfitInputs() if crossfit else None
        self.rows: list[int] = []
        self.timings = {"model": 0.0, "decode": 0.0}

    def add(self, batch: list[int], final_stats: dict, grid_stats: dict) -> None:
        self.final_ids[batch] = final_stats["top1"]
        for name, stats in grid_stats.items():
            for f in _FIELDS:
                self.out[f][name][batch] = stats[f]
        self.rows += batch

    def share(self) -> tuple:
        """This process's rows (not the whole arrays), its kept states and timings: what rank 0 merges."""
        rows = np.asarray(self.rows, dtype=np.int64)
        return (rows, {f: {name: grid[rows] for name, grid in grids.items()} for f, grids in self.out.items()},
                self.final_ids[rows], self.kept, self.timings)

    def merge(self, shared: tuple) -> None:
        """Another process's `share()` written into these arrays; its timings added to these."""
        rows, out, final_ids, kept, timings = shared
        for f, grids in out.items():
            for name, grid in grids.items():
                self.out[f][name][rows] = grid
        self.final_ids[rows] = final_ids
        if self.kept is not None:
            self.kept.pieces += kept.pieces
        for stage, seconds in timings.items():
            self.timings[stage] += seconds


def _decode_batch(lm: LoadedModel, plan: LinearPlan, tuned: AffineLens | None, residuals: torch.Tensor,
                  final: torch.Tensor, spade: torch.Tensor, choices: torch.Tensor,
                  shortlist: torch.Tensor | None) -> tuple[dict, dict]:
    """One batch's (stats of the model's own answer [B], decoder name -> its stats [B, L+1]); linear
    SPADE only with a saved map (cross-fitting decodes it after the last batch)."""
    with torch.no_grad():
        final_stats = {k: v.cpu().numpy() for k, v in logit_stats(lm.adapter.head(final), choices).items()}
    grids = {"logit_lens": (residuals, "lens"), "spade": (spade, "head")}
    if plan.mode == "saved":
        with torch.no_grad():
            grids["linear_spade"] = (plan.lens.apply(residuals.transpose(0, 1)).transpose(0, 1), "head")
    if tuned is not None:
        with torch.no_grad():
            grids["tuned_lens"] = (tuned.apply(residuals.transpose(0, 1)).transpose(0, 1), "lens")
    return final_stats, {name: _grid_stats(lm, states, readout, final_stats, choices,
                                           shortlist if name == "linear_spade" else None)
                         for name, (states, readout) in grids.items()}


def _crossfit_linear_spade(lm: LoadedModel, prepared, plan: LinearPlan, settings: SweepSettings,
                           swept: _Swept, choices: torch.Tensor, progress: Progress | None) -> None:
    """Linear-SPADE stats [n, L+1] of every example into `swept`, each decoded from maps fitted on
    the other folds."""
    if progress:
        progress(0, 1, "cross-fitting linear SPADE")
    tick = time.perf_counter()
    folds = fold_ids([p.id for p in prepared], plan.folds)
    residuals, spade = swept.kept.stacked(len(prepared))
    predicted = crossfit_states(residuals, spade, folds, settings.ridge)
    final_stats = {f: swept.out[f]["logit_lens"][:, -1] for f in _FIELDS}  # layer L: the model's own output
    stats = _grid_stats(lm, predicted.to(lm.device, lm.dtype), "head", final_stats, choices,
                        _shortlist(settings))
    for f in _FIELDS:
        swept.out[f]["linear_spade"][:] = stats[f]
    swept.timings["linear_spade_crossfit"] = time.perf_counter() - tick
    if progress:
        progress(1, 1, "cross-fitting linear SPADE")


@operation
def run_sweep(
    lm: LoadedModel,
    dataset,
    settings: SweepSettings | None = None,
    *,
    use_cache: bool = True,
    linear_spade_map: AffineLens | str | Path | None = None,
    progress: Progress | None = None,
    processes: Processes | None = None,
) -> SweepResult | None:
    """Every usable example of `dataset` x layers 0..L x decoders; cached on disk (see module doc).

    `linear_spade_map`: a linear-SPADE map (or its file) to use instead of the saved default.
    `progress(done, total, stage)` is called as batches finish.
    `processes`: the processes sharing this sweep (`sweep.distributed.Processes`). Each sweeps every
    size-th batch of the one-process run (the same batches, so the same numbers) and rank 0 gathers
    them, cross-fits linear SPADE, writes the cache and returns the result (its model and decode
    timings summed over the processes); the others return None.
    """
    settings = _checked(lm, dataset, settings)
    prepared, skipped = prepare_dataset(lm, dataset, settings.max_tokens)
    if not prepared:
        reason = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise InputError(f"no usable example in '{dataset.name}'{reason}")
    plan, tuned, key = _lenses_and_key(lm, dataset, prepared, settings, linear_spade_map)
    rank, size = (processes.rank, processes.size) if processes is not None else (0, 1)
    cached = _load_for(key, dataset, plan, lm) if use_cache and rank == 0 else None
    if size > 1 and _agreed_hit(processes, key, cached is not None) and rank > 0:
        return None  # rank 0 returns its cached sweep
    if cached is not None:
        return cached

    started = time.perf_counter()
    n, layers = len(prepared), lm.num_layers
    choices_all = _choice_matrix([p.choice_ids for p in prepared])
    left_out = {"linear_spade": plan.mode == "off", "tuned_lens": tuned is None}
    names = [name for name in SWEEP_COLUMNS if not left_out.get(name)]
    swept = _Swept(n, layers, names, crossfit=plan.mode == "crossfit")
    mine = list(batches(prepared, settings.batch_size))[rank::size]
    total = sum(len(batch) for batch in mine)
    if progress:
        progress(0, total, "sweep")
    for batch in mine:
        tick = time.perf_counter()
        residuals, final, spade = batch_answer_rows(lm, [prepared[i] for i in batch], settings.spade_positions)
        swept.timings["model"] += time.perf_counter() - tick
        tick = time.perf_counter()
        swept.add(batch, *_decode_batch(lm, plan, tuned, residuals, final, spade, choices_all[torch.tensor(batch)],
                                        _shortlist(settings)))
        if swept.kept is not None:
            swept.kept.add(batch, residuals, spade)
        swept.timings["decode"] += time.perf_counter() - tick
        if progress:
            progress(len(swept.rows), total, "sweep")
    if size > 1:
        shared = processes.gather(swept.share())
        if shared is None:
            return None
        for part in shared[1:]:
            swept.merge(part)

    if swept.kept is not None:
        _crossfit_linear_spade(lm, prepared, plan, settings, swept, choices_all, progress)

    out, timings = swept.out, swept.timings
    ids = np.unique(np.concatenate([out["top1"][name].ravel() for name in names]
                                   + [out["top1_vocab"][name].ravel() for name in names]
                                   + [np.asarray([p.gold_id for p in prepared])]))
    timings["total"] = time.perf_counter() - started
    result = SweepResult(
        model_name=lm.name,
        fingerprint=lm.fingerprint(),
        dataset_name=dataset.name,
        dataset_hash=dataset.source_hash,
        num_layers=layers,
        settings=asdict(settings),
        example_ids=[p.id for p in prepared],
        n_tokens=np.asarray([len(p.token_ids) for p in prepared], dtype=np.int64),
        gold_ids=np.asarray([p.gold_id for p in prepared], dtype=np.int64),
        final_ids=swept.final_ids,
        n_choices=np.asarray([len(p.choice_ids) if p.choice_ids else 0 for p in prepared], dtype=np.int64),
        top1=out["top1"],
        entropy=out["entropy"],
        entropy_vocab=out["entropy_vocab"],
        top1_vocab=out["top1_vocab"],
        vocab={int(i): lm.token_str(int(i)) for i in ids},
        skipped=[tuple(s) for s in skipped],
        linear_spade_source=plan.source,
        info={"timings_s": timings, "cost": lm.parameter_counts(), "linear_spade_mode": plan.mode,
              "tuned_lens": tuned is not None, "cache_key": key},
    )
    if use_cache:
        save_cached(key, result)
    return result


def _agreed_hit(processes: Processes, key: str, hit: bool) -> bool:
    """Whether rank 0 found the sweep in its cache, once every process is known to sweep the same
    thing (same cache key: model, dataset, settings, lenses); else InputError in every process."""
    keys = processes.all_gather((key, hit))
    if len({k for k, _ in keys}) > 1:
        differ = [rank for rank, (k, _) in enumerate(keys) if k != keys[0][0]]
        raise InputError(f"the processes disagree on the sweep (process {differ[0]} has another model, dataset, "
                         "settings or saved lens than process 0): give every machine the same files")
    return keys[0][1]


def cached_sweep(lm: LoadedModel, dataset, settings: SweepSettings | None = None,
                 linear_spade_map: AffineLens | str | Path | None = None, *,
                 fallback_shipped: bool = False) -> SweepResult | None:
    """The cached result `run_sweep` would return, or None; never runs the model.

    `fallback_shipped`: when there is none, the sweep shipped with the package for these examples
    and settings (computed on a CPU in fp32, linear SPADE cross-fitted, no tuned lens) if it fits this
    model's weights, whatever lenses are saved: `info["differs"]` then says, one line each, how it
    differs from what `run_sweep` would compute (a saved lens it lacks, the device or precision);
    `shipped_sweep_problem` says why none fits.
    """
    settings = _checked(lm, dataset, settings)
    prepared, _ = prepare_dataset(lm, dataset, settings.max_tokens)
    if not prepared:
        return None
    plan, tuned, key = _lenses_and_key(lm, dataset, prepared, settings, linear_spade_map)
    result = _load_for(key, dataset, plan, lm)
    if result is not None or not fallback_shipped:
        return result
    shipped = shipped_sweeps().get(dataset.source_hash)
    if shipped is None or not settings.makes(SweepSettings(**shipped["settings"]), prepared):
        return None
    result = read_shipped(shipped["key"], lm)  # None: another model's weights
    if result is None:
        return None
    differs = []
    if plan.mode == "saved":
        differs.append("linear SPADE: cross-fitted on these examples, not your saved map (Run the sweep to use it)")
    if tuned is not None and "tuned_lens" not in result.decoders:
        differs.append("no tuned-lens column: the saved tuned lens is not in it (Run the sweep to add it)")
    if lm.device.type != "cpu" or lm.dtype != torch.float32:
        differs.append(f"computed on a CPU in fp32, this model runs on {lm.device.type} in "
                       f"{str(lm.dtype).replace('torch.', '')}: the last digits may differ")
    result.dataset_name = dataset.name
    result.info = {**(result.info or {}), "precomputed": True, "differs": differs}
    return result


def shipped_sweep_problem(lm: LoadedModel, dataset, settings: SweepSettings | None = None) -> str | None:
    """Why the sweep shipped for these examples cannot stand in for this model's (one line), or None:
    none is shipped for them, or one fits (`cached_sweep(..., fallback_shipped=True)` returns it)."""
    settings = _checked(lm, dataset, settings)
    shipped = shipped_sweeps().get(dataset.source_hash)
    if shipped is None:
        return None
    if not settings.makes(SweepSettings(**shipped["settings"]), prepare_dataset(lm, dataset, settings.max_tokens)[0]):
        return "the sweep shipped for these examples used the default settings, not these"
    if shipped["fingerprint"] != lm.fingerprint():
        return (f"the sweep shipped for these examples was computed on the default model's fp32 weights; this "
                f"model's weights differ (another model, or the {str(lm.dtype).replace('torch.', '')} precision)")
    return None


def sweep_cache_key(lm: LoadedModel, dataset, settings: SweepSettings | None = None,
                    linear_spade_map: AffineLens | str | Path | None = None) -> str | None:
    """The disk-cache key `run_sweep` would use for `dataset` (None: no usable example); never runs the model."""
    settings = _checked(lm, dataset, settings)
    prepared, _ = prepare_dataset(lm, dataset, settings.max_tokens)
    return _lenses_and_key(lm, dataset, prepared, settings, linear_spade_map)[2] if prepared else None


def _lenses_and_key(lm: LoadedModel, dataset, prepared, settings: SweepSettings, linear_spade_map):
    """(linear-SPADE plan, tuned lens or None, cache key) of a sweep over the `prepared` examples."""
    usable = [dataset.examples[p.index] for p in prepared]
    plan = plan_linear_spade(lm, usable, dataset.name, settings, linear_spade_map)
    tuned = find_lens(lm, "tuned_lens") if settings.tuned_lens else None
    return plan, tuned, cache_key(lm, dataset, settings.keyed(prepared), plan.key(), tuned)


def _checked(lm, dataset, settings) -> SweepSettings:
    """The settings (default when None) once the arguments are of the right kinds, else InputError."""
    if not isinstance(lm, LoadedModel):
        raise InputError(f"a sweep needs a model from load_model, not {type(lm).__name__}")
    if not isinstance(dataset, Dataset):
        raise InputError(f"a sweep needs a Dataset (load_builtin, load_dataset), not {type(dataset).__name__}")
    if settings is not None and not isinstance(settings, SweepSettings):
        raise InputError(f"settings must be a SweepSettings, not {type(settings).__name__}")
    settings = settings or SweepSettings()
    vocab = lm.adapter.lm_head.weight.shape[0]
    if any(token >= vocab for token in settings.confidence_shortlist):
        raise InputError(f"the confidence shortlist names tokens beyond this model's vocabulary of {vocab}")
    return settings


def _load_for(key: str, dataset, plan: LinearPlan, lm: LoadedModel) -> SweepResult | None:
    """The cached sweep under `key`, named after this dataset and this plan's note (same maps; the
    note on a saved file may differ); an entry whose shapes do not fit `lm` is a miss."""
    result = load_cached(key, lm)
    if result is not None:
        result.dataset_name = dataset.name
        result.linear_spade_source = plan.source
    return result
