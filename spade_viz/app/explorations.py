"""Explore's further views, kept for every session: a position read in full (a clicked cell's top-10 and
the pinned tokens), a followed generation, and a second model for a comparison.

Each result is kept by what determines it (model, prompt, options, position, pins, length), the last
`KEPT` of each kind, so a rerun that changes nothing else recomputes nothing. `RUNS` counts real
computations (tests use it).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import streamlit as st

import spade_viz as sv

from .models import ModelPool, model_key, serve_settings

KEPT = 8
RUNS = {"reading": 0, "generation": 0}


@st.cache_resource(show_spinner=False)
def _kept() -> tuple[threading.Lock, dict[str, OrderedDict]]:
    return threading.Lock(), {"reading": OrderedDict(), "generation": OrderedDict()}


def _get(kind: str, key: Hashable, compute: Callable[[], object]):
    lock, kept = _kept()
    with lock:
        if key in kept[kind]:
            kept[kind].move_to_end(key)
            return kept[kind][key]
    value = compute()
    RUNS[kind] += 1
    with lock:
        kept[kind][key] = value
        while len(kept[kind]) > KEPT:
            kept[kind].popitem(last=False)
    return value


def reading(lm: sv.LoadedModel, res: sv.Analysis, position: int, pins: Sequence[str]) -> sv.PositionReading:
    """`sv.read_position`: every decoder's top-10 at every layer of `position`, and the pins' trajectories."""
    key = (model_key(lm), lm.fingerprint(), tuple(res.token_ids), res.spade_positions, tuple(sorted(res.answer)),
           int(position), tuple(pins))
    return _get("reading", key, lambda: sv.read_position(lm, res, position, pins=list(pins), k=10))


def generation(lm: sv.LoadedModel, prompt: str, tokens: int, spade_positions: str, max_tokens: int) -> sv.Generation:
    """`sv.follow_generation`, within this server's generation limit."""
    most = serve_settings().max_generate_tokens
    key = (model_key(lm), lm.fingerprint(), prompt, int(tokens), spade_positions, int(max_tokens))
    return _get("generation", key, lambda: sv.follow_generation(lm, prompt, int(tokens), spade_positions,
                                                                max_tokens=max_tokens, limit=min(most, 512)))


@st.cache_resource(show_spinner=False)
def _second_pool() -> ModelPool:
    return ModelPool(1)  # beside the sidebar's: comparing never unloads the model in use


def second_model(name: str, current: sv.LoadedModel) -> sv.LoadedModel:
    """The model a comparison runs the prompt on (the current one when it is named); in server mode
    only the operator's models."""
    name = name.strip()
    if name == current.name:
        return current
    serve = serve_settings()
    if serve.enabled and not serve.allows(name, sv.DEFAULT_MODEL):
        raise sv.InputError("this server offers only the models in its list: pick one of them")
    key = (name, "auto", "fp32")
    pool = _second_pool()
    lm = pool.resident(key)
    if lm is None:
        with st.spinner(f"Loading {name} for the comparison…"):
            lm = pool.get(key, progress=lambda done, total, message: None)
    return lm
