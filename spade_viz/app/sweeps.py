"""The Early-exit page's sweeps: the linear SPADE it uses, a sweep found on disk or shipped with the
package, and the buttons that fit linear SPADE or run the sweep."""

from __future__ import annotations

from collections.abc import Hashable

import streamlit as st

import spade_viz as sv

from ..exit import CostModel
from ..exit.session import ExitSession
from ..lenses.affine import AffineLens, find_lens
from ..lenses.linear_spade import fit_linear_spade
from ..sweep import cached_sweep, run_sweep, shipped_sweep_problem
from . import chrome, jobs
from .models import model_key, serve_settings

OWN_LENSES = "_ee_own_lens"  # server mode: a visitor's fitted linear SPADE stays in their session
DIFFERS = "_ee_differs"  # per study: what a shipped sweep shown in its place lacks


def linear_spade(lm: sv.LoadedModel) -> AffineLens | None:
    """The visitor's own fit (server mode) or the saved linear SPADE of this model, if any."""
    try:
        return st.session_state.get(OWN_LENSES, {}).get(lm.fingerprint()) or find_lens(lm, "linear_spade")
    except sv.SpadeVizError as err:
        st.warning(f"The saved linear SPADE could not be used: {err}")
        return None


def study_key(lm: sv.LoadedModel, dataset, limit: int, lens: AffineLens | None) -> Hashable:
    """What tells one sweep of the page from another: model, data, example count, linear SPADE."""
    return (model_key(lm), lm.fingerprint(), dataset.source_hash, int(limit),
            None if lens is None else lens.meta.get("created", "saved"))


def find_sweep(session: ExitSession, key: Hashable, lm: sv.LoadedModel, subset, lens: AffineLens | None) -> None:
    """Put a sweep of these examples into `session` when one is on disk or shipped (no model run). A
    built-in task's shipped sweep is shown whatever lenses are saved; what it lacks is kept to say so."""
    if key in session:
        return
    try:
        cached = cached_sweep(lm, subset, linear_spade_map=lens, fallback_shipped=True)
    except sv.SpadeVizError:
        return
    if cached is not None:
        st.session_state.setdefault(DIFFERS, {})[key] = list(cached.info.get("differs", ()))
        session.add_sweep(key, cached, CostModel.from_lm(lm), shipped=bool(cached.info.get("precomputed")))


def missing_sweep_reason(lm: sv.LoadedModel, subset) -> str:
    """Why no shipped sweep can stand in for this one ('' when none was expected)."""
    try:
        problem = shipped_sweep_problem(lm, subset)
    except sv.SpadeVizError:
        return ""
    return f" (The shipped sweep cannot be shown: {problem}.)" if problem else ""


def differences(key: Hashable) -> list[str]:
    """What the shipped sweep shown for `key` lacks against a run now (empty: nothing)."""
    return st.session_state.get(DIFFERS, {}).get(key, [])


def controls(session: ExitSession, key: Hashable, lm: sv.LoadedModel, subset, lens: AffineLens | None) -> None:
    """Fit linear SPADE on these examples, or run the sweep (each reruns the page when done)."""
    serve = serve_settings()
    lens_col, run_col = st.columns([3, 2])
    if lens is not None:
        lens_col.caption(f"✓ A linear SPADE is saved for this model (fitted {lens.meta.get('created', '?')}); "
                         "it gives the exit confidence, and the real-exit run below uses it.")
    else:
        lens_col.caption("No linear SPADE is saved for this model yet. The sweep fits its own on these examples by "
                         "cross-fitting (each example is scored by maps fitted without it); fit and save one here "
                         "to run the real early exit below.")
    if lens_col.button("Fit linear SPADE on these examples", key="ee_fit", icon=":material/tune:",
                       help="Fits the per-layer maps on these examples and saves them for this model."):
        jobs.stop_button("fitting", "ee_fit_stop")
        bar = st.progress(0.0, text="Fitting linear SPADE…")
        try:
            with jobs.heavy_job("fitting linear SPADE"):
                fitted = fit_linear_spade(lm, subset, save=serve.visitors_save,
                                          progress=jobs.bar_progress(bar, "Fitting linear SPADE"))
            if not serve.visitors_save:
                st.session_state.setdefault(OWN_LENSES, {})[lm.fingerprint()] = fitted.lens
        except sv.SpadeVizError as err:
            chrome.show_error(err)
        else:
            bar.empty()
            st.rerun()
    if run_col.button("Run the sweep", key="ee_run", type="primary", icon=":material/play_arrow:",
                      disabled=key in session and not differences(key),
                      help="Decodes every example at every layer with each decoder (done once per dataset)."):
        jobs.stop_button("the sweep", "ee_run_stop")
        bar = st.progress(0.0, text="Sweeping…")
        try:
            with jobs.heavy_job("sweeping"):  # in server mode a visitor's sweep is not stored for everyone
                result = run_sweep(lm, subset, use_cache=serve.visitors_save, linear_spade_map=lens,
                                   progress=jobs.bar_progress(bar, "Sweeping"))
            st.session_state.get(DIFFERS, {}).pop(key, None)
            session.add_sweep(key, result, CostModel.from_lm(lm))
        except sv.SpadeVizError as err:
            chrome.show_error(err)
            return
        bar.empty()
        st.rerun()  # redraw with the sweep in view (and the set-up folded away)
