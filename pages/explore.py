"""Explore one prompt: what every layer would answer, decoded by the logit lens and by SPADE.

Everything shown derives from one `ExplorePage` state (the prompt, the options, the target, the
window, the SPADE grid switch); widgets and the link are drawn from it on every run.
"""

from __future__ import annotations

import streamlit as st

import spade_viz as sv
from spade_viz import decoders, viz, windows
from spade_viz.app import chrome, jobs, links, models, sharing
from spade_viz.app.datasets import presets
from spade_viz.app.pages import SENT_PROMPT
from spade_viz.app.state import ExplorePage
from spade_viz.app.widgets import bind, page_state

PRESETS = presets()
BY_NAME = {p.name: p for p in PRESETS}
TEXTS = {p.name: p.text for p in PRESETS}
WINDOW = windows.VIEW  # prompt positions shown at once in heatmap 1: readable cells on a laptop screen

st.title("Explore a prompt, layer by layer")
chrome.explain(
    "A language model builds its answer gradually, one layer after another. Here you can see what it "
    "would answer if we stopped at each layer and decoded right there: with the **logit lens** (read the "
    "layer's state directly) and with **SPADE** (keep only the start token `<s>` and the answer token, and "
    "let the remaining layers finish)."
)
from spade_viz.app import analyses, explore_views  # noqa: E402  (deferred: the title paints before torch loads)

most_tokens = models.serve_settings().max_prompt_tokens
page: ExplorePage = page_state("_sv_explore", lambda: ExplorePage(
    preset=PRESETS[0].name, prompt=PRESETS[0].text, request=PRESETS[0].text, metric=next(iter(viz.METRICS)),
    max_tokens=min(analyses.DEFAULT_MAX_TOKENS, most_tokens)))  # a first visit analyses the first preset
LINK = links.explore_params([p.name for p in PRESETS], list(viz.METRICS), analyses.DEFAULT_MAX_TOKENS)
if (link := sharing.opened("explore", LINK)) is not None:  # a shared link: its prompt and view
    page.take_link(link, TEXTS)
if (sent := st.session_state.pop(SENT_PROMPT, None)) is not None:  # "Open in Explore" on another page
    page.analyse(sent)
page.max_tokens = max(2, min(int(page.max_tokens), most_tokens))  # within this server's limit
lm = models.current()  # after the title and explanation: they paint while the model loads


def use_preset() -> None:
    page.analyse(BY_NAME[page.preset].text)


def analyse_box() -> None:
    """Analyse the box's text (the button, or Ctrl+Enter in the box): read from the box itself, whichever
    of the two callbacks runs first."""
    page.analyse(st.session_state.get("prompt", page.prompt))


left, right = st.columns([1, 2.2], gap="medium")
with left:
    st.selectbox("Preset", list(BY_NAME), help="Picking a preset fills the prompt box and analyses it; you can "
                 "then edit the text.", **bind(page, "preset", "preset", then=use_preset))
    picked = BY_NAME[page.preset]
    if picked.note and page.prompt == picked.text:  # not once the user has edited the text
        st.caption(picked.note)
    st.button("Analyze", key="run", type="primary", icon=":material/play_arrow:", on_click=analyse_box,
              disabled=lm is None, help="Ctrl+Enter in the prompt box does the same.")
    link_box = st.popover("Copy link", icon=":material/link:", help="A link to this page as you see it now.")
with right:
    lines = page.prompt.count("\n") + 1
    st.text_area("Prompt (the model predicts the token that comes next)", height=min(280, max(110, 22 * lines + 42)),
                 **bind(page, "prompt", "prompt", then=analyse_box))

with st.expander("SPADE and input options"):
    opt1, opt2 = st.columns(2)
    opt1.radio(
        "SPADE position ids", ["original", "renumbered"], horizontal=True,
        help="original: the answer token keeps its position in the prompt (0 and T); renumbered: the two "
             "kept tokens become positions 0 and 1.", **bind(page, "spade_positions", "spade_positions"))
    opt2.number_input("Token limit", min_value=2, max_value=most_tokens, step=64,
                      help="Longer prompts are refused (the model's own context length also applies).",
                      **bind(page, "max_tokens", "max_tokens"))


def share() -> None:
    """The page's state into the URL and the "Copy link" box (called before every stop)."""
    sharing.share("explore", links.encode(page.query(sharing.link_model(lm), TEXTS), LINK), where=link_box)


if lm is None:
    st.info("Load a model in the sidebar to analyse the prompt.")
    share()
    st.stop()
if page.request is None:
    st.info("Pick a preset or type a prompt, then press **Analyze**.")
    share()
    st.stop()
request = page.request
try:
    with st.spinner("Running the model and decoding every layer…"):
        base = analyses.analysis(lm, request, spade_positions=page.spade_positions, max_tokens=page.max_tokens,
                                 without_bos=page.show_no_bos)
except sv.SpadeVizError as err:
    chrome.show_error(f"{err} (the token limit is under *SPADE and input options*)" if "token" in str(err) else err)
    share()
    st.stop()
for problem in analyses.lens_problems(lm):
    st.warning(f"A saved lens was not used: {problem}")

# ------------------------------------------------------------------ view controls (no recompute)
final = base.answer["logit_lens"]
candidates = [int(i) for i in final.top_ids[-1, 0]]
cand_probs = {int(i): float(p) for i, p in zip(final.top_ids[-1, 0], final.top_probs[-1, 0])}
target_options = ["final", *[f"#{i}" for i in candidates[1:]], "other"]
page.fit_target(target_options)
shown = {i: viz.visible_token(base.token(i)) for i in candidates}
clash = {i for i in candidates if list(shown.values()).count(shown[i]) > 1}  # e.g. two partial-byte tokens


def target_label(option: str) -> str:
    if option == "other":
        return "another token…"
    if option == "final":  # one label whatever the prompt: the browser keeps a label while its value stays
        return "the final answer (top-1)"
    i = int(option[1:])
    return f"{shown[i]} (id {i}, {cand_probs[i]:.0%})" if i in clash else f"{shown[i]} ({cand_probs[i]:.0%})"


c1, c2, c3, c4 = st.columns([1, 1.3, 1.25, 1], vertical_alignment="bottom")
c1.selectbox("Colour cells by", list(viz.METRICS), format_func=lambda m: viz.METRICS[m].label,
             help=" ".join(f"{m.label}: {m.help}" for m in viz.METRICS.values()), **bind(page, "metric", "metric"))
c2.selectbox("Target token", target_options, format_func=target_label,
             help="The token whose probability and rank are followed through the layers.",
             **bind(page, "target", "target"))
target = None
if page.target == "other":
    c2.text_input("Target token text", placeholder="' Yes' (with its leading space) or #1234",
                  **bind(page, "target_text", "target_text"))
    target = page.target_text or None
elif page.target != "final":
    target = int(page.target[1:])
c3.checkbox("Show SPADE without <s>", help="The ablation: SPADE keeps only the answer token, without the start token.",
            **bind(page, "show_no_bos", "show_no_bos"))

res = base
if target is not None:
    try:
        res = analyses.analysis(lm, request, spade_positions=page.spade_positions, max_tokens=page.max_tokens,
                                target=target, without_bos=page.show_no_bos)
    except sv.SpadeVizError as err:
        chrome.show_error(f"Target not used: {err}")
    else:
        if page.target == "other":
            c2.caption(f"Following token `{viz.visible_token(res.token(res.target_id))}` (id {res.target_id}), "
                       "the first token of your text.")

n = len(res.tokens)
window = (0, n)
if n > WINDOW:
    last_start = n - WINDOW
    if page.window_start is not None and page.window_start >= last_start:
        page.window_start = None  # the window ending at the answer
    start = c4.slider("First position shown", 0, last_start,
                      help=f"The grid shows {WINDOW} positions at a time; slide to move along the prompt.",
                      **bind(page, "window_start", "window_start",
                             show=lambda v: last_start if v is None else v,
                             take=lambda v: None if v >= last_start else int(v)))
    window = (start, start + WINDOW)
share()

drawn = decoders.ordered(d for d in res.decoders if page.show_no_bos or d != "spade_no_bos")
first = {d: res.first_stable_layer(d) for d in drawn}


def settled(d: str) -> str:
    return f"layer {first[d]}" if first[d] is not None else "never"


st.markdown(  # before any grid is decoded: the answer paints first
    f"**{n} tokens · {res.num_layers} layers.** "
    f"Final answer: **`{viz.visible_token(res.token(res.final_answer_id))}`**"
    f" · target: **`{viz.visible_token(res.token(res.target_id))}`** · top-1 equals the final answer from "
    + ", ".join(f"{decoders.label(d)}: **{settled(d)}**" for d in drawn)
)

# The grids are computed for the window in view only (cached by chunks with the analysis, so sliding
# back costs nothing); the answer views above read the answer column, computed with the analysis.
grid_names = decoders.ordered(["logit_lens", *(["tuned_lens"] if "tuned_lens" in res.grids else []),
                               *(["spade"] if page.spade_grid else [])])
with_spade = "spade" in grid_names
bar, stop = st.empty(), st.empty()
if with_spade and not res.is_filled(*window, grid_names):  # seconds a window on a long prompt
    jobs.stop_button("SPADE at every position", "spade_grid_stop", where=stop,
                     then=lambda: setattr(page, "spade_grid", False))
try:
    in_view = res.windowed(*window, decoders=grid_names, progress=jobs.bar_progress(bar, "Decoding the window"))
except sv.SpadeVizError as err:
    chrome.show_error(err)
    st.stop()
bar.empty()
stop.empty()
zrange = viz.metric_range(in_view, page.metric)

scale = chrome.font_scale()
metric = page.metric


def build_figures() -> dict:
    """Every figure of this view; built once per analysis and view (`analyses.figures`), not per rerun."""
    figs = {
        "heatmap_positions": viz.layer_position_heatmap(in_view, metric, window=window, zrange=zrange,
                                                        compact=with_spade, font_scale=scale),
        "heatmap_answer": viz.answer_heatmap(res, metric, decoders=drawn, zrange=zrange, font_scale=scale),
        "entropy_curves": viz.entropy_curves(res, decoders=drawn, font_scale=scale),
        "target_curves": viz.target_curves(res, decoders=drawn, font_scale=scale),
    }
    if with_spade:  # the whole prompt by SPADE (and a saved tuned lens) beside the logit lens
        figs |= {f"heatmap_positions_{name}": viz.layer_position_heatmap(
            in_view, metric, window=window, decoder=name, zrange=zrange, compact=True, font_scale=scale)
            for name in grid_names if name != "logit_lens"}
        figs["agreement"] = viz.agreement_heatmap(in_view, "spade", "logit_lens", window=window, font_scale=scale)
    for name in [name for name in figs if name.startswith("heatmap_") or name == "agreement"]:
        viz.clickable_cells(figs[name])  # a click on a cell opens it below
    return figs


figs = dict(analyses.figures((res,), (metric, window, tuple(drawn), tuple(grid_names), scale), build_figures))


def clickable(key: str, chart: str = "positions") -> dict:
    """A heatmap whose cells open on a click: the click goes into the page's state (`take_click`)."""
    def clicked() -> None:
        page.take_click(chart, st.session_state[key].get("selection"), res.answer_position)

    return {"key": key, "on_select": clicked, "selection_mode": "points"}


chrome.explain(
    "**Logit lens at every position.** Each row is a layer (0 = the input embeddings read by the lens, not yet a "
    "prediction; top = the model's output); each column is a token of your prompt. A cell shows the token the "
    "model would predict next at that position if it stopped at that layer; hover for the top 5, **click a cell** "
    "for its top 10 by every decoder (below the heatmaps). The answer position is outlined in red."
)
st.caption(viz.LEGEND)
if not with_spade:
    st.plotly_chart(figs["heatmap_positions"], **clickable("fig_positions"), **chrome.PLOT)
    chrome.explain(
        "**SPADE at every position.** Decode each token of the prompt as if it were the answer: keep `<s>` and "
        "that token at each layer and let the remaining layers finish. Position 0 is `<s>` itself: with nothing to "
        "drop, SPADE there is the model's own output at every layer."
    )
    st.button("Decode SPADE at every position", key="spade_grid_run", icon=":material/grid_on:",
              on_click=setattr, args=(page, "spade_grid", True),
              help=f"Continues each position shown through the upper layers at every layer and decodes it "
                   f"({res.num_layers} rows a position), window by window as you slide; kept with the analysis.")
else:
    chrome.explain(
        "**SPADE at every position, beside the logit lens** (one colour scale). In SPADE's grid each column is "
        "decoded as if that token were the answer: keep `<s>` and it, let the remaining layers finish. Position 0 "
        "is `<s>` itself: with nothing to drop, SPADE there is the model's own output at every layer."
    )
    for column, name in zip(st.columns(len(grid_names), gap="small"), grid_names):
        key = "heatmap_positions" if name == "logit_lens" else f"heatmap_positions_{name}"
        chart_key = "fig_positions" if name == "logit_lens" else f"fig_positions_{name}"
        column.plotly_chart(figs[key], **clickable(chart_key), **chrome.PLOT)
    chrome.explain(
        "**Where the two disagree.** Green: both already give the model's final answer at that position; orange: "
        "only SPADE does; blue: only the logit lens. Triangles and circles mark the layer from which each settles "
        "on the final answer; the number on top is how many layers earlier SPADE settles."
    )
    st.plotly_chart(figs["agreement"], **clickable("fig_agreement"), **chrome.PLOT)
    st.button("Hide SPADE at every position", key="spade_grid_hide", icon=":material/grid_off:",
              on_click=setattr, args=(page, "spade_grid", False))

h2, curves = st.columns([1, 1.9], gap="medium")
with h2:
    chrome.explain(
        "**The answer position, decoded several ways.** SPADE often finds the final answer many layers before "
        "the logit lens. Red outline: from this layer up, the decoder's top-1 is the final answer."
    )
    st.plotly_chart(figs["heatmap_answer"], **clickable("fig_answer", "answer"), **chrome.PLOT)
with curves:
    chrome.explain(
        "**Curves at the answer position.** Entropy measures how undecided a prediction is (0 = certain). Below, "
        "the probability and the rank of the target token (rank 1 = the top prediction). A star and a dotted "
        "line mark the first layer from which each decoder's top-1 is the final answer and stays so."
    )
    st.plotly_chart(figs["entropy_curves"], key="fig_entropy", **chrome.PLOT)
    st.plotly_chart(figs["target_curves"], key="fig_target", **chrome.PLOT)

explore_views.cell_and_pins(page, lm, res, figs, scale)
explore_views.comparison(page, lm, res, drawn, figs, scale)
explore_views.generation(page, lm, figs, scale)
explore_views.downloads(page, lm, res, target, window, with_spade, figs)
