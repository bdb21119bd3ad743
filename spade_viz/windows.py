"""The layers x positions grids of one analysed prompt, computed on demand, a window at a time.

A grid (the logit lens, a tuned lens, SPADE at every position) is cut into chunks of positions,
every layer each. A chunk is computed once, by the first caller that needs it, from the hidden
states the analysis kept (no new forward pass), and never as the whole [layers, positions,
vocabulary] tensor: about `_CHUNK_ROWS` rows of logits at a time. Other threads that need the
same chunk wait for it; a cancel hook is checked between chunks, and a cancelled or failed chunk
is left missing, so the cache only ever holds finished chunks.

Chunk boundaries depend only on the grid, never on the window asked for, so a grid filled
window by window is exactly the grid filled at once. They are counted back from the answer, in
widths that divide `VIEW`: the first view a page shows (the `VIEW` positions ending at the
answer) is whole chunks, and nothing outside it is computed for it. The answer's own column is
never computed here: the analysis already has it (`Grid` shows its answer statistics there).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from .engine import continue_rows_in_bands
from .errors import InputError, SpadeVizError, check_int
from .lenses.affine import AffineLens
from .lenses.spade import spade_position
from .lenses.stats import Buffers, DecodeStats, distribution_stats
from .models.loading import LoadedModel, operation
from .progress import Progress

_CHUNK_ROWS = 256  # (layer, position) rows decoded at once, at most: ~256 x vocab floats of logits
VIEW = 14  # positions a layers x positions heatmap shows at once (the Explore page's window): readable cells
FIELDS = ("top_ids", "top_probs", "entropy", "kl_to_final", "target_prob", "target_rank")


class Cancelled(SpadeVizError):
    """Long work stopped between two chunks because its cancel hook asked; finished chunks are kept."""


def _check_cancel(cancel: Callable[[], bool] | None, what: str) -> None:
    if cancel is not None and cancel():
        raise Cancelled(f"{what}: cancelled")


class GridStore:
    """One decoder's [L+1, P] statistics, chunk by chunk, shared by an analysis and its retargets.

    `compute(start, stop, buffers)` returns the arrays {field: [L+1, stop-start, ...]} of positions
    [start, stop), with `buffers` to reuse from one chunk to the next; the last position (the
    answer) is never asked for. Arrays are allocated at full size once (what `nbytes` counts), so
    the memory of a grid never grows. Thread-safe: a chunk is computed by one thread; the others
    wait for it (or for their cancel).
    """

    def __init__(self, label: str, layers: int, positions: int, k: int, width: int,
                 compute: Callable[[int, int, Buffers], dict[str, np.ndarray]], rows: Callable[[int, int], int]):
        self.label, self.positions, self.width = label, positions, max(1, width)
        self._compute, self._rows = compute, rows  # rows(start, stop): the work of positions, for progress
        count = -(-positions // self.width)
        self._origin = positions - count * self.width  # chunk c starts at origin + c * width (the last ends at P)
        self.arrays = {
            "top_ids": np.full((layers, positions, k), -1, dtype=np.int64),
            "top_probs": np.full((layers, positions, k), np.nan, dtype=np.float32),
            **{name: np.full((layers, positions), np.nan, dtype=np.float32)
               for name in ("entropy", "kl_to_final", "target_prob")},
            "target_rank": np.zeros((layers, positions), dtype=np.int64),
        }
        self._state: list[bool | threading.Event] = [False] * count
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays.values())

    def _chunks(self, start: int, stop: int) -> range:
        return range((start - self._origin) // self.width, -(-(stop - self._origin) // self.width))

    def _bounds(self, chunk: int) -> tuple[int, int]:
        return max(0, self._origin + chunk * self.width), self._origin + (chunk + 1) * self.width

    def _computed(self, chunk: int) -> tuple[int, int]:
        """The positions of a chunk computed here: all but the answer."""
        start, stop = self._bounds(chunk)
        return start, min(stop, self.positions - 1)

    def is_filled(self, start: int = 0, stop: int | None = None) -> bool:
        """Whether every chunk of positions [start, stop) is computed."""
        stop = self.positions if stop is None else stop
        with self._lock:
            return all(self._state[c] is True for c in self._chunks(start, stop))

    def missing(self) -> list[tuple[int, int]]:
        """[start, stop) of every chunk not finished."""
        with self._lock:
            return [self._bounds(c) for c, state in enumerate(self._state) if state is not True]

    def fill(self, start: int = 0, stop: int | None = None, cancel: Callable[[], bool] | None = None,
             progress: Progress | None = None, buffers: Buffers | None = None) -> None:
        """Compute every missing chunk of positions [start, stop); `progress(done, total, label)` in
        (layer, position) rows; `Cancelled` when `cancel()` turns true between chunks. `buffers`: the
        caller's, to share with its other fills (default: this call's own)."""
        stop = self.positions if stop is None else stop
        with self._lock:
            todo = [c for c in self._chunks(start, stop) if self._state[c] is not True]
        sizes = [self._rows(*self._computed(c)) for c in todo]
        total, done = sum(sizes), 0
        if progress:
            progress(0, total, self.label)
        buffers = Buffers() if buffers is None else buffers
        for chunk, size in zip(todo, sizes):
            self._fill_chunk(chunk, cancel, buffers)
            done += size
            if progress:
                progress(done, total, self.label)

    def _fill_chunk(self, chunk: int, cancel: Callable[[], bool] | None, buffers: Buffers) -> None:
        while True:
            with self._lock:
                state = self._state[chunk]
                if state is True:
                    return
                mine = state is False
                if mine:
                    _check_cancel(cancel, self.label)  # (under the lock: cheap, and nothing claimed yet)
                    state = self._state[chunk] = threading.Event()
            if not mine:  # another thread computes it: wait, then look again (it may have been cancelled)
                while not state.wait(0.05):
                    _check_cancel(cancel, self.label)
                continue
            try:
                start, stop = self._computed(chunk)
                if start < stop:
                    values = self._compute(start, stop, buffers)
                    for name, array in self.arrays.items():
                        array[:, start:stop] = values[name]
            except BaseException:
                with self._lock:
                    self._state[chunk] = False
                state.set()
                raise
            with self._lock:
                self._state[chunk] = True
            state.set()
            return


class Grid:
    """One decoder's grid as an analysis shows it: the store's chunks, with the answer column
    taken from the analysis's answer statistics (its target, and the very numbers the answer views
    show). Reading a field (`entropy`, `top_ids`, ...) fills the whole grid; `window` fills and
    returns only the positions asked for."""

    def __init__(self, store: GridStore, answer_position: int, answer: DecodeStats):
        self.store, self.answer_position, self.answer = store, answer_position, answer
        self._full: DecodeStats | None = None

    @property
    def num_positions(self) -> int:
        return self.store.positions

    def _check(self, start, stop) -> tuple[int, int]:
        stop = self.num_positions if stop is None else check_int("stop", stop, 1, self.num_positions)
        start = check_int("start", start, 0, stop - 1)
        return start, stop

    def is_filled(self, start: int = 0, stop: int | None = None) -> bool:
        """Whether positions [start, stop) are computed (reading them then costs nothing)."""
        return self.store.is_filled(*self._check(start, stop))

    def fill(self, start: int = 0, stop: int | None = None, cancel: Callable[[], bool] | None = None,
             progress: Progress | None = None, buffers: Buffers | None = None) -> None:
        """Compute positions [start, stop) (all by default) where not yet done; see `GridStore.fill`."""
        self.store.fill(*self._check(start, stop), cancel=cancel, progress=progress, buffers=buffers)

    def window(self, start: int = 0, stop: int | None = None, cancel: Callable[[], bool] | None = None,
               progress: Progress | None = None) -> DecodeStats:
        """Statistics [L+1, stop - start] of positions [start, stop), computed where missing."""
        start, stop = self._check(start, stop)
        self.store.fill(start, stop, cancel=cancel, progress=progress)
        return self._patched(start, stop)

    def partial(self, start: int = 0, stop: int | None = None) -> DecodeStats:
        """The whole grid's shape with only positions [start, stop) shown, as computed so far (nothing is
        computed now): every other cell holds NaN (top ids -1, rank 0), so what a figure reads of it
        (a colour range, a peak) never depends on which windows were viewed before."""
        start, stop = self._check(start, stop)
        return self._patched(0, self.num_positions, shown=(start, stop))

    def _patched(self, start: int, stop: int, shown: tuple[int, int] | None = None) -> DecodeStats:
        arrays = {name: array[:, start:stop].copy() for name, array in self.store.arrays.items()}
        if shown is not None:  # a chunk another thread is writing shows as missing, never half written
            hidden = [(0, shown[0]), (shown[1], self.num_positions), *self.store.missing()]
            for begin, end in hidden:
                for name, array in arrays.items():
                    array[:, begin:end] = -1 if name == "top_ids" else 0 if name == "target_rank" else np.nan
        if start <= self.answer_position < stop:
            for name in FIELDS:
                arrays[name][:, self.answer_position - start] = getattr(self.answer, name)[:, 0]
        return DecodeStats(**arrays)

    def _whole(self) -> DecodeStats:
        if self._full is None:
            self._full = self.window()
        return self._full

    def column(self, position: int) -> DecodeStats:
        """One position's statistics [L+1, 1] (as `DecodeStats.column`), computing only its chunk."""
        position = position % self.num_positions
        return self.window(position, position + 1)

    top_ids = property(lambda self: self._whole().top_ids)
    top_probs = property(lambda self: self._whole().top_probs)
    entropy = property(lambda self: self._whole().entropy)
    kl_to_final = property(lambda self: self._whole().kl_to_final)
    target_prob = property(lambda self: self._whole().target_prob)
    target_rank = property(lambda self: self._whole().target_rank)
    top1 = property(lambda self: self._whole().top1)


def _numpy(stats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: value.cpu().numpy() for name, value in stats.items()}


def chunk_width(layers: int) -> int:
    """Positions per chunk: the widest that divides `VIEW` with at most `_CHUNK_ROWS` (layer, position)
    rows (or one position)."""
    most = max(1, _CHUNK_ROWS // (layers + 1))
    return max(w for w in range(1, VIEW + 1) if VIEW % w == 0 and w <= most)


@operation
def lens_chunk(lm: LoadedModel, residuals: torch.Tensor, final_hidden: torch.Tensor, k: int,
               lens: AffineLens | None, start: int, stop: int, buffers: Buffers) -> dict[str, np.ndarray]:
    """Logit lens (or a tuned lens) at positions [start, stop) of every layer, then the model's own
    output as layer L, in one unembedding product; each position follows the model's final top-1.
    `buffers`: the caller's, reused for the logits and their statistics."""
    with torch.no_grad():
        raw = residuals[:, start:stop].to(lm.device, lm.dtype)
        mapped = raw if lens is None else lens.apply(raw)
        final = final_hidden[start:stop].to(lm.device, lm.dtype)
        states = torch.cat([lm.adapter.finalize(mapped).to(final.device), final[None]])
        logits = lm.adapter.head(states, out=_logits_buffer(lm, buffers, states.shape[:-1]))
        final_logprobs = torch.log_softmax(logits[-1].float(), dim=-1)
        return _numpy(distribution_stats(logits, final_logprobs, final_logprobs.argmax(-1), k, scratch=True,
                                         buffers=buffers))


def _logits_buffer(lm: LoadedModel, buffers: Buffers, rows: tuple[int, ...]) -> torch.Tensor:
    """The reused tensor the unembedding of `rows` states writes its logits into."""
    return buffers.take("logits", (*rows, lm.adapter.lm_head.weight.shape[0]), lm.dtype, lm.adapter.output_device)


@operation
def spade_chunk(lm: LoadedModel, residuals: torch.Tensor, final_hidden: torch.Tensor, token_ids: list[int],
                mode: str, k: int, start: int, stop: int, buffers: Buffers) -> dict[str, np.ndarray]:
    """SPADE at positions [start, stop) of every layer, each position in turn the answer (see
    `sv.spade_grid`); position 0 is `<s>` itself, the model's own output at every layer.
    `buffers`: the caller's, reused for the logits and their statistics."""
    layers = lm.num_layers
    with torch.no_grad():
        final_logits = lm.adapter.head(final_hidden[start:stop].to(lm.device, lm.dtype))
        final_logprobs = torch.log_softmax(final_logits.float(), dim=-1)
        targets = final_logprobs.argmax(-1)
        own = distribution_stats(final_logits, final_logprobs, targets, k, scratch=True)
        out = {name: value.unsqueeze(0).repeat(layers + 1, *([1] * value.dim())) for name, value in own.items()}
        first = max(start, 1)
        if first < stop:
            count = stop - first
            rows_l = torch.arange(layers).repeat_interleave(count)
            rows_i = torch.arange(first, stop).repeat(layers)
            positions = rows_i if mode == "original" else torch.full_like(rows_i, spade_position(0, mode, True))
            states = continue_rows_in_bands(lm, residuals[rows_l, rows_i].to(lm.device, lm.dtype), rows_l,
                                            torch.as_tensor(token_ids)[rows_i], positions, chunk=_CHUNK_ROWS * 4)
            logits = lm.adapter.head(states, out=_logits_buffer(lm, buffers, states.shape[:-1])).view(layers, count, -1)
            cut = slice(first - start, None)
            stats = distribution_stats(logits, final_logprobs[cut], targets[cut], k, scratch=True, buffers=buffers)
            for name, value in stats.items():
                out[name][:layers, cut] = value.to(out[name].dtype)
        return _numpy(out)


def lens_store(lm: LoadedModel, residuals, final_hidden, k: int, lens: AffineLens | None = None,
               label: str = "logit lens") -> GridStore:
    """The chunk cache of the logit lens (or of a tuned lens `lens`) over kept hidden states."""
    layers, positions = residuals.shape[0], residuals.shape[1]
    return GridStore(label, layers + 1, positions, k, chunk_width(layers),
                     functools.partial(lens_chunk, lm, residuals, final_hidden, k, lens),
                     rows=lambda start, stop: (layers + 1) * (stop - start))


def spade_store(lm: LoadedModel, residuals, final_hidden, token_ids: list[int], mode: str, k: int) -> GridStore:
    """The chunk cache of SPADE at every position over kept hidden states."""
    layers, positions = residuals.shape[0], residuals.shape[1]
    if mode not in ("original", "renumbered"):
        raise InputError(f"spade_positions must be original or renumbered, not {mode!r}")
    return GridStore("SPADE at every position", layers + 1, positions, k, chunk_width(layers),
                     functools.partial(spade_chunk, lm, residuals, final_hidden, token_ids, mode, k),
                     rows=lambda start, stop: layers * max(0, stop - max(start, 1)))


def with_answer(grid: Grid | DecodeStats, answer: int, stats: DecodeStats | None) -> Grid | DecodeStats:
    """A grid whose answer column follows `stats` (the analysis's answer statistics, its target)."""
    if stats is None:
        return grid
    if isinstance(grid, Grid):
        return Grid(grid.store, answer, stats)
    grid = replace(grid, target_prob=grid.target_prob.copy(), target_rank=grid.target_rank.copy())
    grid.target_prob[:, answer] = stats.target_prob[:, 0]
    grid.target_rank[:, answer] = stats.target_rank[:, 0]
    return grid
