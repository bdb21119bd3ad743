"""Compare decoders: logit lens, tuned lens, SPADE and linear SPADE on a dataset, layer by layer.

What the page shows derives from one `ComparePage` state (the data, the training choices)."""

from __future__ import annotations

import streamlit as st

import spade_viz as sv
from spade_viz import compare, decoders
from spade_viz.app import chrome, jobs, links, models, sharing
from spade_viz.app.datasets import dataset_picker
from spade_viz.app.state import ComparePage
from spade_viz.app.widgets import bind, page_state
from spade_viz.data import builtin_tasks
from spade_viz.viz import exports
from spade_viz.viz.compare import comparison_figure, heldout_kl_figure

state = st.session_state
page: ComparePage = page_state("_cd_page", ComparePage)
MAX_RESULTS = 4  # sweeps kept per session

st.title("Compare decoders: which one finds the answer earliest?")
chrome.explain(
    f"{len(compare.COMPARED)} ways to read an intermediate layer; on a labelled dataset, which one gets the answer "
    "right earliest? " + " ".join(f"**{decoders.label(d)}**: {decoders.decoder(d).summary}" for d in compare.COMPARED)
)
COMPARE_LINK = links.compare_params(list(builtin_tasks()))
if (link := sharing.opened("compare", COMPARE_LINK)) is not None:  # a shared link: the task and the limit
    page.take_link(link)
link_box = st.popover("Copy link", icon=":material/link:", help="A link to this page with its task and limit.")


def share() -> None:
    sharing.share("compare", links.encode(page.query(), COMPARE_LINK), where=link_box)


def stop(message: str) -> None:
    st.info(message)
    share()
    st.stop()


serve = models.serve_settings()
lm = models.current()  # after the title and explanation: they paint while the model loads

# ------------------------------------------------------------------ 1. the tuned lens

st.subheader("1. Tuned lens for this model")
if lm is None:
    stop("Load a model in the sidebar to train or use a tuned lens.")

from spade_viz.lenses import tuned  # noqa: E402  (deferred: torch loads after the page paints)
from spade_viz.lenses.affine import default_lens_path, find_lens  # noqa: E402

try:
    lens = find_lens(lm, "tuned_lens")
except sv.SpadeVizError as err:
    lens = None
    chrome.show_error(f"The saved tuned lens could not be used: {err}")

kl = tuned.heldout_from_meta(lens) if lens is not None else None
if lens is not None:
    note = f" Held-out KL to the final prediction, mean over layers: logit lens {kl['mean_logit_lens']:.2f} → " \
           f"tuned lens {kl['mean_tuned_lens']:.2f} nats." if kl else ""
    st.success(f"A tuned lens is saved for this model (trained {lens.meta.get('created', '?').replace('T', ' ')} on "
               f"{lens.meta.get('source', 'unknown text')}).{note}", icon=":material/check_circle:")
else:
    st.info("No tuned lens is saved for this model yet: train one below (a few minutes on a laptop CPU for the "
            "default model). The comparison works without it, with three decoders.")

with st.expander("Train a tuned lens" if lens is None else "Train the tuned lens again", expanded=lens is None):
    chrome.explain(
        "Training reads a text through the model once, then fits one affine map per layer "
        "(starting from the identity) so that the logit lens of the mapped state matches the model's final "
        "next-token distribution (it minimises the KL divergence). One text in five is held out to measure it."
    )
    page.seed_prompts = page.seed_prompts or tuned.DEFAULT_PROMPTS
    page.tokens_each = page.tokens_each or tuned.DEFAULT_NEW_TOKENS
    page.steps = page.steps or tuned.DEFAULT_STEPS
    st.radio("Training text", ["Text the model writes itself", "Upload a text file"], horizontal=True,
             **bind(page, "text_source", "cd_text_source"))
    texts = None
    c1, c2, c3 = st.columns(3)
    if page.text_source == "Text the model writes itself":
        c1.number_input("Seed prompts", 2, 256, help="Varied openings (prose, code, lists, dialogue, arithmetic) "
                        "that the model continues by sampling with a fixed seed.",
                        **bind(page, "seed_prompts", "cd_prompts"))
        c2.number_input("Tokens written per prompt", 4, 512, step=16, **bind(page, "tokens_each", "cd_tokens"))
        st.caption(f"About {page.seed_prompts * (page.tokens_each + 10):,} tokens of text, no download.")
    else:
        upload = st.file_uploader("A plain-text file (UTF-8)", type=["txt", "md"], key="cd_text_upload")
        if upload is not None:
            try:
                texts = tuned.read_calibration_text(upload.getvalue(), f"the file {upload.name}")
            except sv.InputError as err:
                chrome.show_error(err)
    c3.number_input("Training steps", 1, 5000, step=10, **bind(page, "steps", "cd_steps"),
                    help=f"Each step trains every layer's map on {tuned.DEFAULT_BATCH} random positions.")
    ready = page.text_source == "Text the model writes itself" or texts is not None
    if not serve.visitors_save:  # a tuned lens is saved for every visitor: the operator's job on a server
        st.caption("On this server the tuned lens is trained by its operator (`python -m spade_viz calibrate --lens "
                   "tuned`), not from the browser.")
    if st.button("Train tuned lens", key="cd_train", type="primary", icon=":material/model_training:",
                 disabled=not ready or not serve.visitors_save):
        jobs.stop_button("training", "cd_train_stop")
        bar = st.progress(0.0, text="Training the tuned lens…")
        try:
            with jobs.heavy_job("training the tuned lens"):
                new_lens, report = tuned.train_tuned_lens(
                    lm, texts, steps=int(page.steps), n_prompts=int(page.seed_prompts),
                    tokens_each=int(page.tokens_each),
                    source=None if texts is None else f"uploaded text {upload.name}",
                    progress=lambda done, total, message: bar.progress(min(1.0, done / total), text=message),
                )
            new_lens.save(default_lens_path(lm, "tuned_lens"))
        except sv.SpadeVizError as err:
            bar.empty()
            chrome.show_error(err)
        else:
            bar.empty()
            state["_cd_trained"] = report.summary()
            st.rerun()

if state.get("_cd_trained") and lens is not None:
    st.caption("✓ " + state["_cd_trained"])
if kl:
    with st.expander("How close is each lens to the final prediction? (held-out text)", expanded=False):
        chrome.explain("The KL divergence measures how much the layer's prediction differs from the model's final one "
                   "on text not used for training (0 = identical). A working tuned lens is below the logit lens "
                   "at every layer.")
        st.plotly_chart(heldout_kl_figure(kl["per_layer"], font_scale=chrome.font_scale()), key="cd_fig_kl",
                        **chrome.PLOT)

# ------------------------------------------------------------------ 2. the data

st.subheader("2. Pick a dataset")
dataset = dataset_picker("cd", page.data)
if dataset is None:
    stop("Pick a built-in task or upload a file.")

most = min(len(dataset), serve.max_sweep_examples)  # server mode bounds a visitor's sweep
page.data.examples(len(dataset), most)
st.number_input("Examples", 1, most, step=10, help="The first N examples of the dataset are used.",
                **bind(page.data, "limit", "cd_limit"))
subset = dataset.head(int(page.data.limit))

# ------------------------------------------------------------------ 3. the sweep and the comparison

from spade_viz.sweep import cached_sweep, run_sweep, shipped_sweep_problem  # noqa: E402  (deferred: after the model)

results: dict = state.setdefault("_cd_results", {})
key = (models.model_key(lm), lm.fingerprint(), subset.source_hash, None if lens is None else lens.meta.get("created"))
if key not in results:
    try:  # a built-in task opens its shipped sweep at once, whatever lenses are saved
        cached = cached_sweep(lm, subset, fallback_shipped=True)
    except sv.SpadeVizError:
        cached = None
    if cached is not None:
        results[key] = cached
partial = key in results and bool(results[key].info.get("differs"))  # shipped, without a saved lens's columns
if st.button("Run the comparison", key="cd_run", type="primary", icon=":material/play_arrow:",
             disabled=key in results and not partial,
             help="Decodes every example at every layer with each decoder (once per dataset and lens; later visits "
                  "read the stored result)."):
    jobs.stop_button("the comparison", "cd_run_stop")
    bar = st.progress(0.0, text="Decoding every example at every layer…")
    try:
        with jobs.heavy_job("decoding"):  # in server mode a visitor's sweep is not stored for everyone
            results[key] = run_sweep(lm, subset, use_cache=serve.visitors_save,
                                     progress=jobs.bar_progress(bar, "Decoding"))
        while len(results) > MAX_RESULTS:
            results.pop(next(iter(results)))
    except sv.SpadeVizError as err:
        bar.empty()
        chrome.show_error(err)
    else:
        st.rerun()  # redraw with the button disabled

result = results.get(key)
if result is None:
    try:
        problem = shipped_sweep_problem(lm, subset)
    except sv.SpadeVizError:
        problem = None
    stop("Press **Run the comparison**: the model reads every example once and each decoder reads every layer."
         + (f" (The shipped comparison cannot be shown: {problem}.)" if problem else ""))
if result.info.get("precomputed"):
    st.caption("✓ This comparison shipped with spade-viz (precomputed on this model): shown at once, no model run."
               + "".join(f" Differs from a run now: {line}." for line in result.info.get("differs", ())))

curves = compare.layer_curves(result.summary())
table = compare.first_layers(curves)
missing = [decoders.label(d) for d in compare.COMPARED if d not in set(curves["decoder"])]
st.subheader("3. Layer by layer")
chrome.explain(
    f"On {result.num_examples} examples of **{result.dataset_name}**: the solid line of each decoder is the share "
    "of examples whose top token at that layer is the gold answer; the dotted line is the share whose top token "
    "is already the model's own final answer (right or wrong). The grey line marks 95% of the full model's "
    "accuracy."
)
if missing:
    st.caption("Not in this comparison: " + ", ".join(missing) + (" (train a tuned lens above and run again)."
                                                                  if "tuned lens" in missing else "."))
st.plotly_chart(comparison_figure(curves, font_scale=chrome.font_scale()), key="cd_fig_compare", **chrome.PLOT)
chrome.explain(
    "How early each decoder gets there: the first layer at which its accuracy reaches 95% of the full model's, "
    "the layer from which it stays there, and the first layer at which it agrees with the final answer on 95% "
    "of the examples. Earlier is better: a decoder that is right early lets the model stop early."
)
st.dataframe(compare.display_table(table, result.num_layers), hide_index=True, key="cd_table")
if result.linear_spade_source:
    st.caption(f"Linear SPADE: {result.linear_spade_source}.")
meta = exports.export_meta({"model": lm.name, "task": result.dataset_name, "examples": result.num_examples,
                            "tuned_lens": None if lens is None else lens.meta.get("created", "saved"),
                            "linear_spade": result.linear_spade_source or None})
stem = exports.file_stem(lm.name, result.dataset_name, f"n{result.num_examples}")
c1, c2 = st.columns(2)
c1.download_button("Download the per-layer numbers (CSV)", curves.to_csv(index=False).encode(),
                   file_name=f"{stem}-compare.csv", mime="text/csv", key="cd_download")
c2.download_button("Their facts (.meta.json)", exports.csv_meta(meta, f"{stem}-compare.csv").encode(),
                   file_name=exports.meta_file_name(f"{stem}-compare.csv"), mime="application/json",
                   key="cd_download_meta")
share()
