"""Heavy jobs (sweeps, fits, trainings, SPADE grids) under server mode's limit, with progress bars and a
Stop button."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st

from ..serve import JobQueue
from .models import serve_settings

WAITED = "_sv_waited"  # how long the last job waited, said once on the next run
STOPPED = "_sv_stopped"  # what the visitor stopped, said once on the next run


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
            st.session_state[WAITED] = (f"Waited {time.monotonic() - started:.0f} s behind other visitors' jobs "
                                        f"before {what} (number {places[0]} in the queue at first).")
        yield


def stop_button(what: str, key: str, then: Callable[[], None] | None = None, where=None) -> None:
    """A Stop button for long work this run is about to do (`what`, e.g. "the sweep"). A click asks
    Streamlit for a rerun, and Streamlit ends the running script at its next call into Streamlit: the
    work's next progress step. `then` withdraws the request that started the work (a one-shot button
    needs none); what was finished is kept, and the next run says so (`say_wait`)."""
    def stopped() -> None:
        st.session_state[STOPPED] = f"Stopped {what}; what was finished is kept."
        if then is not None:
            then()

    (where or st).button(f"Stop {what}", key=key, icon=":material/stop_circle:", on_click=stopped,
                         help="Stops the work at its next step, keeping what is done. Your inputs are kept.")


def say_wait() -> None:
    """The last job's wait in the queue, or that the visitor stopped it, once (drawn by `app.py` at the top
    of the next run)."""
    if waited := st.session_state.pop(WAITED, None):
        st.caption(waited)
    if stopped := st.session_state.pop(STOPPED, None):
        st.info(stopped, icon=":material/stop_circle:")


def bar_progress(bar, label: str):
    """A `progress(done, total, stage)` callback (sweeps, calibration) that moves a `st.progress` bar."""
    return lambda done, total, stage="": bar.progress(min(1.0, done / max(total, 1)),
                                                      text=f"{label}: {stage} {done}/{total}")
