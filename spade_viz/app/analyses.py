"""The analyses of this process, shared by every session, within a byte budget.

Analyses are kept by (model, prompt, SPADE positions, token limit, saved lenses) in one store per
process (`SPADE_VIZ_CACHE_MB`, default 256); changing the target re-decodes the answer position
from the kept hidden states (`sv.retarget`, sharing them), never the whole model. SPADE at every
position is kept beside them. Sessions asking for the same analysis at once compute it once, and
each view's figures are built once for all sessions. `ANALYSIS_RUNS` counts real forward passes
(tests use it to prove a view change did not recompute).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import streamlit as st

import spade_viz as sv

from ..lenses.affine import KINDS, default_lens_path, find_lens
from ..limits import DEFAULT_TOKEN_LIMIT
from .models import model_key, serve_settings

ANALYSIS_CACHE_ENTRIES = 16
RETARGET_CACHE_ENTRIES = 32  # per analysis
FIGURE_ENTRIES = 24  # views (an analysis's figures in one metric, window, target...) kept for all sessions


def _env_int(name: str, default: int) -> int:
    try:
        return max(2, int(os.environ.get(name, default)))
    except ValueError:
        return default


DEFAULT_MAX_TOKENS = _env_int("SPADE_VIZ_MAX_TOKENS", DEFAULT_TOKEN_LIMIT)  # the Explore page's default token limit
ANALYSIS_CACHE_MB = _env_int("SPADE_VIZ_CACHE_MB", 256)  # bytes the kept analyses may hold, all sessions together
ANALYSIS_RUNS = 0  # real forward passes made by `analysis` in this process


def _lens_signature(lm: sv.LoadedModel) -> tuple:
    """Which saved lenses exist for this model (and when they were written)."""
    try:
        paths = [(kind, default_lens_path(lm, kind)) for kind in KINDS]
        return tuple((kind, path.stat().st_mtime_ns) for kind, path in paths if path.exists())
    except (OSError, sv.SpadeVizError):
        return ()


@st.cache_resource(max_entries=4, show_spinner=False)
def _lenses(key: tuple, signature: tuple, _lm: sv.LoadedModel) -> tuple[dict, tuple[str, ...]]:
    lenses, problems = {}, []
    for kind, _mtime in signature:
        try:
            lens = find_lens(_lm, kind)
        except sv.SpadeVizError as err:
            problems.append(str(err))
        else:
            if lens is not None:
                lenses[kind] = lens
    return lenses, tuple(problems)


def lens_problems(lm: sv.LoadedModel) -> tuple[str, ...]:
    """Why a saved tuned lens / linear SPADE could not be used (empty when all is well)."""
    return _lenses(model_key(lm), _lens_signature(lm), lm)[1]


def analysis_nbytes(res: sv.Analysis, shared_with: sv.Analysis | None = None) -> int:
    """Bytes held by `res` (hidden states, statistics, each grid's cache at full size), counting each
    buffer once and leaving out those it shares with `shared_with` (a retarget shares almost all)."""
    mine, theirs = res.buffers(), (shared_with.buffers() if shared_with is not None else {})
    return sum(size for key, size in mine.items() if key not in theirs)


class AnalysisStore:
    """The analyses of this process (all sessions), kept within a byte budget (`SPADE_VIZ_CACHE_MB`).

    Objects are kept as they are, not pickled per session as `st.cache_data` would: a retargeted
    analysis shares its base's hidden states and is stored under it, costing only its own few
    arrays. Least recently used bases go first (with their retargets); the newest always stays, so
    one analysis larger than the budget is still computed once, not on every rerun. Callers must not
    change what they get.
    """

    def __init__(self, budget_bytes: int, max_entries: int = ANALYSIS_CACHE_ENTRIES,
                 max_targets: int = RETARGET_CACHE_ENTRIES) -> None:
        self.lock = threading.Lock()
        self.budget, self.max_entries, self.max_targets = budget_bytes, max_entries, max_targets
        self.entries: OrderedDict[tuple, dict] = OrderedDict()  # key -> {"res", "size", "targets"}
        self.pending: dict[tuple, threading.Event] = {}  # keys being computed now, set when done
        self.figures: OrderedDict[tuple, tuple] = OrderedDict()  # (source ids, view) -> (weak refs, figures)

    @property
    def nbytes(self) -> int:
        """Bytes the kept analyses hold now."""
        with self.lock:
            return sum(self._size(entry) for entry in self.entries.values())

    @staticmethod
    def _size(entry: dict) -> int:
        return entry["size"] + sum(size for _res, size in entry["targets"].values())

    def get(self, key: tuple, compute) -> sv.Analysis:
        """The analysis under `key`, computed by `compute()` when it is not kept. Sessions asking for
        the same key at once wait for the first one's result instead of computing it again (a class
        opening the same preset costs one analysis); if that computation fails, the next one tries."""
        while True:
            with self.lock:
                entry = self.entries.get(key)
                if entry is not None:
                    self.entries.move_to_end(key)
                    return entry["res"]
                running = self.pending.get(key)
                if running is None:
                    done = self.pending[key] = threading.Event()
                    break
            running.wait()  # then look again: kept now, or failed (this session computes)
        try:
            res = compute()
            with self.lock:
                self.entries[key] = {"res": res, "size": analysis_nbytes(res), "targets": OrderedDict()}
                self._evict()
            return res
        finally:
            with self.lock:
                del self.pending[key]
            done.set()

    def view(self, sources: tuple, view: tuple, build):
        """`build()` (the figures of the objects `sources` in one view) once per sources and view, for
        every session and rerun: a rerun that changed no input rebuilds nothing. The last
        `FIGURE_ENTRIES` views are kept, holding their sources weakly (figures never keep an analysis
        the byte budget dropped); callers must not change what they get."""
        key = (tuple(id(source) for source in sources), view)
        with self.lock:
            kept = self.figures.get(key)
            if kept is not None and all(ref() is source for ref, source in zip(kept[0], sources)):
                self.figures.move_to_end(key)
                return kept[1]
        built = build()
        with self.lock:  # weak references: an id reused by a newer object is told apart
            self.figures[key] = (tuple(weakref.ref(source) for source in sources), built)
            self.figures.move_to_end(key)
            while len(self.figures) > FIGURE_ENTRIES:
                self.figures.popitem(last=False)
        return built

    def get_target(self, key: tuple, target, compute_base, retarget) -> sv.Analysis:
        """The analysis under `key` retargeted to `target` (`retarget(base)`), kept with its base."""
        base = self.get(key, compute_base)
        with self.lock:
            entry = self.entries.get(key)
            kept = entry["targets"].get(target) if entry is not None else None
            if kept is not None:
                entry["targets"].move_to_end(target)
                return kept[0]
        res = retarget(base)
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None and entry["res"] is base:
                entry["targets"][target] = (res, analysis_nbytes(res, shared_with=base))
                while len(entry["targets"]) > self.max_targets:
                    entry["targets"].popitem(last=False)
                self._evict()
        return res

    def _evict(self) -> None:
        total = sum(self._size(entry) for entry in self.entries.values())
        while len(self.entries) > 1 and (total > self.budget or len(self.entries) > self.max_entries):
            _key, old = self.entries.popitem(last=False)
            total -= self._size(old)


_STORE = AnalysisStore(ANALYSIS_CACHE_MB * 2**20)  # module-level: the warm start fills it before the runtime


def _analysis_store() -> AnalysisStore:
    return _STORE


def figures(sources: tuple, view: tuple, build) -> dict:
    """The figures `build()` makes of the kept objects `sources` (an analysis, a SPADE grid) in `view`
    (every other input they read), built once for all sessions."""
    return _analysis_store().view(sources, view, build)


def _analyze(lm: sv.LoadedModel, prompt: str, spade_positions: str, max_tokens: int, lenses: dict):
    global ANALYSIS_RUNS
    ANALYSIS_RUNS += 1
    return sv.analyze(lm, prompt, top_k=5, spade_positions=spade_positions, max_tokens=max_tokens,
                      lenses=lenses or None)


def analysis(lm: sv.LoadedModel, prompt: str, spade_positions: str = "original",
             max_tokens: int = DEFAULT_MAX_TOKENS, target: str | int | None = None,
             without_bos: bool = False) -> sv.Analysis:
    """`sv.analyze` through the bounded store (with any saved lenses for this model).

    `target` None: the model's final top-1. Otherwise a token id, `#id`, or token text;
    changing it re-decodes from kept states without a forward pass. `without_bos` adds the
    "SPADE without <s>" ablation to the kept analysis, computed only when a view first asks for it.
    Raises `sv.SpadeVizError`.
    """
    key, signature = model_key(lm), _lens_signature(lm)
    lenses = _lenses(key, signature, lm)[0]
    max_tokens = min(int(max_tokens), serve_settings().max_prompt_tokens)  # server mode's limit
    entry = (key, lm.fingerprint(), prompt, spade_positions, int(max_tokens), signature)
    store = _analysis_store()

    def compute() -> sv.Analysis:
        return _analyze(lm, prompt, spade_positions, int(max_tokens), lenses)

    if without_bos:
        entry, base_entry, compute_base = (*entry, "without_bos"), entry, compute

        def compute() -> sv.Analysis:
            return sv.with_spade_no_bos(lm, store.get(base_entry, compute_base))

    if target is None or target == "":
        return store.get(entry, compute)
    return store.get_target(entry, target, compute, lambda base: sv.retarget(lm, base, target))
