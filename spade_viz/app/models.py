"""The models this process holds, shared by every session, and the sidebar's model picker.

`app.py` draws the picker once per run (`sidebar`); a page asks for the model when it needs it
(`current`), after its title has painted, so the title shows while a model loads. A failed load is
remembered per session (no retry loop on every rerun) until the user presses "Retry" or picks
something else. The picker's widgets keep their values across pages (`persist_state="session"`),
keys `sv_model`, `sv_model_path`, `sv_device`, `sv_dtype`.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict

import streamlit as st

import spade_viz as sv

from ..serve import ServeSettings
from .chrome import show_error

OTHER = "__other__"
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_LABEL = "SmolLM2-135M-Instruct (embedded default)"
LINKED_MODEL = "_sv_link_model"  # a model an opened link names, offered until loaded or refused
MODEL_LOADS = 0  # real model loads made by the pool in this process (tests count them)

ModelKey = tuple[str, str, str]  # (name, device, dtype)


class ModelPool:
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
        self.models: OrderedDict[ModelKey, sv.LoadedModel] = OrderedDict()  # least recent first

    def resident(self, key: ModelKey) -> sv.LoadedModel | None:
        """The model under `key` if it is loaded (and now the most recently used), else None."""
        with self.lock:
            lm = self.models.get(key)
            if lm is not None:
                self.models.move_to_end(key)
            return lm

    def get(self, key: ModelKey, progress) -> sv.LoadedModel:
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
        import torch  # deferred: only a CUDA model gets here, and torch is loaded by then

        torch.cuda.empty_cache()


_POOLS: dict[int, ModelPool] = {}
_POOLS_LOCK = threading.Lock()


def model_pool(capacity: int) -> ModelPool:
    """The process's one pool (per capacity), shared by every session. A module-level object, not an
    `st.cache_resource`: the warm start (`spade-viz app`) fills it before Streamlit's runtime exists,
    and the sessions must get that very pool."""
    with _POOLS_LOCK:
        return _POOLS.setdefault(int(capacity), ModelPool(capacity))


def serve_settings() -> ServeSettings:
    """Server mode's settings (`SPADE_VIZ_SERVE`; off: a single user's full powers). A settings file
    that stops parsing while the server runs keeps the last good settings (logged for the operator):
    no visitor sees its path or text."""
    return ServeSettings.current()


def model_key(lm: sv.LoadedModel) -> ModelKey:
    """(name, device, dtype): what tells loaded models apart in the pages' cache keys."""
    return lm.name, str(lm.device), str(lm.dtype)


def label(name: str) -> str:
    """How the picker names a model."""
    return DEFAULT_LABEL if name == sv.DEFAULT_MODEL else name


def requested_key() -> ModelKey | None:
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


# ---------------------------------------------------------------- the sidebar


def sidebar() -> None:
    """The model picker in the sidebar (drawn once per run, by `app.py`, for every page)."""
    side = st.sidebar
    side.header("Model")
    serve = serve_settings()
    if serve.enabled:  # the operator's list; nothing typed, no device or precision to pick
        side.selectbox("Model", serve.choices(sv.DEFAULT_MODEL), key="sv_model", persist_state="session",
                       format_func=label, label_visibility="collapsed",
                       help="The models this server offers. Your choice changes no one else's model.")
        return
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
    left, right = side.columns(2)
    left.selectbox("Device", DEVICES, key="sv_device", persist_state="session",
                   help="auto: CUDA if available, else Apple MPS, else CPU")
    right.selectbox("Precision", list(sv.DTYPES), key="sv_dtype", persist_state="session",
                    help="fp32 is exact; bf16/fp16 halve memory on a GPU")


def _accept_link_model() -> None:
    st.session_state["sv_model"] = OTHER
    st.session_state["sv_model_path"] = st.session_state.pop(LINKED_MODEL, "")
    st.session_state.pop("_sv_failed", None)


def _linked_model(side) -> None:
    """The model an opened link names, offered with a button (never loaded without one)."""
    pending = st.session_state.get(LINKED_MODEL)
    if not pending:
        return
    current = requested_key()
    if pending == sv.DEFAULT_MODEL or (current is not None and current[0] == pending):
        st.session_state.pop(LINKED_MODEL, None)  # already what the sidebar has
        return
    side.info(f"The link you opened uses the model **{pending}**. It is loaded only if you ask; until then "
              "the page shows the model below.", icon=":material/link:")
    side.button(f"Load {pending}", key="sv_link_load", on_click=_accept_link_model, icon=":material/download:")


def _load(key: ModelKey) -> sv.LoadedModel:
    pool = model_pool(serve_settings().max_models)
    lm = pool.resident(key)
    if lm is not None:
        return lm
    with st.spinner(f"Loading {label(key[0])}…"), st.sidebar.status(f"Loading {label(key[0])}…",
                                                                       expanded=True) as status:
        try:
            lm = pool.get(key, progress=lambda done, total, message: status.write(message))
        except BaseException:
            status.update(label=f"Could not load {label(key[0])}", state="error", expanded=False)
            raise
        status.update(label=f"Loaded {label(key[0])}", state="complete", expanded=False)
    return lm


def _retry() -> None:
    st.session_state.pop("_sv_failed", None)


def current(show_errors_in_page: bool = True) -> sv.LoadedModel | None:
    """The model the sidebar asks for, loaded on first use; None when none is usable (nothing typed
    yet, or loading failed): the reason is shown in the sidebar and, with `show_errors_in_page`, in
    the page too. Never raises for a bad model: the rest of the page keeps working."""
    side = st.sidebar
    if not serve_settings().enabled:
        _linked_model(side)  # here, not in `sidebar`: the page has read its link by now
    try:
        key = requested_key()
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
