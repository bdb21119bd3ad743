"""Early exit: sweep a labelled dataset, then slide the exit threshold and watch accuracy against compute."""

from __future__ import annotations

import streamlit as st

import spade_viz as sv
from spade_viz import decoders, links, ui
from spade_viz.data import builtin_tasks
from spade_viz.exit import CostModel
from spade_viz.exit.session import (
    CONFIDENCES,
    ExitSession,
    ExitSettings,
    LayoutChoice,
    confidences,
    point_threshold,
    slider_grid,
    threshold_scale,
)
from spade_viz.exit.study import EXPLANATIONS
from spade_viz.live_slider import live_threshold_slider
from spade_viz.viz import exit_figures as xf
from spade_viz.viz import exports
from spade_viz.viz.tokens import visible_token

st.set_page_config(page_title="Early exit · spade-viz", page_icon=":material/fast_forward:", layout="wide")
state = st.session_state
session: ExitSession = state.setdefault("_ee_session", ExitSession())
PLOT = dict(theme=None, config={"displaylogo": False})

st.title("Early exit: how early can the model stop?")
ui.explain(
    "The hybrid early exit runs the model layer by layer; at each checkpoint a cheap linear map of the "
    "answer token's state (linear SPADE) says how sure the model already is. Once that uncertainty (the "
    "entropy) falls below a threshold, the model stops and SPADE answers from that layer. Run it over a "
    "dataset once, then slide the threshold: everything below is recomputed from the stored results, "
    "not by the model."
)
EXIT_LINK = links.exit_params(list(builtin_tasks()), CONFIDENCES)
LAYOUT = ("ee_every", "ee_start", "ee_cont", "ee_head", "ee_conf", "ee_tau")  # a link's view of a sweep
if (link := ui.opened_link("early_exit", EXIT_LINK)) is not None:  # a shared link: task, limit, layout, tau
    if "ee_task" in link.given:
        state["ee_source"], state["ee_task"] = "Built-in task", link.state["ee_task"]
    if "ee_limit" in link.given:
        state["ee_limit"] = link.state["ee_limit"]
    state["_ee_link_layout"] = {name: link.state[name] for name in link.given & set(LAYOUT)}  # once a sweep shows
link_box = st.popover("Copy link", icon=":material/link:", help="A link to this page as you see it now.")


def share(where=link_box, in_view: bool = False) -> None:
    """The page's state into the URL (and the link into `where`): the task and limit, and the layout
    and threshold of the sweep in view (or those a link asked for, until a sweep shows)."""
    layout = state.get("_ee_link_layout") or ({name: state.get(name) for name in LAYOUT} if in_view else {})
    task = state.get("ee_task") if state.get("ee_source", "Built-in task") == "Built-in task" else None
    query = links.encode({"ee_task": task, "ee_limit": state.get("ee_limit"), **layout}, EXIT_LINK,
                         keep=tuple(layout))
    ui.share_link("early_exit", query, where=where)


def stop() -> None:
    share()
    st.stop()


lm = ui.sidebar_model()  # after the title and explanation: they paint while the model loads

# ------------------------------------------------------------------ 1. the data

st.subheader("1. Pick a dataset")
dataset = ui.dataset_picker("ee")
if dataset is None:
    st.info("Pick a built-in task or upload a file to start.")
    stop()

n_total = len(dataset)
serve = ui.serve_settings()
most = min(n_total, serve.max_sweep_examples)  # server mode bounds a visitor's sweep
state.setdefault("ee_limit", min(most, 200))  # the default here, not in the widget: a link may have set it
if state["ee_limit"] > most:  # a link's limit, or another task's, beyond this one
    state["ee_limit"] = most
c1, c2 = st.columns([1, 3])
limit = c1.number_input("Examples", min_value=1, max_value=most, step=10,
                        key="ee_limit", help="The first N examples of the dataset are used.")
c2.caption(f"**{dataset.name}**: {n_total} examples" + (" with answer choices" if dataset.has_choices else "")
           + f". Example: `{dataset.examples[0].prompt[-80:]!r}` → `{dataset.examples[0].answer!r}`")

if lm is None:
    st.info("Load a model in the sidebar to run the sweep.")
    stop()

# ------------------------------------------------------------------ 2. linear SPADE and the sweep

from spade_viz.lenses.affine import find_lens  # noqa: E402  (after the model exists)

st.subheader("2. Run the sweep")
own_lenses: dict = state.setdefault("_ee_own_lens", {})  # server mode: a visitor's fit stays in their session
try:
    saved_lens = own_lenses.get(lm.fingerprint()) or find_lens(lm, "linear_spade")
except sv.SpadeVizError as err:
    saved_lens = None
    st.warning(f"The saved linear SPADE could not be used: {err}")
subset = dataset.head(int(limit))
examples = subset.examples
study_key = (ui.model_key(lm), lm.fingerprint(), dataset.source_hash, int(limit),
             None if saved_lens is None else saved_lens.meta.get("created", "saved"))


lens_col, run_col = st.columns([3, 2])
with lens_col:
    if saved_lens is not None:
        st.caption(f"✓ A linear SPADE is saved for this model (fitted {saved_lens.meta.get('created', '?')}); "
                   "it gives the exit confidence, and the real-exit run below uses it.")
    else:
        st.caption("No linear SPADE is saved for this model yet. The sweep fits its own on these examples by "
                   "cross-fitting (each example is scored by maps fitted without it); fit and save one here to "
                   "run the real early exit below.")
    if st.button("Fit linear SPADE on these examples", key="ee_fit", icon=":material/tune:",
                 help="Fits the per-layer maps on these examples and saves them for this model."):
        from spade_viz.lenses.linear_spade import fit_linear_spade

        bar = st.progress(0.0, text="Fitting linear SPADE…")
        try:
            with ui.heavy_job("fitting linear SPADE"):
                fitted = fit_linear_spade(lm, subset, save=serve.visitors_save,
                                          progress=ui.bar_progress(bar, "Fitting linear SPADE"))
            if not serve.visitors_save:
                own_lenses[lm.fingerprint()] = fitted.lens
        except sv.SpadeVizError as err:
            ui.show_error(err)
        else:
            bar.empty()
            st.rerun()
with run_col:
    run = st.button("Run the sweep", key="ee_run", type="primary", icon=":material/play_arrow:",
                    disabled=study_key in session,
                    help="Decodes every example at every layer with each decoder (done once per dataset).")


if run and study_key not in session:
    from spade_viz.sweep import run_sweep

    bar = st.progress(0.0, text="Sweeping…")
    try:
        with ui.heavy_job("sweeping"):  # in server mode a visitor's sweep is not stored for everyone
            result = run_sweep(lm, subset, use_cache=serve.visitors_save, linear_spade_map=saved_lens,
                               progress=ui.bar_progress(bar, "Sweeping"))
        session.add_sweep(study_key, result, CostModel.from_lm(lm))
    except sv.SpadeVizError as err:
        ui.show_error(err)
        bar.empty()
    else:
        bar.empty()
        st.rerun()  # redraw with the sweep in place (and its button disabled)

if study_key not in session:  # a sweep of exactly these examples is on disk: use it, no model run
    try:
        from spade_viz.sweep import cached_sweep

        cached = cached_sweep(lm, subset)
    except sv.SpadeVizError:
        cached = None
    if cached is not None:
        session.add_sweep(study_key, cached, CostModel.from_lm(lm))
        if cached.info.get("precomputed"):
            state.setdefault("_ee_shipped", set()).add(study_key)
        st.rerun()  # redraw with the button disabled

study = session.get(study_key)
if study is not None and study_key in state.get("_ee_shipped", ()):
    st.caption("✓ This sweep shipped with spade-viz (precomputed on this model, same settings and examples): the "
               "slider is ready at once, no model run.")
if study is None:
    st.info("Press **Run the sweep**: it runs the model once over these examples; afterwards the threshold "
            "slider needs no model at all.")
    stop()
if study.skipped:
    with st.expander(f"{len(study.skipped)} examples were skipped by the sweep"):
        st.code("\n".join(f"{i}: {why}" for i, why in study.skipped), language=None)

arrays = study.arrays
L = arrays.num_layers
if "linear_spade" not in arrays.decoders:
    st.warning("This sweep has no linear SPADE column: the exit confidence falls back to another decoder. "
               "Fit linear SPADE above and run the sweep again for the real method.")

# ------------------------------------------------------------------ 3. exit settings

def _settings() -> ExitSettings:
    """The exit controls as they stand (defaults before the widgets exist)."""
    return ExitSettings(every=int(state.get("ee_every", 1)), start=int(state.get("ee_start", 1)),
                        continuation_tokens=float(state.get("ee_cont", 1)),
                        include_head=bool(state.get("ee_head", True)), confidence=state.get("ee_conf", "linear_spade"))


def _show(settings: ExitSettings) -> None:
    """Put settings into the controls (only before they are drawn, or from a callback)."""
    state["ee_every"], state["ee_start"] = settings.every, settings.start
    state["ee_conf"], state["ee_head"] = settings.confidence, settings.include_head


def _apply(choice: LayoutChoice) -> None:
    _show(choice.settings)
    state["ee_tau"] = choice.threshold


def _search(key) -> None:
    _apply(session.search(key, _settings()))


if session.in_view != study_key:  # a sweep new in view opens at its fastest layout
    with st.spinner("Finding the checkpoint layout with the largest speedup within 1 point…"):
        _apply(session.open(study_key, _settings()))
for name, value in (state.pop("_ee_link_layout", None) or {}).items():  # a shared link's layout and tau, once
    state[name] = value
_show(_settings().fitted(arrays))

st.subheader("3. Slide the threshold")
if session.note:
    st.caption(session.note)
with st.expander("Checkpoints and compute accounting", expanded=False):
    s1, s2, s3, s4 = st.columns(4)
    s1.number_input("Check every k-th layer", min_value=1, max_value=max(1, L - 1), key="ee_every",
                    help="Fewer checkpoints cost less overhead but may exit later.")
    s2.number_input("First checkpoint layer", min_value=0, max_value=L - 1, key="ee_start",
                    help="Early layers are often confidently wrong on small models: start later.")
    s3.radio("Continuation tokens", [1, 2], key="ee_cont", horizontal=True,
             help="1: the answer row only (the <s> row's states are cached once); 2: the paper's charge.")
    s4.selectbox("Confidence from", confidences(arrays), key="ee_conf", format_func=decoders.label,
                 help="Linear SPADE is the method; SPADE itself is an idealised upper bound "
                      "(its own cost per checkpoint is not charged).")
    st.checkbox("Charge the answer's unembedding in every pass", key="ee_head")
    st.button("Find the fastest checkpoints within 1 point", key="ee_search", icon=":material/manage_search:",
              on_click=_search, args=(study_key,),
              help="Tries every k-th layer from every first layer (k = 1, 2, 3, 4, 6) and keeps the layout with the "
                   "largest speedup within 1 point of the full model's accuracy. Chosen on this same data, like "
                   "the threshold: an optimistic estimate.")
    ui.explain(EXPLANATIONS["cost"])
    cost = study.cost
    st.caption(f"For this model one unembedding costs {cost.head_units:.2f} blocks on one token and a linear-SPADE "
               f"map {cost.map_units:.3f}; the prompts average {arrays.n_tokens.mean():.1f} tokens.")

try:
    view = session.view(study_key, _settings())
except sv.SpadeVizError as err:
    ui.show_error(err)
    stop()

scale = threshold_scale(view)
if not scale.contains(state.get("ee_tau")):
    state["ee_tau"] = scale.default


def _jump(which: str) -> None:
    threshold = point_threshold(view, which)
    if threshold is not None:
        state["ee_tau"] = threshold


@st.fragment
def threshold_views() -> None:
    """Everything that moves with the threshold. The slider, its metrics, the marker and the histogram
    run in the browser (`live_slider`); the examples table follows when the slider is released."""
    b1, b2, _ = st.columns([1, 1, 3])
    b1.button("Best accuracy", key="ee_jump_best", on_click=_jump, args=("best_accuracy",),
              help="Move the slider to the threshold with the best accuracy.")
    b2.button("Fastest within 1 point", key="ee_jump_1pt", on_click=_jump, args=("within_1pt",),
              help="Move the slider to the largest speedup whose accuracy is within 1 point of the full model.")
    ui.explain(EXPLANATIONS["metrics"])
    grid = session.figure("slider_grid", view, lambda: slider_grid(view, scale))
    tradeoff = session.figure(f"tradeoff@{ui.font_scale()}", view, lambda: xf.tradeoff_figure(
        view.curve, None, view.classic, view.fixed, view.full, view.oracle, view.points, font_scale=ui.font_scale()))
    released = live_threshold_slider(grid, tradeoff, state["ee_tau"], key="ee_live")
    if released and released.get("id") != state.get("_ee_live_seen"):
        state["_ee_live_seen"] = released["id"]
        state["ee_tau"] = float(released["tau"])
    tau = float(state["ee_tau"])
    share(where=None, in_view=True)  # the URL follows the slider's release (the box above: on the next full run)
    outcome = view.at(tau)
    p = outcome.point
    left, right = st.columns([3, 2])
    left.caption(EXPLANATIONS["tradeoff"])
    right.caption(EXPLANATIONS["histogram"])

    st.markdown(f"**Examples at τ = {tau:.3f}** (accuracy {p.accuracy:.1%}, compute {p.compute_fraction:.1%}, "
                f"speedup {p.speedup:.2f}×, mean exit layer {p.mean_exit_layer:.1f} / {L})")
    ui.explain(EXPLANATIONS["table"])
    table = view.examples_table(outcome)
    for column in ("answer", "gold", "full answer"):
        table[column] = [visible_token(str(t), special=False, max_len=24) if t is not None else ""
                         for t in table[column]]
    event = st.dataframe(
        table, key="ee_table", on_select="rerun", selection_mode="single-row", hide_index=True, height=300,
        column_config={"compute": st.column_config.NumberColumn(format="%.3f"),
                       "right": st.column_config.CheckboxColumn(),
                       "agrees with full": st.column_config.CheckboxColumn()},
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        example = by_id.get(str(table.iloc[rows[0]]["example"]))
        if example is not None:
            st.caption(f"Selected **{example.id}**: exits at layer {int(table.iloc[rows[0]]['exit layer'])}.")
            if st.button("Open in the Explore page", key="ee_open", icon=":material/search:"):
                ui.send_to_explore(example.prompt)


by_id = {e.id: e for e in examples}
threshold_views()

# ------------------------------------------------------------------ 4. static views of the sweep

st.subheader("Operating points")
ui.explain(EXPLANATIONS["points"])
if warning := view.arrays.chance_level_warning(view.full["accuracy"]):
    st.warning(warning)
st.dataframe(view.points_table(), hide_index=True, key="ee_points",
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in ("threshold", "accuracy", "agreement", "compute_fraction", "speedup",
                                      "mean_exit_layer")})

d1, d2, _ = st.columns([1, 1, 2])
layout = view.key.checkpoints.describe()
meta = exports.export_meta({"model": lm.name, "task": dataset.name, "examples": len(examples),
                            "dataset_hash": dataset.source_hash})
curve_meta = meta | {"checkpoints": layout, "confidence": state["ee_conf"], "continuation_tokens": state["ee_cont"],
                     "head_in_every_pass": state["ee_head"], "threshold_shown": round(float(state["ee_tau"]), 6)}
stem = exports.file_stem(lm.name, dataset.name, f"n{len(examples)}")
curve_stem = exports.file_stem(lm.name, dataset.name, f"n{len(examples)}", layout, state["ee_conf"])
d1.download_button("Sweep (CSV)", lambda: exports.csv_with_header(arrays.to_frame().to_csv(index=False), meta).encode(),
                   file_name=f"{stem}-sweep.csv",
                   mime="text/csv", key="ee_dl_sweep", on_click="ignore", icon=":material/download:",
                   help=f"The same numbers headless: python -m spade_viz exit-curve --sweep {stem}-sweep.csv "
                        f"--model {lm.name}")
d2.download_button("Threshold curve (CSV)",
                   lambda: exports.csv_with_header(view.curve.to_csv(index=False), curve_meta).encode(),
                   file_name=f"{curve_stem}-curve.csv", mime="text/csv", key="ee_dl_curve", on_click="ignore",
                   icon=":material/download:")

st.subheader("How early does each decoder find the answer?")
ui.explain(EXPLANATIONS["layers"])
first = view.first_layers()
st.caption("First layer reaching the full model's accuracy: "
           + ", ".join(f"{decoders.label(d)} {'never' if v is None else v}" for d, v in first.items()))
a1, a2 = st.columns(2)
a1.plotly_chart(xf.layer_accuracy_figure(view.layer_accuracy, view.full["accuracy"], font_scale=ui.font_scale()),
                key="ee_fig_layers", **PLOT)
a2.plotly_chart(xf.layer_accuracy_figure(view.layer_accuracy, metric="agreement", font_scale=ui.font_scale()),
                key="ee_fig_agree", **PLOT)

# ------------------------------------------------------------------ 5. real early exit

st.subheader("Real early exit")
ui.explain(EXPLANATIONS["real"])
r1, r2, r3, r4 = st.columns(4)
n_real = r1.number_input("Examples to time", 1, len(examples), min(len(examples), 30), key="ee_real_n")
repeats = r2.number_input("Rounds", 1, 10, 2, key="ee_real_repeats")
batch = r3.number_input("Batch", 1, 256, 64, key="ee_real_batch",
                        help="Prompts per forward pass; 1 measures one prompt's latency.")
r4.caption(f"At the slider's threshold τ = {state['ee_tau']:.3f}, checkpoints: {view.key.checkpoints.describe()}.")
b1, b2 = st.columns(2)
if b2.button(f"Honest run on all {n_total} examples", key="ee_real_honest",
             icon=":material/balance:",
             help="Chooses on half, measures the other half: fits linear SPADE, sweeps and picks layout and "
                  "threshold (largest speedup within 1 point) on every other example of the whole dataset, then "
                  "times the real exit on the rest. Takes a few minutes."):
    from spade_viz.exit.honest import calibrated_real_exit

    status = st.status("Choosing on the calibration half…")
    try:
        with ui.heavy_job("the honest real early exit"):
            honest = calibrated_real_exit(lm, dataset, 0.5, int(repeats), batch_size=int(batch),
                                          progress=lambda done, total, message: status.write(message))
        session.record_real_exit((study_key, "honest"), honest.to_dict())
    except sv.SpadeVizError as err:
        ui.show_error(err)
    status.update(state="complete")
if saved_lens is None:
    b1.info("Fit linear SPADE above to time the exit at the slider's threshold.")
elif b1.button("Measure the real early exit", key="ee_real_run", icon=":material/timer:"):
    from spade_viz.exit.real import prepare_prompts, run_real_exit

    bar = st.progress(0.0, text="Timing…")
    try:
        prompts = prepare_prompts(lm, examples[: int(n_real)])
        with ui.heavy_job("timing the real early exit"):
            report = run_real_exit(lm, prompts, saved_lens, float(state["ee_tau"]), view.key.checkpoints,
                                   view.simulator.cost, int(repeats), batch_size=int(batch),
                                   progress=lambda done, total, text: bar.progress(min(1.0, done / total), text=text))
        session.record_real_exit(study_key, report.to_dict())
    except sv.SpadeVizError as err:
        ui.show_error(err)
    bar.empty()
real = session.real_exit(study_key)
if real:
    q = st.columns(4)
    q[0].metric("Measured speedup", f"{real['measured_speedup']:.2f}×")
    q[1].metric("Simulated speedup", f"{real['simulated_speedup']:.2f}×",
                help="From the compute accounting of the exits this run actually took.")
    q[2].metric("Wall clock per example", f"{real['exit_ms_per_example']:.1f} ms",
                f"full pass {real['full_ms_per_example']:.1f} ms", delta_color="off")
    q[3].metric("Agreement with full model", f"{real['agreement']:.1%}")
    st.caption(f"{real['examples']} examples × {real['repeats']} rounds at τ = {real['threshold']:.3f}"
               f" in batches of {real.get('batch_size', 1)}; mean exit layer {real['mean_exit_layer']:.1f}. "
               "Small models on a CPU gain less than the block count suggests: a block reads all its weights "
               "however few rows it computes, and the exited rows' continuation is such a pass.")
    if real.get("other_work_during_timing"):
        st.warning(f"{real['other_work_during_timing']} other job(s) used the model while this was timed (another "
                   "visitor?): the wall-clock figures are disturbed. Measure again when the server is quiet.")

honest = session.real_exit((study_key, "honest"))
if honest:
    st.markdown("**Honest run** (chosen on one half, measured on the other)")
    h = st.columns(4)
    known = honest["accuracy"] is not None and honest["full_accuracy"] is not None
    h[0].metric("Held-out accuracy", f"{honest['accuracy']:.1%}" if known else "—",
                f"{100 * (honest['accuracy'] - honest['full_accuracy']):+.1f} pt vs full {honest['full_accuracy']:.1%}"
                if known else None)
    h[1].metric("Measured speedup", f"{honest['measured_speedup']:.2f}×")
    h[2].metric("Simulated speedup", f"{honest['simulated_speedup']:.2f}×")
    h[3].metric("Chosen threshold", f"{honest['threshold']:.3f}")
    st.caption(f"Checkpoints {honest['checkpoints']}, confidence {honest['confidence']}; chosen on "
               f"{honest['n_calibration']} calibration examples, measured on {honest['n_heldout']} held-out ones.")
    for warning in honest["warnings"]:
        st.warning(warning, icon=":material/warning:")

share(in_view=True)  # the "Copy link" box: the view as the page ends
