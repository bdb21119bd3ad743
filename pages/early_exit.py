"""Early exit: sweep a labelled dataset, then slide the exit threshold and watch accuracy against compute.

Everything shown derives from one `ExitPage` state (the data, the layout, the threshold) and the
session's sweeps (`ExitSession`): the slider, its metrics, the examples table, the real-exit panel
and the link read the same threshold, a value of the view's one threshold grid.
"""

from __future__ import annotations

import streamlit as st

from spade_viz import decoders
from spade_viz.app import chrome, links, models, sharing
from spade_viz.app.datasets import dataset_picker
from spade_viz.app.live_slider import live_threshold_slider
from spade_viz.app.pages import send_to_explore
from spade_viz.app.state import EXIT_LINK_KEEP, ExitPage
from spade_viz.app.widgets import bind, page_state
from spade_viz.data import builtin_tasks
from spade_viz.exit import Checkpoints
from spade_viz.exit.session import CONFIDENCES, ExitSession, confidences, point_threshold, shown, view_notes
from spade_viz.viz import exit_figures as xf
from spade_viz.viz import exports
from spade_viz.viz.tokens import visible_token

EXPLAIN = {
    "page": "The hybrid early exit runs the model layer by layer; at each checkpoint a cheap linear map of the "
            "answer token's state (linear SPADE) says how sure the model already is. Once that uncertainty (the "
            "entropy) falls below a threshold, the model stops and SPADE answers from that layer. Run it over a "
            "dataset once, then slide the threshold: everything below is recomputed from the stored results, "
            "not by the model.",
    "metrics": "Accuracy: share of examples whose exit answer is the gold token. Compute: mean cost of an example "
               "as a fraction of its own full forward pass. Speedup = 1 / compute. Agreement: share whose exit "
               "answer equals the full model's answer. The curve: each point is one threshold, up and left is "
               "better (the hybrid exit against the classic logit-lens exit, SPADE at one fixed layer, the full "
               "model and an oracle that knows the best layer). The bars: where the examples leave the network; "
               "the dark bar holds those never confident enough, answered by the full model.",
    "layers": "Accuracy of each decoder if every example were read at that layer: how early each one finds the "
              "answer. SPADE usually gets there many layers before the logit lens.",
    "points": "The paper's two operating points: the threshold with the best accuracy, and the threshold with the "
              "largest speedup whose accuracy is within 1 point of the full model's.",
    "table": "Each example at this threshold; select a row to open its prompt in the Explore page.",
    "cost": "Compute is counted in block-token units: a block applied to one token, by parameter count. Exit at "
            "layer l costs l blocks on the whole prompt, L - l blocks on the answer token (the SPADE continuation; "
            "the paper charges 2 tokens), one unembedding, and per checkpoint passed one linear-SPADE map and one "
            "unembedding (only the choices' rows when the example has answer choices). Never confident: the full "
            "pass plus all checkpoint costs.",
    "real": "Runs the exit for real: the forward pass stops at the exit layer and SPADE continues the answer row "
            "from there; its wall clock is measured against plain full passes on the same prompts, interleaved. "
            "In batches, confident prompts leave the batch at their exit (the throughput a server sees); a batch "
            "of 1 is one prompt's latency, which on a CPU barely drops: a block costs about as much for one row as "
            "for twenty. The honest run chooses the layout and threshold on half of the examples and measures "
            "the other half, so its numbers are what new prompts can expect.",
}
EXIT_LINK = links.exit_params(list(builtin_tasks()), CONFIDENCES)

page: ExitPage = page_state("_ee_page", ExitPage)
session: ExitSession = page_state("_ee_session", ExitSession)

st.title("Early exit: how early can the model stop?")
chrome.explain(EXPLAIN["page"])
if (link := sharing.opened("early_exit", EXIT_LINK)) is not None:  # a shared link: task, limit, layout, tau
    page.take_link(link)
if (release := st.session_state.get("ee_live")) and release.get("id") != page.release_id:
    page.tau, page.release_id = float(release["tau"]), str(release["id"])  # the slider was let go: take it in
link_box = st.popover("Copy link", icon=":material/link:", help="A link to this page as you see it now.")
views_area = st.container()  # once a sweep shows, its slider comes first and the set-up folds away below
setup_area = st.expander("Data, sweep and linear SPADE", expanded=page.shown is None or page.shown not in session,
                         icon=":material/dataset:")


def share(in_view: bool) -> None:
    """The page's state into the URL and the "Copy link" box (the layout and tau once a sweep shows)."""
    keep = EXIT_LINK_KEEP if in_view else ()
    sharing.share("early_exit", links.encode(page.query(in_view), EXIT_LINK, keep=keep), where=link_box)


def stop(message: str) -> None:
    st.info(message)
    share(in_view=False)
    st.stop()


# ------------------------------------------------------------------ 1. the data, the model, the sweep

with setup_area:
    dataset = dataset_picker("ee", page.data)
    if dataset is None:
        stop("Pick a built-in task or upload a file to start.")
    serve = models.serve_settings()
    n_total = len(dataset)
    page.data.examples(n_total, serve.max_sweep_examples)  # server mode bounds a visitor's sweep
    c1, c2 = st.columns([1, 3])
    c1.number_input("Examples", min_value=1, max_value=min(n_total, serve.max_sweep_examples), step=10,
                    help="The first N examples of the dataset are used.", **bind(page.data, "limit", "ee_limit"))
    c2.caption(f"**{dataset.name}**: {n_total} examples" + (" with answer choices" if dataset.has_choices else "")
               + f". Example: `{dataset.examples[0].prompt[-80:]!r}` → `{dataset.examples[0].answer!r}`")
    lm = models.current()
    if lm is None:
        stop("Load a model in the sidebar to run the sweep.")

from spade_viz.app import real_exit, sweeps  # noqa: E402  (deferred: torch loads after the page paints)

subset = dataset.head(int(page.data.limit))
examples = subset.examples
with setup_area:
    saved_lens = sweeps.linear_spade(lm)
    study_key = sweeps.study_key(lm, dataset, page.data.limit, saved_lens)
    sweeps.find_sweep(session, study_key, lm, subset, saved_lens)
    sweeps.controls(session, study_key, lm, subset, saved_lens)
study = session.get(study_key)
if study is None:
    with setup_area:
        stop("Press **Run the sweep**: it runs the model once over these examples; afterwards the threshold "
             "slider needs no model at all." + sweeps.missing_sweep_reason(lm, subset))
with setup_area:
    if session.shipped(study_key):
        st.caption("✓ This sweep shipped with spade-viz (precomputed on this model, same settings and examples): "
                   "the slider is ready at once, no model run."
                   + "".join(f" Differs from a run now: {line}." for line in sweeps.differences(study_key)))
    if study.skipped:
        with st.expander(f"{len(study.skipped)} examples were skipped by the sweep"):
            st.code("\n".join(f"{i}: {why}" for i, why in study.skipped), language=None)

# ------------------------------------------------------------------ 2. the view: layout, threshold grid

arrays = study.arrays
L = arrays.num_layers
if page.needs_opening(study_key):  # a sweep new in view opens at its fastest layout within 1 point
    with st.spinner("Finding the checkpoint layout with the largest speedup within 1 point…"):
        page.apply(session.opening(study_key, page.settings), study_key)
page.use(page.settings.fitted(arrays))
view = session.view(study_key, page.settings)
page.tau = session.grid(view).snap(page.tau)


def set_by_hand() -> None:  # a layout control changed
    page.note = "Layout set by hand."


def search() -> None:
    page.apply(session.search(study_key, page.settings))


def jump(which: str) -> None:
    threshold = point_threshold(view, which)
    if threshold is not None:
        page.tau = threshold


with st.expander("Checkpoints and compute accounting", icon=":material/tune:"):
    s1, s2, s3, s4 = st.columns(4)
    s1.number_input("Check every k-th layer", min_value=1, max_value=L,
                    help="Fewer checkpoints cost less overhead but may exit later.",
                    **bind(page, "every", "ee_every", then=set_by_hand))
    s2.number_input("First checkpoint layer", min_value=0, max_value=L - 1,
                    help="Early layers are often confidently wrong on small models: start later.",
                    **bind(page, "start", "ee_start", then=set_by_hand))
    s3.radio("Continuation tokens", [1, 2], horizontal=True,
             help="1: the answer row only (the <s> row's states are cached once); 2: the paper's charge.",
             **bind(page, "continuation_tokens", "ee_cont"))
    s4.selectbox("Confidence from", confidences(arrays), format_func=decoders.label,
                 help="Linear SPADE is the method; SPADE itself is an idealised upper bound "
                      "(its own cost per checkpoint is not charged).", **bind(page, "confidence", "ee_conf"))
    st.checkbox("Charge the answer's unembedding in every pass", **bind(page, "include_head", "ee_head"))
    st.button("Find the fastest checkpoints within 1 point", key="ee_search", icon=":material/manage_search:",
              on_click=search,
              help="Tries every k-th layer from every first layer (k = 1, 2, 3, 4, 6) and keeps the layout with the "
                   "largest speedup within 1 point of the full model's accuracy. Chosen on this same data, like "
                   "the threshold: an optimistic estimate.")
    chrome.explain(EXPLAIN["cost"])
    st.caption(f"For this model one unembedding costs {study.cost.head_units:.2f} blocks on one token and a "
               f"linear-SPADE map {study.cost.map_units:.3f}; the prompts average {arrays.n_tokens.mean():.1f} tokens.")

# ------------------------------------------------------------------ 3. the threshold (drawn first)

tau = page.tau
outcome = view.at(tau)
p = outcome.point
with views_area:
    st.subheader("Slide the threshold")
    st.caption(f"**{subset.name}**, {len(examples)} examples · checkpoints {view.key.checkpoints.describe()} · "
               f"confidence {decoders.label(view.key.confidence)}. {page.note}")
    b1, b2, _ = st.columns([1, 1, 3])
    b1.button("Best accuracy", key="ee_jump_best", on_click=jump, args=("best_accuracy",),
              help="Move the slider to the threshold with the best accuracy.")
    b2.button("Fastest within 1 point", key="ee_jump_1pt", on_click=jump, args=("within_1pt",),
              help="Move the slider to the largest speedup whose accuracy is within 1 point of the full model.")
    tradeoff = session.figure(f"tradeoff@{chrome.font_scale()}", view, lambda: xf.tradeoff_figure(
        view.curve, None, view.classic, view.fixed, view.full, view.oracle, view.points,
        font_scale=chrome.font_scale()))
    live_threshold_slider(session.slider(view), tradeoff, tau, page.release_id, view_notes(view), key="ee_live",
                          large=chrome.font_scale() > 1)
    chrome.explain(EXPLAIN["metrics"])
    text = shown(tau, p)
    st.markdown(f"**Examples at τ = {text['tau']}** (accuracy {text['accuracy']}, compute {text['compute_fraction']}, "
                f"speedup {text['speedup']}, mean exit layer {text['mean_exit_layer']} / {L})")
    chrome.explain(EXPLAIN["table"])
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
    by_id = {e.id: e for e in examples}
    if rows and (example := by_id.get(str(table.iloc[rows[0]]["example"]))) is not None:
        st.caption(f"Selected **{example.id}**: exits at layer {int(table.iloc[rows[0]]['exit layer'])}.")
        if st.button("Open in the Explore page", key="ee_open", icon=":material/search:"):
            send_to_explore(example.prompt)

# ------------------------------------------------------------------ 4. static views of the sweep

st.subheader("Operating points")
chrome.explain(EXPLAIN["points"])
points = view.points_table()
st.dataframe(points, hide_index=True, key="ee_points",
             column_config={c: st.column_config.NumberColumn(format="%.3f") for c in points.columns[1:]})

d1, d2, _ = st.columns([1, 1, 2])
layout = view.key.checkpoints.describe()
meta = exports.export_meta({"model": lm.name, "task": dataset.name, "examples": len(examples),
                            "dataset_hash": dataset.source_hash, "cost": arrays.meta.get("cost")})
curve_meta = meta | {"checkpoints": layout, "confidence": page.confidence,
                     "continuation_tokens": page.continuation_tokens, "head_in_every_pass": page.include_head,
                     "threshold_shown": tau}
stem = exports.file_stem(lm.name, dataset.name, f"n{len(examples)}")
curve_stem = exports.file_stem(lm.name, dataset.name, f"n{len(examples)}", layout, page.confidence)
d1.download_button("Sweep (CSV)", lambda: arrays.to_frame().to_csv(index=False).encode(),
                   file_name=f"{stem}-sweep.csv", mime="text/csv", key="ee_dl_sweep", on_click="ignore",
                   icon=":material/download:",
                   help=f"The same numbers headless, with the facts file below in the same folder: "
                        f"python -m spade_viz exit-curve --sweep {stem}-sweep.csv")
d1.download_button("Sweep facts (.meta.json)", lambda: exports.csv_meta(meta, f"{stem}-sweep.csv").encode(),
                   file_name=exports.meta_file_name(f"{stem}-sweep.csv"), mime="application/json",
                   key="ee_dl_sweep_meta", on_click="ignore", icon=":material/download:",
                   help="Model, task and cost model of the sweep CSV: exit-curve reads them from beside it")
d2.download_button("Threshold curve (CSV)", lambda: view.curve.to_csv(index=False).encode(),
                   file_name=f"{curve_stem}-curve.csv", mime="text/csv", key="ee_dl_curve", on_click="ignore",
                   icon=":material/download:")
d2.download_button("Curve facts (.meta.json)", lambda: exports.csv_meta(curve_meta, f"{curve_stem}-curve.csv").encode(),
                   file_name=exports.meta_file_name(f"{curve_stem}-curve.csv"), mime="application/json",
                   key="ee_dl_curve_meta", on_click="ignore", icon=":material/download:")

st.subheader("How early does each decoder find the answer?")
chrome.explain(EXPLAIN["layers"])
first = view.first_layers()
st.caption("First layer reaching the full model's accuracy: "
           + ", ".join(f"{decoders.label(d)} {'never' if v is None else v}" for d, v in first.items()))
a1, a2 = st.columns(2)
a1.plotly_chart(xf.layer_accuracy_figure(view.layer_accuracy, view.full["accuracy"], font_scale=chrome.font_scale()),
                key="ee_fig_layers", **chrome.PLOT)
a2.plotly_chart(xf.layer_accuracy_figure(view.layer_accuracy, metric="agreement", font_scale=chrome.font_scale()),
                key="ee_fig_agree", **chrome.PLOT)

# ------------------------------------------------------------------ 5. real early exit

st.subheader("Real early exit")
chrome.explain(EXPLAIN["real"])
page.real_examples = min(page.real_examples, len(examples))
r1, r2, r3, r4 = st.columns(4)
r1.number_input("Examples to time", 1, len(examples), **bind(page, "real_examples", "ee_real_n"))
r2.number_input("Rounds", 1, 10, **bind(page, "real_rounds", "ee_real_repeats"))
r3.number_input("Batch", 1, 256, help="Prompts per forward pass; 1 measures one prompt's latency.",
                **bind(page, "real_batch", "ee_real_batch"))
r4.caption(f"At the slider's threshold τ = {tau:.3f}, checkpoints: {layout}.")
b1, b2 = st.columns(2)
if b2.button(f"Honest run on all {n_total} examples", key="ee_real_honest", icon=":material/balance:",
             help="Chooses on half, measures the other half: fits linear SPADE, sweeps and picks layout and "
                  "threshold (largest speedup within 1 point, confidence over the whole vocabulary as on the "
                  "slider) on every other example of the whole dataset, then times the real exit on the rest. "
                  "Takes a few minutes."):
    if (honest := real_exit.run_honest(lm, dataset, int(page.real_rounds), int(page.real_batch))) is not None:
        session.record_real_exit((study_key, "honest"), honest)
if saved_lens is None:
    b1.info("Fit linear SPADE above to time the exit at the slider's threshold.")
elif b1.button("Measure the real early exit", key="ee_real_run", icon=":material/timer:"):
    report = real_exit.run_timed(lm, examples[: int(page.real_examples)], saved_lens, tau, view,
                                 int(page.real_rounds), int(page.real_batch))
    if report is not None:
        session.record_real_exit(study_key, report)


def apply_honest(chosen) -> None:
    page.apply_layout(Checkpoints.parse(chosen.checkpoints), chosen.threshold,
                      f"Layout and threshold from the honest run (chosen on {chosen.n_calibration} calibration "
                      "examples); the slider takes its nearest step.")


if (timed := session.real_exit(study_key)) is not None:
    real_exit.show_timed_run(timed)
if (honest := session.real_exit((study_key, "honest"))) is not None:
    real_exit.show_honest_run(honest, apply_honest)

share(in_view=True)
