"""Explore one prompt: what every layer would answer, decoded by the logit lens and by SPADE.

Everything shown derives from one `ExplorePage` state (the prompt, the options, the target, the
window, the SPADE grid switch); widgets and the link are drawn from it on every run.
"""

from __future__ import annotations

import json

import streamlit as st

import spade_viz as sv
from spade_viz import decoders, viz
from spade_viz.app import chrome, explorations, jobs, links, models, sharing
from spade_viz.app.datasets import presets
from spade_viz.app.pages import SENT_PROMPT
from spade_viz.app.state import ExplorePage
from spade_viz.app.widgets import bind, page_state
from spade_viz.viz import exports

PRESETS = presets()
BY_NAME = {p.name: p for p in PRESETS}
TEXTS = {p.name: p.text for p in PRESETS}
WINDOW = 14  # prompt positions shown at once in heatmap 1: readable cells on a laptop screen
PLOT = dict(theme=None, config={"displaylogo": False})

st.title("Explore a prompt, layer by layer")
chrome.explain(
    "A language model builds its answer gradually, one layer after another. Here you can see what it "
    "would answer if we stopped at each layer and decoded right there: with the **logit lens** (read the "
    "layer's state directly) and with **SPADE** (keep only the start token `<s>` and the answer token, and "
    "let the remaining layers finish)."
)
from spade_viz.app import analyses  # noqa: E402  (deferred: the title paints before torch loads)

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

spade_grid = None
sources = (res,)  # the kept objects the figures are drawn from
if page.spade_grid:  # kept for this prompt, or asked for by a link: computed on the button's press
    spade_grid = analyses.spade_grid(lm, request, page.spade_positions, page.max_tokens, compute=False)
    if spade_grid is not None:
        sources = (res, spade_grid)
        res = sv.with_grid(lm, res, "spade", spade_grid)

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
zrange = viz.metric_range(res, page.metric)
first = {d: res.first_stable_layer(d) for d in drawn}


def settled(d: str) -> str:
    return f"layer {first[d]}" if first[d] is not None else "never"


st.markdown(
    f"**{n} tokens · {res.num_layers} layers.** "
    f"Final answer: **`{viz.visible_token(res.token(res.final_answer_id))}`**"
    f" · target: **`{viz.visible_token(res.token(res.target_id))}`** · top-1 equals the final answer from "
    + ", ".join(f"{decoders.label(d)}: **{settled(d)}**" for d in drawn)
)

scale = chrome.font_scale()
metric = page.metric
grid_names = decoders.ordered(res.grids) if spade_grid is not None else []


def build_figures() -> dict:
    """Every figure of this view; built once per analysis and view (`analyses.figures`), not per rerun."""
    figs = {
        "heatmap_positions": viz.layer_position_heatmap(res, metric, window=window, zrange=zrange,
                                                        compact=spade_grid is not None, font_scale=scale),
        "heatmap_answer": viz.answer_heatmap(res, metric, decoders=drawn, zrange=zrange, font_scale=scale),
        "entropy_curves": viz.entropy_curves(res, decoders=drawn, font_scale=scale),
        "target_curves": viz.target_curves(res, decoders=drawn, font_scale=scale),
    }
    if spade_grid is not None:  # the whole prompt by SPADE (and a saved tuned lens) beside the logit lens
        figs |= {f"heatmap_positions_{name}": viz.layer_position_heatmap(
            res, metric, window=window, decoder=name, zrange=zrange, compact=True, font_scale=scale)
            for name in grid_names if name != "logit_lens"}
        figs["agreement"] = viz.agreement_heatmap(res, "spade", "logit_lens", window=window, font_scale=scale)
    for name in [name for name in figs if name.startswith("heatmap_") or name == "agreement"]:
        viz.clickable_cells(figs[name])  # a click on a cell opens it below
    return figs


figs = dict(analyses.figures(sources, (metric, window, tuple(drawn), scale), build_figures))  # + this view's own



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
if spade_grid is None:
    st.plotly_chart(figs["heatmap_positions"], **clickable("fig_positions"), **PLOT)
    chrome.explain(
        "**SPADE at every position.** Decode each token of the prompt as if it were the answer: keep `<s>` and "
        "that token at each layer and let the remaining layers finish. Position 0 is `<s>` itself: with nothing to "
        "drop, SPADE there is the model's own output at every layer."
    )
    if st.button("Decode SPADE at every position", key="spade_grid_run", icon=":material/grid_on:",
                 help=f"Continues {res.num_layers * (n - 1)} rows through the upper layers and decodes each: a few "
                      "times the analysis's own time, more for a long prompt; kept afterwards for this prompt."):
        bar = st.progress(0.0, text="SPADE at every position…")
        try:
            analyses.spade_grid(lm, request, page.spade_positions, page.max_tokens,
                                progress=jobs.bar_progress(bar, "Decoding"))
        except sv.SpadeVizError as err:
            chrome.show_error(err)
        else:
            page.spade_grid = True
            st.rerun()  # redraw with the grid beside the logit lens
        bar.empty()
else:
    chrome.explain(
        "**SPADE at every position, beside the logit lens** (one colour scale). In SPADE's grid each column is "
        "decoded as if that token were the answer: keep `<s>` and it, let the remaining layers finish. Position 0 "
        "is `<s>` itself: with nothing to drop, SPADE there is the model's own output at every layer."
    )
    for column, name in zip(st.columns(len(grid_names), gap="small"), grid_names):
        key = "heatmap_positions" if name == "logit_lens" else f"heatmap_positions_{name}"
        chart_key = "fig_positions" if name == "logit_lens" else f"fig_positions_{name}"
        column.plotly_chart(figs[key], **clickable(chart_key), **PLOT)
    chrome.explain(
        "**Where the two disagree.** Green: both already give the model's final answer at that position; orange: "
        "only SPADE does; blue: only the logit lens. Triangles and circles mark the layer from which each settles "
        "on the final answer; the number on top is how many layers earlier SPADE settles."
    )
    st.plotly_chart(figs["agreement"], **clickable("fig_agreement"), **PLOT)
    st.button("Hide SPADE at every position", key="spade_grid_hide", icon=":material/grid_off:",
              on_click=setattr, args=(page, "spade_grid", False))

h2, curves = st.columns([1, 1.9], gap="medium")
with h2:
    chrome.explain(
        "**The answer position, decoded several ways.** SPADE often finds the final answer many layers before "
        "the logit lens. Red outline: from this layer up, the decoder's top-1 is the final answer."
    )
    st.plotly_chart(figs["heatmap_answer"], **clickable("fig_answer", "answer"), **PLOT)
with curves:
    chrome.explain(
        "**Curves at the answer position.** Entropy measures how undecided a prediction is (0 = certain). Below, "
        "the probability and the rank of the target token (rank 1 = the top prediction). A star and a dotted "
        "line mark the first layer from which each decoder's top-1 is the final answer and stays so."
    )
    st.plotly_chart(figs["entropy_curves"], key="fig_entropy", **PLOT)
    st.plotly_chart(figs["target_curves"], key="fig_target", **PLOT)

# ------------------------------------------------------------------ a clicked cell and pinned tokens
position = res.answer_position
if page.cell is not None and not (0 <= page.cell[0] <= res.num_layers and 0 <= page.cell[1] < n):
    page.cell = None  # a link's cell outside this prompt
st.subheader("A cell up close, and pinned tokens")
chrome.explain(
    "**The clicked cell.** The ten tokens each decoder puts first at that layer and position, with their "
    "probabilities: the hover's top 5, twice as deep, and for every decoder at once. **Pinned tokens** follow "
    "chosen tokens through every layer at that position (at the answer when no cell is open): where a line rises "
    "is where the model starts to consider that token; compare the logit lens's line with SPADE's."
)
if page.cell is None:
    st.caption("Click a cell of a heatmap above to open it here.")
else:
    layer, position = page.cell
try:
    reading = explorations.reading(lm, res, position, page.pins)
except sv.SpadeVizError as err:
    chrome.show_error(f"Pinned tokens not used: {err}")
    page.pins = []
    reading = explorations.reading(lm, res, position, [])
if page.cell is not None:
    cell_names = decoders.ordered(reading.decoders)
    labels = {d: viz.distinct_labels(reading.top_ids[d][layer], reading.token) for d in cell_names}
    where = "the input embeddings read by the lens" if layer == 0 else f"layer {layer}"
    st.markdown(f"**Position {position} (`{viz.visible_token(res.tokens[position], max_len=30)}`), {where}:** "
                "the top 10 of each decoder.")
    st.table({decoders.label(d): [f"{t}  {p:.2%}" for t, (_, _, p) in zip(labels[d], reading.top(d, layer))]
              for d in cell_names})
    panel_tokens = list(dict.fromkeys(f"#{i}" for d in cell_names for i in reading.top_ids[d][layer]))
    p1, p2, p3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    if page.cell_token not in panel_tokens:
        page.cell_token = panel_tokens[0]
    p1.selectbox("A token of this cell", panel_tokens, **bind(page, "cell_token", "cell_token"),
                 format_func=lambda t: viz.distinct_labels([int(t[1:])], reading.token)[0] + f"  ({t})")
    p2.button("Pin it", key="pin_cell", icon=":material/push_pin:", disabled=len(page.pins) >= links.MAX_PINS,
              on_click=lambda: page.pin(st.session_state.get("cell_token", page.cell_token)))
    p3.button("Close the cell", key="cell_close", on_click=setattr, args=(page, "cell", None))
q1, q2, q3 = st.columns([2, 1, 1.4], vertical_alignment="bottom")
q1.text_input("Pin a token", placeholder="' Paris' (with its leading space) or #1234",
              help=f"Up to {links.MAX_PINS} tokens; only a text's first token counts.",
              **bind(page, "pin_text", "pin_box"))


def pin_typed() -> None:
    """Pin the box's text (read from the box itself, whichever of its and the button's callbacks runs first)."""
    if not (problem := page.pin(st.session_state.get("pin_box", page.pin_text))):
        page.pin_text = st.session_state["pin_box"] = ""
    st.session_state["_sv_pin_problem"] = problem


q2.button("Pin", key="pin_add", on_click=pin_typed, icon=":material/push_pin:")
q3.toggle("Ranks instead of probabilities", **bind(page, "pin_rank", "pin_rank"))
if problem := st.session_state.pop("_sv_pin_problem", ""):
    st.warning(problem)
if page.pins:
    st.multiselect("Pinned (remove one to unpin it)", page.pins, **bind(page, "pins", "pins_box"),
                   format_func=lambda t: f"{viz.visible_token(reading.token(reading.pins[t]))} (#{reading.pins[t]})")
    figs["pins"] = viz.pin_curves(reading, "rank" if page.pin_rank else "prob", font_scale=scale)
    st.plotly_chart(figs["pins"], key="fig_pins", **PLOT)

# ------------------------------------------------------------------ two runs side by side
st.subheader("Compare two prompts, or two models")
chrome.explain(
    "**Side by side.** The answer position of this prompt (A) and of a second run (B): another prompt, such as a "
    "counterfactual, or this prompt on another model. Both heatmaps share one colour scale; below them, B minus A "
    "per layer (entropy and target probability), and each decoder's final answer and the first layer that keeps it."
)
st.radio("Compare with", ["off", "prompt", "model"], horizontal=True,
         format_func={"off": "nothing", "prompt": "a second prompt", "model": "another model"}.get,
         **bind(page, "compare", "compare"))
serve = models.serve_settings()
if page.compare == "prompt":
    st.text_area("Second prompt (B)", placeholder="e.g. the same fact with another subject",
                 **bind(page, "compare_prompt", "compare_prompt"))
elif page.compare == "model":
    if serve.enabled:
        choices = list(serve.choices(sv.DEFAULT_MODEL))
        page.compare_model = page.compare_model if page.compare_model in choices else choices[0]
        st.selectbox("Second model (B)", choices, **bind(page, "compare_model", "compare_model"))
    else:
        st.text_input("Second model (B)", placeholder=f"a Hugging Face id or folder, or {sv.DEFAULT_MODEL}",
                      **bind(page, "compare_model", "compare_model"))
if (compared := page.compared) is not None:
    kind, other = compared
    try:
        with st.spinner("Analysing the second run…"):
            lm_b = explorations.second_model(other, lm) if kind == "model" else lm
            res_b = analyses.analysis(lm_b, request if kind == "model" else other,
                                      spade_positions=page.spade_positions, max_tokens=page.max_tokens)
    except sv.SpadeVizError as err:
        chrome.show_error(f"Comparison not shown: {err}")
    else:
        names = ("A: this prompt", f"B: {other}" if kind == "model" else "B: the second prompt")
        comparison = sv.compare_analyses(res, res_b, names=("A", "B"))
        figs["compare_a"], figs["compare_b"] = viz.comparison_heatmaps(res, res_b, metric, names=names,
                                                                         decoders=drawn, font_scale=scale)
        figs["difference"] = viz.difference_curves(comparison, font_scale=scale)
        ca, cb = st.columns(2, gap="small")
        ca.plotly_chart(figs["compare_a"], key="fig_compare_a", **PLOT)
        cb.plotly_chart(figs["compare_b"], key="fig_compare_b", **PLOT)
        st.plotly_chart(figs["difference"], key="fig_difference", **PLOT)
        rows = comparison.summary.to_dict("records")
        st.table({"decoder": [decoders.label(r["decoder"]) for r in rows],
                  **{f"{what} · {run}": [viz.visible_token(r[f"final_answer_{run.lower()}"]) if what == "final answer"
                                         else ("never" if r[f"first_layer_{run.lower()}"] is None
                                               else r[f"first_layer_{run.lower()}"]) for r in rows]
                     for what in ("final answer", "first layer") for run in ("A", "B")}})

# ------------------------------------------------------------------ a greedy generation, step by step
st.subheader("Follow a generation")
most_generate = serve.max_generate_tokens
chrome.explain(
    "**The lens at every step of an answer.** The model writes up to N tokens greedily (always its top token: "
    "exactly its own generation). Each column is one generated token, decoded at every layer at the position that "
    "emitted it; a cell's colour is the probability of the token the model then emitted, a dot marks the first "
    "layer from which the decoder already gave it and kept it."
)
g1, g2, g3 = st.columns([1, 1, 1], vertical_alignment="bottom")
page.generate_length = max(1, min(int(page.generate_length), most_generate))
g1.number_input("Tokens to generate", 1, most_generate, **bind(page, "generate_length", "generate_length"))
g2.number_input("Exit threshold (nats)", 0.0, 20.0, step=0.1, help="The hybrid exit's threshold on SPADE's "
                "entropy, for the line under the heatmaps.", **bind(page, "exit_threshold", "exit_threshold"))
g3.button("Generate", key="generate_run", icon=":material/play_arrow:",
          on_click=lambda: setattr(page, "generate", int(page.generate_length)))
if page.generate:
    try:
        with st.spinner(f"Generating {page.generate} tokens and decoding every layer of each…"):
            gen = explorations.generation(lm, request, min(page.generate, most_generate), page.spade_positions,
                                          page.max_tokens)
    except sv.SpadeVizError as err:
        chrome.show_error(f"Generation not shown: {err}")
    else:
        st.markdown(f"**Generated ({len(gen.token_ids)} tokens):** `{viz.visible_token(gen.text, max_len=400)}`")
        gen_cols = st.columns(2, gap="small")
        for column, name in zip(gen_cols, ("logit_lens", "spade")):
            figs[f"generation_{name}"] = viz.generation_heatmap(gen, name, font_scale=scale)
            column.plotly_chart(figs[f"generation_{name}"], key=f"fig_generation_{name}", **PLOT)
        spent = gen.exit_blocks(page.exit_threshold)
        st.markdown(
            f"At threshold {spent['threshold']:g} nats, the hybrid exit would have run "
            f"**{spent['hybrid_blocks']:,.0f}** "
            f"block-token units for the whole answer against **{spent['full_blocks']:,.0f}** for the full model "
            f"({spent['hybrid_blocks'] / spent['full_blocks']:.0%}), and {spent['changed']} of its "
            f"{len(gen.token_ids)} tokens would differ from the model's. (Each step counted as a prompt of the tokens "
            "before it, as on Early exit.)")
        st.table({"token": [viz.visible_token(t) for t in gen.tokens],
                  **{f"first layer · {decoders.label(d)}": [("never" if f is None else f) for f in gen.first_layer(d)]
                     for d in gen.grids}})

# ------------------------------------------------------------------ downloads (built only on click)
meta = exports.export_meta({"model": res.model_name, "prompt": request, "spade_positions": page.spade_positions,
                            "max_tokens": page.max_tokens, "target": res.token(res.target_id), "metric": metric,
                            "positions_shown": f"{window[0]}-{window[1] - 1}",
                            "spade_every_position": spade_grid is not None})
stem = exports.file_stem(res.model_name, request[-24:], page.spade_positions, metric)  # the prompt's end: its question
FIGURE_NAMES = {"heatmap_positions": "Positions heatmap", "heatmap_answer": "Answer heatmap",
                "entropy_curves": "Entropy curves", "target_curves": "Target curves",
                "heatmap_positions_spade": "SPADE positions heatmap",
                "heatmap_positions_tuned_lens": "Tuned-lens positions heatmap", "agreement": "Disagreement map",
                "pins": "Pinned tokens", "compare_a": "Comparison A", "compare_b": "Comparison B",
                "difference": "Difference B - A", "generation_logit_lens": "Generation, logit lens",
                "generation_spade": "Generation, SPADE"}
with st.expander("Download the analysis and the figures", icon=":material/download:"):
    d = st.columns(3)
    d[0].download_button("Analysis · CSV", file_name=f"{stem}.csv", mime="text/csv", key="dl_csv", on_click="ignore",
                         data=lambda: res.to_frame().to_csv(index=False), width="stretch",
                         help="A plain CSV (pd.read_csv reads it as it is); its facts: the .meta.json below")
    d[0].download_button("Analysis · JSON", file_name=f"{stem}.json",
                         data=lambda: json.dumps(exports.json_with_meta(res.to_dict(), meta), indent=1,
                                                 ensure_ascii=False),
                         mime="application/json", key="dl_json", on_click="ignore", width="stretch")
    d[0].download_button("CSV facts · .meta.json", file_name=exports.meta_file_name(f"{stem}.csv"),
                         data=lambda: exports.csv_meta(meta, f"{stem}.csv"), mime="application/json",
                         key="dl_csv_meta", on_click="ignore", width="stretch",
                         help="The model, prompt and settings of the CSV, to keep beside it")
    view = {"model": lm.name, "prompt": request, "spade_positions": page.spade_positions,
            "max_tokens": page.max_tokens, "target": None if target is None else res.token(res.target_id),
            "metric": metric, "pins": page.pins, "position": None if page.cell is None else page.cell[1],
            "generate": page.generate, "threshold": page.exit_threshold,
            "compare_prompt": page.compare_prompt if (page.compared or ("",))[0] == "prompt" else None,
            "compare_model": page.compare_model if (page.compared or ("",))[0] == "model" else None}
    d[0].download_button("This view · Python script", file_name=f"{stem}.py", mime="text/x-python", key="dl_script",
                         data=lambda: sv.view_script(view), on_click="ignore", width="stretch",
                         help="Reproduces this view through the public API: same model, prompt, options and figures")
    d[0].download_button("This view · notebook", file_name=f"{stem}.ipynb", mime="application/x-ipynb+json",
                         key="dl_notebook", data=lambda: sv.view_notebook(view), on_click="ignore", width="stretch")
    for i, (name, fig) in enumerate(figs.items()):
        d[1 + i % 2].download_button(
            f"{FIGURE_NAMES[name]} · HTML", data=lambda fig=fig, name=name: exports.html_with_meta(
                fig.to_html(include_plotlyjs=True, full_html=True), meta, f"{FIGURE_NAMES[name]} · {res.model_name}"),
            file_name=f"{stem}-{name}.html", mime="text/html", key=f"dl_{name}", on_click="ignore", width="stretch",
        )
