"""Explore one prompt: what every layer would answer, decoded by the logit lens and by SPADE."""

from __future__ import annotations

import json

import streamlit as st

import spade_viz as sv
from spade_viz import decoders, links, ui, viz
from spade_viz.viz import exports

st.set_page_config(page_title="Explore · spade-viz", page_icon=":material/search:", layout="wide")
PRESETS = ui.presets()
BY_NAME = {p.name: p for p in PRESETS}
WINDOW = 14  # prompt positions shown at once in heatmap 1: readable cells on a laptop screen

state = st.session_state
# widget defaults here, not in the widgets: a shared link may set them
state.setdefault("max_tokens", min(ui.DEFAULT_MAX_TOKENS, ui.serve_settings().max_prompt_tokens))
state.setdefault("show_no_bos", False)  # the ablation costs a second SPADE pass: on request
if "prompt" not in state:  # first visit: the first preset, analysed straight away
    state["prompt"] = PRESETS[0].text
    state["_sv_request"] = PRESETS[0].text


def use_preset() -> None:
    state["prompt"] = BY_NAME[state["preset"]].text
    state["_sv_request"] = state["prompt"]


def run_prompt() -> None:
    state["_sv_request"] = state["prompt"]


st.title("Explore a prompt, layer by layer")
ui.explain(
    "A language model builds its answer gradually, one layer after another. Here you can see what it "
    "would answer if we stopped at each layer and decoded right there: with the **logit lens** (read the "
    "layer's state directly) and with **SPADE** (keep only the start token `<s>` and the answer token, and "
    "let the remaining layers finish)."
)
LINK = links.explore_params([p.name for p in PRESETS], list(viz.METRICS), ui.DEFAULT_MAX_TOKENS)
if (link := ui.opened_link("explore", LINK)) is not None:  # a shared link: its prompt and view
    for name in link.given & {"preset", "spade_positions", "max_tokens", "show_no_bos", "metric"}:
        state[name] = link.state[name]
    if "max_tokens" in link.given:  # within this server's limit (a widget resets a value past its maximum)
        state["max_tokens"] = min(state["max_tokens"], ui.serve_settings().max_prompt_tokens)
    shared = link.state["prompt"] or ("preset" in link.given and BY_NAME[link.state["preset"]].text)
    if shared:
        state["prompt"] = state["_sv_request"] = shared
    state["_sv_link_view"] = {name: link.state[name] for name in link.given & {"target", "window_start"}}
lm = ui.sidebar_model()  # after the title and explanation: they paint while the model loads


def share(view: dict | None = None) -> None:
    """The page's state into the URL and the "Copy link" box (called before every stop)."""
    if view is None and (pending := state.get("_sv_link_view")):  # not applied yet: keep it in the link
        view = {"target": "other" if pending.get("target") else "final", "target_text": pending.get("target", ""),
                "window_start": pending.get("window_start")}
    preset = state.get("preset", PRESETS[0].name)
    widgets = {name: state.get(name) for name in ("spade_positions", "max_tokens", "show_no_bos", "metric")}
    shared = links.explore_link_state({"model": ui.link_model(lm), "preset": preset, "prompt": state.get("_sv_request")
                                       or state.get("prompt", ""), **widgets, **(view or {})},
                                      {p.name: p.text for p in PRESETS})
    ui.share_link("explore", links.encode(shared, LINK), where=link_box)


left, right = st.columns([1, 2.2], gap="medium")
with left:
    st.selectbox("Preset", list(BY_NAME), key="preset", on_change=use_preset, persist_state="session",
                 help="Picking a preset fills the prompt box and analyses it; you can then edit the text.")
    picked = BY_NAME[state.get("preset", PRESETS[0].name)]
    if picked.note and state.get("prompt") == picked.text:  # not once the user has edited the text
        st.caption(picked.note)
    st.button("Analyze", key="run", type="primary", on_click=run_prompt, icon=":material/play_arrow:",
              disabled=lm is None)
    link_box = st.popover("Copy link", icon=":material/link:", help="A link to this page as you see it now.")
with right:
    lines = str(state.get("prompt", "")).count("\n") + 1
    st.text_area("Prompt (the model predicts the token that comes next)", key="prompt",
                 height=min(280, max(110, 22 * lines + 42)), persist_state="session")

with st.expander("SPADE and input options"):
    opt1, opt2 = st.columns(2)
    opt1.radio(
        "SPADE position ids", ["original", "renumbered"], key="spade_positions", horizontal=True,
        persist_state="session",
        help="original: the answer token keeps its position in the prompt (0 and T); renumbered: the two "
             "kept tokens become positions 0 and 1.",
    )
    opt2.number_input("Token limit", min_value=2, max_value=ui.serve_settings().max_prompt_tokens, step=64,
                      key="max_tokens", persist_state="session",
                      help="Longer prompts are refused (the model's own context length also applies).")

request = state.get("_sv_request")
if lm is None:
    st.info("Load a model in the sidebar to analyse the prompt.")
    share()
    st.stop()
if request is None:
    st.info("Pick a preset or type a prompt, then press **Analyze**.")
    share()
    st.stop()
if request != state["prompt"]:
    st.caption("✏️ The prompt box has changed since the last analysis: press **Analyze** to update the views.")

spade_positions = state.get("spade_positions", "original")
max_tokens = int(state.get("max_tokens", ui.DEFAULT_MAX_TOKENS))
try:
    with st.spinner("Running the model and decoding every layer…"):
        base = ui.analysis(lm, request, spade_positions=spade_positions, max_tokens=max_tokens,
                           without_bos=bool(state.get("show_no_bos")))
except sv.SpadeVizError as err:
    ui.show_error(err)
    share()
    st.stop()
for problem in ui.lens_problems(lm):
    st.warning(f"A saved lens was not used: {problem}")

# ------------------------------------------------------------------ view controls (no recompute)
final = base.answer["logit_lens"]
candidates = [int(i) for i in final.top_ids[-1, 0]]
cand_probs = {int(i): float(p) for i, p in zip(final.top_ids[-1, 0], final.top_probs[-1, 0])}
target_options = ["final", *[f"#{i}" for i in candidates[1:]], "other"]
analysis_id = (ui.model_key(lm), request, spade_positions, max_tokens)
if state.get("target") not in target_options or state.get("_sv_target_for") != analysis_id:
    state["target"] = "final"  # a new analysis starts on the model's own answer
    state["_sv_target_for"] = analysis_id
if (view := state.pop("_sv_link_view", None)) is not None:  # a shared link's target and window
    if "target" in view:
        state["target"], state["target_text"] = links.explore_target(view["target"], target_options)
    if "window_start" in view:
        state["window_start"], state["_sv_window_for"] = view["window_start"], request


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
metric = c1.selectbox("Colour cells by", list(viz.METRICS), key="metric", persist_state="session",
                      format_func=lambda m: viz.METRICS[m].label,
                      help=" ".join(f"{m.label}: {m.help}" for m in viz.METRICS.values()))
choice = c2.selectbox("Target token", target_options, key="target", format_func=target_label,
                      help="The token whose probability and rank are followed through the layers.")
target = None
if choice == "other":
    typed = c2.text_input("Target token text", key="target_text",
                          placeholder="' Yes' (with its leading space) or #1234")
    target = typed or None
elif choice != "final":
    target = int(choice[1:])
show_no_bos = c3.checkbox("Show SPADE without <s>", key="show_no_bos", persist_state="session",
                          help="The ablation: SPADE keeps only the answer token, without the start token.")

res = base
if target is not None:
    try:
        res = ui.analysis(lm, request, spade_positions=spade_positions, max_tokens=max_tokens, target=target,
                          without_bos=bool(state.get("show_no_bos")))
    except sv.SpadeVizError as err:
        ui.show_error(f"Target not used: {err}")
    else:
        if choice == "other":
            c2.caption(f"Following token `{viz.visible_token(res.token(res.target_id))}` (id {res.target_id}), "
                       "the first token of your text.")

spade_grid = ui.spade_grid(lm, request, spade_positions, max_tokens, compute=False)  # pressed before?
if spade_grid is not None:
    res = sv.with_grid(lm, res, "spade", spade_grid)

n = len(res.tokens)
window = (0, n)
if n > WINDOW:
    last_start = n - WINDOW
    if state.get("_sv_window_for") != request or state.get("window_start", 0) > last_start:
        state["window_start"] = last_start  # a new prompt: show the positions that end at the answer
        state["_sv_window_for"] = request
    start = c4.slider("First position shown", 0, last_start, key="window_start",
                      help=f"The grid shows {WINDOW} positions at a time; slide to move along the prompt.")
    window = (start, start + WINDOW)
share({"target": choice, "target_text": state.get("target_text", ""),
       "window_start": window[0] if n > WINDOW and window[0] != n - WINDOW else None})

drawn = decoders.ordered(d for d in res.decoders if show_no_bos or d != "spade_no_bos")
zrange = viz.metric_range(res, metric)
first = {d: res.first_stable_layer(d) for d in drawn}


def settled(d: str) -> str:
    return f"layer {first[d]}" if first[d] is not None else "never"


st.markdown(
    f"**{n} tokens · {res.num_layers} layers.** "
    f"Final answer: **`{viz.visible_token(res.token(res.final_answer_id))}`**"
    f" · target: **`{viz.visible_token(res.token(res.target_id))}`** · top-1 equals the final answer from "
    + ", ".join(f"{decoders.label(d)}: **{settled(d)}**" for d in drawn)
)

scale = ui.font_scale()
figs = {
    "heatmap_positions": viz.layer_position_heatmap(res, metric, window=window, zrange=zrange,
                                                    compact=spade_grid is not None, font_scale=scale),
    "heatmap_answer": viz.answer_heatmap(res, metric, decoders=drawn, zrange=zrange, font_scale=scale),
    "entropy_curves": viz.entropy_curves(res, decoders=drawn, font_scale=scale),
    "target_curves": viz.target_curves(res, decoders=drawn, font_scale=scale),
}
if spade_grid is not None:  # the whole prompt by SPADE (and a saved tuned lens) beside the logit lens
    grid_names = decoders.ordered(res.grids)
    figs |= {f"heatmap_positions_{name}": viz.layer_position_heatmap(res, metric, window=window, decoder=name,
                                                                     zrange=zrange, compact=True, font_scale=scale)
             for name in grid_names if name != "logit_lens"}
    figs["agreement"] = viz.agreement_heatmap(res, "spade", "logit_lens", window=window, font_scale=scale)

ui.explain(
    "**Logit lens at every position.** Each row is a layer (0 = the input embeddings, top = the model's "
    "output); each column is a token of your prompt. A cell shows the token the model would predict next at that "
    "position if it stopped at that layer; hover for the top 5. The answer position is outlined in red."
)
if spade_grid is None:
    st.plotly_chart(figs["heatmap_positions"], key="fig_positions", theme=None, config={"displaylogo": False})
    ui.explain(
        "**SPADE at every position.** Decode each token of the prompt as if it were the answer: keep `<s>` and "
        "that token at each layer and let the remaining layers finish. Position 0 is `<s>` itself: with nothing to "
        "drop, SPADE there is the model's own output at every layer."
    )
    if st.button("Decode SPADE at every position", key="spade_grid_run", icon=":material/grid_on:",
                 help=f"Continues {res.num_layers * (n - 1)} rows through the upper layers and decodes each: a few "
                      "times the analysis's own time, more for a long prompt; kept afterwards for this prompt."):
        bar = st.progress(0.0, text="SPADE at every position…")
        try:
            ui.spade_grid(lm, request, spade_positions, max_tokens, progress=ui.bar_progress(bar, "Decoding"))
        except sv.SpadeVizError as err:
            ui.show_error(err)
        else:
            st.rerun()  # redraw with the grid beside the logit lens
        bar.empty()
else:
    ui.explain(
        "**SPADE at every position, beside the logit lens** (one colour scale). In SPADE's grid each column is "
        "decoded as if that token were the answer: keep `<s>` and it, let the remaining layers finish. Position 0 "
        "is `<s>` itself: with nothing to drop, SPADE there is the model's own output at every layer."
    )
    for column, name in zip(st.columns(len(grid_names), gap="small"), grid_names):
        key = "heatmap_positions" if name == "logit_lens" else f"heatmap_positions_{name}"
        column.plotly_chart(figs[key], key="fig_positions" if name == "logit_lens" else f"fig_positions_{name}",
                            theme=None, config={"displaylogo": False})
    ui.explain(
        "**Where the two disagree.** Green: both already give the model's final answer at that position; orange: "
        "only SPADE does; blue: only the logit lens. Triangles and circles mark the layer from which each settles "
        "on the final answer; the number on top is how many layers earlier SPADE settles."
    )
    st.plotly_chart(figs["agreement"], key="fig_agreement", theme=None, config={"displaylogo": False})

h2, curves = st.columns([1, 1.9], gap="medium")
with h2:
    ui.explain(
        "**The answer position, decoded several ways.** SPADE often finds the final answer many layers before "
        "the logit lens. Red outline: from this layer up, the decoder's top-1 is the final answer."
    )
    st.plotly_chart(figs["heatmap_answer"], key="fig_answer", theme=None, config={"displaylogo": False})
with curves:
    ui.explain(
        "**Curves at the answer position.** Entropy measures how undecided a prediction is (0 = certain). Below, "
        "the probability and the rank of the target token (rank 1 = the top prediction). A star and a dotted "
        "line mark the first layer from which each decoder's top-1 is the final answer and stays so."
    )
    st.plotly_chart(figs["entropy_curves"], key="fig_entropy", theme=None, config={"displaylogo": False})
    st.plotly_chart(figs["target_curves"], key="fig_target", theme=None, config={"displaylogo": False})

# ------------------------------------------------------------------ downloads (built only on click)
meta = exports.export_meta({"model": res.model_name, "prompt": request, "spade_positions": spade_positions,
                            "max_tokens": max_tokens, "target": res.token(res.target_id), "metric": metric,
                            "positions_shown": f"{window[0]}-{window[1] - 1}",
                            "spade_every_position": spade_grid is not None})
stem = exports.file_stem(res.model_name, request[-24:], spade_positions, metric)  # the prompt's end: its question
FIGURE_NAMES = {"heatmap_positions": "Positions heatmap", "heatmap_answer": "Answer heatmap",
                "entropy_curves": "Entropy curves", "target_curves": "Target curves",
                "heatmap_positions_spade": "SPADE positions heatmap",
                "heatmap_positions_tuned_lens": "Tuned-lens positions heatmap", "agreement": "Disagreement map"}
with st.expander("Download the analysis and the figures", icon=":material/download:"):
    d = st.columns(3)
    d[0].download_button("Analysis · CSV", file_name=f"{stem}.csv", mime="text/csv", key="dl_csv", on_click="ignore",
                         data=lambda: exports.csv_with_header(res.to_frame().to_csv(index=False), meta),
                         width="stretch")
    d[0].download_button("Analysis · JSON", file_name=f"{stem}.json",
                         data=lambda: json.dumps(exports.json_with_meta(res.to_dict(), meta), indent=1,
                                                 ensure_ascii=False),
                         mime="application/json", key="dl_json", on_click="ignore", width="stretch")
    for i, (name, fig) in enumerate(figs.items()):
        d[1 + i % 2].download_button(
            f"{FIGURE_NAMES[name]} · HTML", data=lambda fig=fig, name=name: exports.html_with_meta(
                fig.to_html(include_plotlyjs=True, full_html=True), meta, f"{FIGURE_NAMES[name]} · {res.model_name}"),
            file_name=f"{stem}-{name}.html", mime="text/html", key=f"dl_{name}", on_click="ignore", width="stretch",
        )
