"""The Early-exit page's real-exit panel: the timed run at the slider's threshold and the honest run
(chosen on one half, measured on the other), run with progress and read from their typed reports."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

import spade_viz as sv

from ..exit.honest import HonestExit, calibrated_real_exit
from ..exit.real import prepare_prompts, run_real_exit
from ..exit.real_report import RealExitReport
from . import chrome, jobs


def show_timed_run(report: RealExitReport) -> None:
    """Measured against simulated speedup, wall clock and agreement of a real-exit run."""
    q = st.columns(4)
    q[0].metric("Measured speedup", f"{report.measured_speedup:.2f}×")
    q[1].metric("Simulated speedup", f"{report.simulated_speedup:.2f}×",
                help="From the compute accounting of the exits this run actually took.")
    q[2].metric("Wall clock per example", f"{report.ms_per_example('exit'):.1f} ms",
                f"full pass {report.ms_per_example('full'):.1f} ms", delta_color="off")
    q[3].metric("Agreement with full model", f"{report.agreement:.1%}")
    st.caption(f"{len(report.example_ids)} examples × {report.repeats} rounds at τ = {report.threshold:.3f} in "
               f"batches of {report.batch_size}; mean exit layer {report.mean_exit_layer:.1f}. Small models on a "
               "CPU gain less than the block count suggests: a block reads all its weights however few rows it "
               "computes, and the exited rows' continuation is such a pass.")
    if report.other_work:
        st.warning(f"{report.other_work} other job(s) used the model while this was timed (another visitor?): the "
                   "wall-clock figures are disturbed. Measure again when the server is quiet.")


def show_honest_run(honest: HonestExit, apply: Callable[[HonestExit], None]) -> None:
    """Held-out accuracy and speedups of the honest run, its choices, and a button applying them to the
    slider (when its confidence is the slider's: linear SPADE over the vocabulary)."""
    report = honest.report
    st.markdown("**Honest run** (chosen on one half, measured on the other)")
    h = st.columns(4)
    known = report.accuracy is not None
    h[0].metric("Held-out accuracy", f"{report.accuracy:.1%}" if known else "—",
                f"{100 * (report.accuracy - report.full_accuracy):+.1f} pt vs full {report.full_accuracy:.1%}"
                if known else None)
    h[1].metric("Measured speedup", f"{report.measured_speedup:.2f}×")
    h[2].metric("Simulated speedup", f"{report.simulated_speedup:.2f}×")
    h[3].metric("Chosen threshold", f"{honest.threshold:.3f}")
    confidence = honest.to_dict()["confidence"]
    st.caption(f"Checkpoints {honest.checkpoints}, confidence {confidence}; chosen on {honest.n_calibration} "
               f"calibration examples, measured on {honest.n_heldout} held-out ones.")
    for warning in honest.warnings:
        st.warning(warning, icon=":material/warning:")
    if not report.shortlist_size:  # the slider's confidence: its threshold means the same there
        st.button("Apply its layout and threshold to the slider", key="ee_honest_apply", icon=":material/input:",
                  on_click=apply, args=(honest,))


def run_timed(lm, examples, lens, threshold: float, view, rounds: int, batch: int) -> RealExitReport | None:
    """Time the real exit on `examples` at `threshold` with the view's layout and cost (a progress bar
    meanwhile); None after showing why it could not run."""
    jobs.stop_button("timing", "ee_real_stop")
    bar = st.progress(0.0, text="Timing…")
    try:
        prompts = prepare_prompts(lm, examples)
        with jobs.heavy_job("timing the real early exit"):
            return run_real_exit(lm, prompts, lens, threshold, view.key.checkpoints, view.simulator.cost, rounds,
                                 batch_size=batch, progress=lambda done, total, text: bar.progress(
                                     min(1.0, done / max(total, 1)), text=text))
    except sv.SpadeVizError as err:
        chrome.show_error(err)
        return None
    finally:
        bar.empty()


def run_honest(lm, dataset, rounds: int, batch: int) -> HonestExit | None:
    """The honest run on the whole dataset (its steps written in a status box); None after showing why
    it could not run. The confidence is over the whole vocabulary, as on the slider, so its threshold
    can be applied there."""
    jobs.stop_button("the honest run", "ee_honest_stop")
    status = st.status("Choosing on the calibration half…")
    try:
        with jobs.heavy_job("the honest real early exit"):
            honest = calibrated_real_exit(lm, dataset, 0.5, rounds, batch_size=batch, shortlist_top=0,
                                          progress=lambda done, total, message: status.write(message))
    except sv.SpadeVizError as err:
        status.update(label="Honest run failed", state="error")
        chrome.show_error(err)
        return None
    status.update(label="Honest run finished", state="complete", expanded=False)
    return honest
