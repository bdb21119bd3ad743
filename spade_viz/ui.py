"""Streamlit-only code shared by every page: the sidebar model picker, caches, messages.

Pages stay thin: read widgets, call these helpers and `spade_viz`, draw `spade_viz.viz` figures.

    from spade_viz import ui

    st.set_page_config(page_title="...", layout="wide")   # first, as usual
    lm = ui.sidebar_model()        # the sidebar picker; LoadedModel, or None after showing why
    ui.explain("One or two sentences for a student, above a view.")
    ui.send_to_explore(prompt)     # open the Explore page on this prompt (analysed on arrival)
    try:
        res = ui.analysis(lm, prompt, spade_positions="original", max_tokens=512, target=None)
    except sv.SpadeVizError as err:
        ui.show_error(err)         # a clear one-line message; the rest of the page keeps working

- Models are held by one `st.cache_resource` pool per process, shared by all sessions, keyed by
  (name, device, dtype): one at a time outside server mode (picking another replaces it), up to
  `max_models` in server mode (`spade_viz.serve`). A failed load is remembered per session (no
  retry loop on every rerun) until the user presses "Retry" or picks something else.
- Analyses are kept by (model, prompt, SPADE positions, token limit, saved lenses) in one store
  per process with a byte budget (`SPADE_VIZ_CACHE_MB`, default 256); changing the target
  re-decodes the answer position from the kept hidden states (`sv.retarget`, sharing them), never
  the whole model. `ANALYSIS_RUNS` counts real forward
  passes (tests use it to prove a view change did not recompute).
- The sidebar widgets keep their values across pages (`persist_state="session"`), keys
  `sv_model`, `sv_model_path`, `sv_device`, `sv_dtype`.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

import spade_viz as sv
from spade_viz import links
from spade_viz.data import DatasetError, builtin_tasks, load_builtin, load_dataset, load_hf_dataset
from spade_viz.serve import JobQueue, ServeSettings

OTHER = "__other__"
DEVICES = ("auto", "cpu", "cuda", "mps")
ANALYSIS_CACHE_ENTRIES = 16
RETARGET_CACHE_ENTRIES = 32  # per analysis


def _env_int(name: str, default: int) -> int:
    try:
        return max(2, int(os.environ.get(name, default)))
    except ValueError:
        return default


DEFAULT_MAX_TOKENS = _env_int("SPADE_VIZ_MAX_TOKENS", 512)  # the Explore page's default token limit
ANALYSIS_CACHE_MB = _env_int("SPADE_VIZ_CACHE_MB", 256)  # bytes the kept analyses may hold, all sessions together
PRESETS_FILE = resources.files("spade_viz") / "assets" / "presets.json"  # package data
DEFAULT_LABEL = "SmolLM2-135M-Instruct (embedded default)"

ANALYSIS_RUNS = 0  # real forward passes made by `analysis` in this process
MODEL_LOADS = 0  # real model loads made by the shared slot in this process


# ---------------------------------------------------------------- messages


def explain(text: str) -> None:
    """A short explanation above a view (one or two sentences, written for a student)."""
    st.caption(text)


def show_error(err: BaseException | str, where=None) -> None:
    """A user-facing error as one clear line (no traceback)."""
    message = str(err).strip() or type(err).__name__
    (where or st).error(message[:1].upper() + message[1:], icon=":material/error:")


# ---------------------------------------------------------------- the model


class _ModelPool:
    """The models this process holds, shared by all sessions through `st.cache_resource`.

    At most `capacity` are resident (outside server mode one: picking another model replaces it),
    the least recently used unloaded first, so visitors who pick different allowed models do not
    take each other's away. Sessions keep using resident models while another loads (one load at
    a time); a model is unloaded only once the new one is ready, so a failed load leaves everything
    in place. Memory: `capacity` models plus the one being loaded; a session still computing on an
    unloaded model keeps it until that computation ends (its result stays correct).
    """

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(1, int(capacity))
        self.lock = threading.Lock()  # guards models
        self.loading = threading.Lock()  # one load at a time
        self.models: OrderedDict[tuple[str, str, str], sv.LoadedModel] = OrderedDict()  # least recent first

    def resident(self, key: tuple[str, str, str]) -> sv.LoadedModel | None:
        """The model under `key` if it is loaded (and now the most recently used), else None."""
        with self.lock:
            lm = self.models.get(key)
            if lm is not None:
                self.models.move_to_end(key)
            return lm

    def get(self, key: tuple[str, str, str], progress) -> sv.LoadedModel:
        """The model under `key`, loaded if needed; the least recently used go past the capacity."""
        global MODEL_LOADS
        lm = self.resident(key)
        if lm is not None:
            return lm
        with self.loading:
            lm = self.resident(key)
            if lm is not None:  # another session loaded it while this one waited
                return lm
            name, device, dtype = key
            lm = sv.load_model(name, device=device, dtype=dtype, progress=progress)
            with self.lock:
                self.models[key] = lm
                unloaded = [self.models.popitem(last=False)[1] for _ in range(len(self.models) - self.capacity)]
            MODEL_LOADS += 1
        for old in unloaded:
            _release(old)
        return lm


def _release(lm: sv.LoadedModel) -> None:
    """Give a replaced model's memory back once nothing else holds it."""
    on_cuda = getattr(lm.device, "type", "") == "cuda"
    del lm
    gc.collect()
    if on_cuda:
        import torch

        torch.cuda.empty_cache()


@st.cache_resource(show_spinner=False)
def _model_pool(capacity: int) -> _ModelPool:
    return _ModelPool(capacity)


def serve_settings() -> ServeSettings:
    """Server mode's settings (`SPADE_VIZ_SERVE`; off: a single user's full powers)."""
    return ServeSettings.from_env()


def _load(key: tuple[str, str, str]) -> sv.LoadedModel:
    pool = _model_pool(serve_settings().max_models)
    lm = pool.resident(key)
    if lm is not None:
        return lm
    label = DEFAULT_LABEL if key[0] == sv.DEFAULT_MODEL else key[0]
    with st.spinner(f"Loading {label}…"), st.sidebar.status(f"Loading {label}…", expanded=True) as status:
        try:
            lm = pool.get(key, progress=lambda done, total, message: status.write(message))
        except BaseException:
            status.update(label=f"Could not load {label}", state="error", expanded=False)
            raise
        status.update(label=f"Loaded {label}", state="complete", expanded=False)
    return lm


def _requested_key() -> tuple[str, str, str] | None:
    """(name, device, dtype) the session asks for; None: nothing typed yet. In server mode only the
    operator's models, on the operator's device, are ever asked for (an InputError otherwise)."""
    state, serve = st.session_state, serve_settings()
    if serve.enabled:
        name = state.get("sv_model") or serve.choices(sv.DEFAULT_MODEL)[0]
        if not serve.allows(str(name), sv.DEFAULT_MODEL):  # a crafted session or link: say no, name no file
            raise sv.InputError("this server offers only the models in its list: pick one of them")
        return str(name), "auto", "fp32"
    name = sv.DEFAULT_MODEL if state.get("sv_model", sv.DEFAULT_MODEL) != OTHER else state.get("sv_model_path", "")
    name = (name or "").strip()
    if not name:
        return None
    return name, state.get("sv_device", "auto"), state.get("sv_dtype", "fp32")


def _model_label(name: str) -> str:
    return DEFAULT_LABEL if name == sv.DEFAULT_MODEL else name


def _model_picker(side) -> None:
    """The single user's picker: the embedded default, or any Hub id, folder or .gguf file; device, dtype."""
    side.selectbox(
        "Model", [sv.DEFAULT_MODEL, OTHER], key="sv_model", persist_state="session",
        format_func=lambda v: DEFAULT_LABEL if v == sv.DEFAULT_MODEL else "Other: Hub id, folder or .gguf…",
        label_visibility="collapsed",
    )
    if st.session_state.get("sv_model") == OTHER:
        side.text_input(
            "Hugging Face id, local folder or .gguf file", key="sv_model_path", persist_state="session",
            placeholder="Qwen/Qwen2.5-0.5B, /models/llama, model.gguf",
            help="Press Enter to load. Code shipped with a model is never run (trust_remote_code=False).",
        )
    _linked_model(side)
    left, right = side.columns(2)
    left.selectbox("Device", DEVICES, key="sv_device", persist_state="session",
                   help="auto: CUDA if available, else Apple MPS, else CPU")
    right.selectbox("Precision", list(sv.DTYPES), key="sv_dtype", persist_state="session",
                    help="fp32 is exact; bf16/fp16 halve memory on a GPU")


def _retry() -> None:
    st.session_state.pop("_sv_failed", None)


def sidebar_model(show_errors_in_page: bool = True) -> sv.LoadedModel | None:
    """Draw the model picker in the sidebar and return the loaded model.

    Returns None when no model is usable (nothing typed yet, or loading failed); the reason is
    shown in the sidebar and, with `show_errors_in_page`, in the page too. Never raises for a
    bad model: the rest of the page keeps working.
    """
    page_style()
    if waited := st.session_state.pop("_sv_waited", None):
        st.caption(waited)
    side = st.sidebar
    page_links(side)
    display_options(side)
    side.header("Model")
    serve = serve_settings()
    if serve.enabled:  # the operator's list; nothing typed, no device or precision to pick
        side.selectbox("Model", serve.choices(sv.DEFAULT_MODEL), key="sv_model", persist_state="session",
                       format_func=_model_label, label_visibility="collapsed",
                       help="The models this server offers. Your choice changes no one else's model.")
    else:
        _model_picker(side)
    try:
        key = _requested_key()
    except sv.InputError as err:
        show_error(err, where=side)
        return None
    if key is None:
        side.info("Type a model id, folder or .gguf path and press Enter.")
        return None
    failed = st.session_state.get("_sv_failed")
    if failed and failed[0] == key:
        message = failed[1]
    else:
        try:
            lm = _load(key)
        except sv.SpadeVizError as err:
            message = str(err)
        except Exception as err:  # an unexpected failure inside a third-party loader
            text = str(err).strip()
            message = f"could not load '{key[0]}': {text.splitlines()[0] if text else type(err).__name__}"
        else:
            st.session_state.pop("_sv_failed", None)
            side.caption(f"✓ **{lm.name}** · {lm.num_layers} layers · {lm.device.type} · "
                         f"{str(lm.dtype).replace('torch.', '')}")
            return lm
        st.session_state["_sv_failed"] = (key, message)
    show_error(f"Model not loaded: {message}", where=side)
    side.button("Retry", key="sv_retry", on_click=_retry)
    if show_errors_in_page:
        show_error(f"The model could not be loaded: {message}. Pick the default model or another one in the "
                   "sidebar; your inputs on this page are kept.")
    return None


def model_key(lm: sv.LoadedModel) -> tuple[str, str, str]:
    """(name, device, dtype): what tells loaded models apart in the pages' cache keys."""
    return lm.name, str(lm.device), str(lm.dtype)


# ---------------------------------------------------------------- analyses


def _lens_signature(lm: sv.LoadedModel) -> tuple:
    """Which saved lenses exist for this model (and when they were written)."""
    try:
        from spade_viz.lenses.affine import KINDS, default_lens_path

        paths = [(kind, default_lens_path(lm, kind)) for kind in KINDS]
        return tuple((kind, path.stat().st_mtime_ns) for kind, path in paths if path.exists())
    except Exception:
        return ()


@st.cache_resource(max_entries=4, show_spinner=False)
def _lenses(key: tuple, signature: tuple, _lm: sv.LoadedModel) -> tuple[dict, tuple[str, ...]]:
    lenses, problems = {}, []
    if signature:
        from spade_viz.lenses.affine import find_lens

        for kind, _mtime in signature:
            try:
                lens = find_lens(_lm, kind)
            except sv.SpadeVizError as err:
                problems.append(str(err))
            else:
                if lens is not None:
                    lenses[kind] = lens
    return lenses, tuple(problems)


def analysis_nbytes(res: sv.Analysis, shared_with: sv.Analysis | None = None) -> int:
    """Bytes held by the hidden states and statistics of `res`, counting each buffer once and leaving
    out those it shares with `shared_with` (a retargeted analysis shares almost all with its base)."""
    def buffers(item: sv.Analysis) -> dict[int, int]:
        import numpy as np
        import torch

        found: dict[int, int] = {}
        values = [item.residuals, item.final_hidden, *item.answer_states.values()]
        values += [array for stats in [*item.grids.values(), *item.answer.values()] for array in vars(stats).values()]
        for value in values:
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                found[storage.data_ptr()] = storage.nbytes()
            elif isinstance(value, np.ndarray):
                owner = value if value.base is None else value.base
                found[id(owner)] = getattr(owner, "nbytes", value.nbytes)
        return found

    mine, theirs = buffers(res), buffers(shared_with) if shared_with is not None else {}
    return sum(size for key, size in mine.items() if key not in theirs)


class _AnalysisStore:
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

    @property
    def nbytes(self) -> int:
        """Bytes the kept analyses hold now."""
        with self.lock:
            return sum(self._size(entry) for entry in self.entries.values())

    @staticmethod
    def _size(entry: dict) -> int:
        return entry["size"] + sum(size for _res, size in entry["targets"].values())

    def get(self, key: tuple, compute) -> sv.Analysis:
        """The analysis under `key`, computed by `compute()` when it is not kept."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                return entry["res"]
        res = compute()
        with self.lock:
            if key not in self.entries:
                self.entries[key] = {"res": res, "size": analysis_nbytes(res), "targets": OrderedDict()}
            self.entries.move_to_end(key)
            self._evict()
            return self.entries[key]["res"]

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


@st.cache_resource(show_spinner=False)
def _analysis_store() -> _AnalysisStore:
    return _AnalysisStore(ANALYSIS_CACHE_MB * 2**20)


def _analyze(lm: sv.LoadedModel, prompt: str, spade_positions: str, max_tokens: int, lenses: dict):
    global ANALYSIS_RUNS
    ANALYSIS_RUNS += 1
    return sv.analyze(lm, prompt, top_k=5, spade_positions=spade_positions, max_tokens=max_tokens,
                      lenses=lenses or None)


def lens_problems(lm: sv.LoadedModel) -> tuple[str, ...]:
    """Why a saved tuned lens / linear SPADE could not be used (empty when all is well)."""
    return _lenses(model_key(lm), _lens_signature(lm), lm)[1]


def analysis(lm: sv.LoadedModel, prompt: str, spade_positions: str = "original",
             max_tokens: int = DEFAULT_MAX_TOKENS, target: str | int | None = None,
             without_bos: bool = False) -> sv.Analysis:
    """`sv.analyze` through the bounded cache (with any saved lenses for this model).

    `target` None: the model's final top-1. Otherwise a token id, `#id`, or token text;
    changing it re-decodes from cached states without a forward pass. `without_bos` adds the
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


SPADE_GRID_ENTRIES = 8


@st.cache_resource(show_spinner=False)
def _spade_grids() -> tuple[threading.Lock, dict]:
    return threading.Lock(), {}  # key -> DecodeStats, oldest first (dicts keep insertion order)


def spade_grid(lm: sv.LoadedModel, prompt: str, spade_positions: str = "original",
               max_tokens: int = DEFAULT_MAX_TOKENS, progress=None, compute: bool = True):
    """SPADE at every position of the prompt (`sv.spade_grid` on its cached analysis), kept for all
    sessions (the last `SPADE_GRID_ENTRIES`); `compute=False`: None unless already kept.

    Not an `st.cache_data`: its progress bar lives outside it, which a cache hit could not replay.
    """
    key = (model_key(lm), lm.fingerprint(), prompt, spade_positions, int(max_tokens))
    lock, kept = _spade_grids()
    with lock:
        grid = kept.pop(key, None)
        if grid is not None:
            kept[key] = grid  # now the most recent
    if grid is not None or not compute:
        return grid
    grid = sv.spade_grid(lm, analysis(lm, prompt, spade_positions, max_tokens), progress=progress)
    with lock:
        kept[key] = grid
        while len(kept) > SPADE_GRID_ENTRIES:
            kept.pop(next(iter(kept)))
    return grid


# ---------------------------------------------------------------- shareable links


def opened_link(page: str, params) -> links.Link | None:
    """The state the URL's query parameters ask for, once per link (None when they hold nothing
    this page has not seen or written itself). A bad part of a link is shown as a warning and
    replaced by its default. A link's model is only offered in the sidebar, never loaded by itself."""
    query = st.query_params.to_dict()
    if not query or query == st.session_state.get(f"_sv_link_{page}"):
        return None
    st.session_state[f"_sv_link_{page}"] = query
    link = links.decode(query, params)
    if link.message():
        st.warning(link.message(), icon=":material/link_off:")
    model = str(link.state.get("model") or "").strip()
    if model:
        st.session_state["_sv_link_model"] = model
        if st.session_state.get("sv_model", "") != OTHER:
            st.session_state["sv_model_path"] = model  # the sidebar's text box, shown once they pick "Other"
    return link


def link_model(lm: sv.LoadedModel | None) -> str:
    """The model a link should name: '' for the embedded default; a model a link offered and the
    visitor has not loaded yet stays in it."""
    pending = st.session_state.get("_sv_link_model")
    if pending:
        return pending
    return "" if lm is None or lm.name == sv.DEFAULT_MODEL else lm.name


def _accept_link_model() -> None:
    st.session_state["sv_model"] = OTHER
    st.session_state["sv_model_path"] = st.session_state.pop("_sv_link_model", "")
    st.session_state.pop("_sv_failed", None)


def _linked_model(side) -> None:
    """The model an opened link names, offered with a button (never loaded without one)."""
    pending = st.session_state.get("_sv_link_model")
    if not pending:
        return
    current = _requested_key()
    if pending == sv.DEFAULT_MODEL or (current is not None and current[0] == pending):
        st.session_state.pop("_sv_link_model", None)  # already what the sidebar has
        return
    side.info(f"The link you opened uses the model **{pending}**. It is loaded only if you ask; until then "
              "the page shows the model below.", icon=":material/link:")
    side.button(f"Load {pending}", key="sv_link_load", on_click=_accept_link_model, icon=":material/download:")


def share_link(page: str, query: dict[str, str], where=None) -> str:
    """Put the page's state into the URL (when it changed) and show the link in `where` (a popover
    or a container: `st.code` has its own copy button; None: the URL only). Returns the link. The link is the page's
    address in the visitor's browser (`st.context.url`) with the query; where that is unknown, the
    query alone (append it to the page's address)."""
    if st.query_params.to_dict() != query:
        st.query_params.from_dict(query)
    st.session_state[f"_sv_link_{page}"] = dict(query)
    from urllib.parse import urlencode

    text = urlencode(query, quote_via=_quote)
    base = getattr(st.context, "url", None) or ""
    link = f"{base}?{text}" if text else (base or "?")
    if where is None:
        return link
    where.code(link, language=None, wrap_lines=True)
    where.caption("The page as you see it now: prompt, options and view (copy with the icon at the right). "
                "Opening the link shows the same view; a model other than the default waits for a click.")
    return link


def _quote(text: str, safe: str = "", encoding=None, errors=None) -> str:
    from urllib.parse import quote

    return quote(text, safe="/:,", encoding=encoding, errors=errors)


# ---------------------------------------------------------------- cross-page


EXPLORE_PAGE = "pages/1_Explore.py"


def send_to_explore(prompt: str) -> None:
    """Open the Explore page with `prompt` in its box, analysed on arrival (call from a button)."""
    st.session_state["prompt"] = prompt
    st.session_state["_sv_request"] = prompt
    st.switch_page(EXPLORE_PAGE)


@st.cache_resource(show_spinner=False)
def _job_queue(capacity: int) -> JobQueue:
    return JobQueue(capacity)


@contextmanager
def heavy_job(what: str) -> Iterator[None]:
    """Run a sweep, a fit or a training when the server has room for it (server mode's
    `max_heavy_jobs`; no limit outside it), showing the visitor their place in the queue meanwhile."""
    waiting, places, started = st.empty(), [], time.monotonic()

    def show_place(position: int) -> None:
        places.append(position)
        waiting.info(f"Waiting for another visitor's job to finish before {what}: you are number {position} in "
                     "the queue. Your inputs are kept.", icon=":material/hourglass_top:")

    with _job_queue(serve_settings().max_heavy_jobs).slot(on_wait=show_place):
        waiting.empty()
        if places:  # said again after the job (pages rerun when it ends): the wait explains the time it took
            st.session_state["_sv_waited"] = (f"Waited {time.monotonic() - started:.0f} s behind other visitors' jobs "
                                              f"before {what} (number {places[0]} in the queue at first).")
        yield


def bar_progress(bar, label: str):
    """A `progress(done, total, stage)` callback (sweeps, calibration) that moves a `st.progress` bar."""
    return lambda done, total, stage="": bar.progress(min(1.0, done / max(total, 1)),
                                                      text=f"{label}: {stage} {done}/{total}")


# ---------------------------------------------------------------- datasets


@st.cache_data(max_entries=16, show_spinner=False)
def _builtin_dataset(name: str):
    return load_builtin(name)


@st.cache_data(max_entries=8, show_spinner=False)
def _uploaded_dataset(raw: bytes, name: str):
    stem, dot, ext = name.rpartition(".")
    return load_dataset(raw, name=stem if dot else name, fmt=ext if dot else None)


@st.cache_data(max_entries=8, show_spinner="Loading the Hugging Face dataset…")
def _hf_dataset(spec: str):
    """Once per spec: a Hub download or a large Parquet file is not read again on every rerun."""
    return load_hf_dataset(spec)


def dataset_picker(prefix: str):
    """A built-in task, an uploaded file or a Hugging Face dataset (widget keys `{prefix}_...`); None
    until one is usable.

    A file with bad rows is shown with its row-numbered errors and used only once the user agrees
    to drop those rows. Hugging Face datasets are not offered in server mode: their specs name
    paths on the server and downloads to its disk.
    """
    tasks = builtin_tasks()
    sources = ["Built-in task", "Upload a file"] + ([] if serve_settings().enabled else ["Hugging Face dataset"])
    source = st.radio("Data", sources, horizontal=True, key=f"{prefix}_source", label_visibility="collapsed")
    if source == "Hugging Face dataset":
        return _hf_picker(prefix)
    if source == "Built-in task":
        if not tasks:
            st.error("No built-in tasks were found in assets/datasets.")
            return None
        task = st.selectbox("Task", list(tasks), key=f"{prefix}_task",
                            help="Few-shot prompts whose gold answer is the next token.")
        return _builtin_dataset(task)
    upload = st.file_uploader(
        "A JSONL or CSV file with `prompt` and `answer` (optional `choices`, `id`)", key=f"{prefix}_upload",
        type=["jsonl", "json", "ndjson", "csv", "tsv"],
        help="The answer continues the prompt, usually with its leading space: prompt 'Germany:', answer ' Berlin'.",
    )
    if upload is None:
        return None
    serve = serve_settings()
    if upload.size > serve.max_upload_mb * 2**20:
        show_error(f"{upload.name} is {upload.size / 2**20:.1f} MB; this server accepts files of up to "
                   f"{serve.max_upload_mb} MB")
        return None
    try:
        dataset = _uploaded_dataset(upload.getvalue(), upload.name)
    except DatasetError as err:
        show_error(err)
        return None
    if len(dataset) + len(dataset.errors) > serve.max_rows:
        show_error(f"{upload.name} has {len(dataset) + len(dataset.errors)} rows; this server accepts up to "
                   f"{serve.max_rows}")
        return None
    if dataset.errors:
        bad = len(dataset.errors)
        st.warning(f"{bad} row{'s' if bad > 1 else ''} of {upload.name} cannot be used ({len(dataset)} can):")
        st.code("\n".join(e.message for e in dataset.errors[:20]) + (f"\n… and {bad - 20} more" if bad > 20 else ""),
                language=None)
        if not st.checkbox(f"Use the {len(dataset)} good rows without the bad ones", key=f"{prefix}_accept_partial"):
            return None
    if dataset.warnings:  # kept rows that are probably not what was meant: answers glued on, rows too long
        shown = [w.message for w in dataset.warnings]
        st.warning(f"{len(shown)} warning{'s' if len(shown) > 1 else ''} about {upload.name}: "
                   + " · ".join(shown[:5]) + (f" · … and {len(shown) - 5} more" if len(shown) > 5 else ""),
                   icon=":material/warning:")
    return dataset


def _hf_picker(prefix: str):
    """The "Hugging Face dataset" source of `dataset_picker`: a spec typed in, loaded once per spec."""
    spec = st.text_input(
        "Hugging Face dataset", key=f"{prefix}_hf_spec", placeholder="hf:allenai/ai2_arc:ARC-Easy:test",
        help="hf:ID[:CONFIG][:SPLIT] -- a Hub id (from the Hub or the local cache), a folder written by "
             "save_to_disk, or a .parquet/.arrow file; options last, e.g. :shots=5:limit=200. The split defaults "
             "to test, else validation, else train.")
    st.caption("ARC, MMLU, HellaSwag, HeadQA and BoolQ are recognised from their columns and become lettered "
               "questions answered by ' A', ' B'… (BoolQ: ' yes'/' no'); a dataset with `prompt` and `answer` "
               "columns is used as it is.")
    spec = spec.strip()
    if not spec:
        return None
    try:
        dataset = _hf_dataset(spec if spec.startswith("hf:") else "hf:" + spec)
    except DatasetError as err:
        show_error(err)
        return None
    notes = dataset.notes(6)
    if notes:
        st.warning(f"{len(dataset)} examples from {dataset.name}; " + " · ".join(notes), icon=":material/warning:")
    return dataset


# ---------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """One Explore-page example prompt: `note` is shown under the picker; `expected` is the correct
    answer's first token."""

    name: str
    text: str
    note: str = ""
    expected: str = ""


@st.cache_data(show_spinner=False)
def presets() -> list[Preset]:
    """The Explore-page presets from assets/presets.json."""
    data = json.loads(PRESETS_FILE.read_text(encoding="utf-8"))
    return [Preset(p["name"], p["text"], p.get("note", ""), p.get("expected", "")) for p in data["presets"]]


_ICONS = {"explore": ":material/search:", "early_exit": ":material/fast_forward:",
          "compare_decoders": ":material/compare_arrows:"}


def app_pages() -> list[dict[str, str]]:
    """The pages in pages/ (`<n>_<Name>.py`, in order): path, title, icon, summary.

    The summary is the first line of the page file's docstring.
    """
    root = Path(__file__).resolve().parent.parent
    found = []
    for path in sorted((root / "pages").glob("[0-9]*_*.py"), key=lambda p: (int(p.name.split("_")[0]), p.name)):
        stem = path.stem.split("_", 1)[1]
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except (SyntaxError, OSError, UnicodeDecodeError):
            doc = ""
        found.append({
            "path": f"pages/{path.name}",
            "title": stem.replace("_", " "),
            "icon": _ICONS.get(stem.lower(), ":material/article:"),
            "summary": doc.strip().splitlines()[0].rstrip(".") if doc.strip() else "",
        })
    return found


HOME = ("app.py", "Home", ":material/layers:")


def page_links(where) -> None:
    """The page list (Streamlit's own is switched off in .streamlit/config.toml: it would call the
    home page "app", after the file)."""
    try:
        where.page_link(HOME[0], label=HOME[1], icon=HOME[2])
    except StreamlitPageNotFoundError:  # a page run on its own (`streamlit run pages/...`): no other pages
        return
    for page in app_pages():
        where.page_link(page["path"], label=page["title"], icon=page["icon"])
    where.divider()


_STYLE = """
<style>
/* denser page: less empty space above the content, smaller headings (laptop and projector) */
[data-testid="stMainBlockContainer"], .block-container { padding-top: 2.2rem; padding-bottom: 2rem; }
h1 { font-size: 2.0rem !important; padding-top: 0 !important; }
[data-testid="stSidebarUserContent"] { padding-top: 1rem; }
</style>
"""


def display_options(where) -> None:
    """The shared presentation switch (`font_scale`): larger figure fonts for a projector."""
    where.toggle("Larger fonts (projector)", key="sv_big_fonts", persist_state="session",
                 help="Every figure's text, ticks and legends larger, for the back of a lecture room.")


def font_scale() -> float:
    """The figures' font scale the sidebar's projector switch asks for (1.0: off)."""
    from spade_viz.viz.style import PROJECTOR_SCALE

    return PROJECTOR_SCALE if st.session_state.get("sv_big_fonts") else 1.0


def page_style() -> None:
    """The shared look (called by `sidebar_model`, so every page gets it)."""
    st.markdown(_STYLE, unsafe_allow_html=True)
