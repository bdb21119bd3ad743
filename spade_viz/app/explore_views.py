"""The Explore page's further views: a clicked cell and pinned tokens, a second run side by side, a
greedy generation step by step, and the downloads. Each draws from the page's state (`ExplorePage`)
and adds the figures it draws to `figs` (the downloads offer them all)."""

from __future__ import annotations

import json
import re

import streamlit as st

import spade_viz as sv

from .. import decoders, viz
from ..viz import exports
from . import analyses, chrome, explorations, links, models
from .state import ExplorePage
from .widgets import bind


def _literal(cell):
    """A table cell shown as it is: st.table reads Markdown, so a token such as "-" or "*" would become a list
    or emphasis; every ASCII punctuation mark is escaped."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", cell) if isinstance(cell, str) else cell


def literal_table(columns: dict) -> None:
    """`st.table` of `columns` ({header: cells}) with every header and cell shown literally."""
    st.table({_literal(head): [_literal(cell) for cell in cells] for head, cells in columns.items()})


def cell_and_pins(page: ExplorePage, lm, res, figs: dict, scale: float) -> None:
    """The clicked cell's top-10 for every decoder, and the pinned tokens across the layers."""
    n = len(res.tokens)
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
    reading = None  # read only when shown (a cell open or a token pinned): most visits need neither
    if page.cell is not None or page.pins:
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
        literal_table({decoders.label(d): [f"{t}  {p:.2%}" for t, (_, _, p) in zip(labels[d], reading.top(d, layer))]
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
                       format_func=lambda t: f"{viz.visible_token(reading.token(reading.pins[t]))} "
                                             f"(#{reading.pins[t]})")
        figs["pins"] = viz.pin_curves(reading, "rank" if page.pin_rank else "prob", font_scale=scale)
        st.plotly_chart(figs["pins"], key="fig_pins", **chrome.PLOT)


def comparison(page: ExplorePage, lm, res, drawn, figs: dict, scale: float) -> None:
    """This prompt (A) beside a second prompt or model (B) at the answer, and B minus A per layer."""
    request, metric = page.request, page.metric
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
            ca.plotly_chart(figs["compare_a"], key="fig_compare_a", **chrome.PLOT)
            cb.plotly_chart(figs["compare_b"], key="fig_compare_b", **chrome.PLOT)
            st.plotly_chart(figs["difference"], key="fig_difference", **chrome.PLOT)
            rows = comparison.summary.to_dict("records")
            literal_table({"decoder": [decoders.label(r["decoder"]) for r in rows],
                           **{f"{what} · {run}": [viz.visible_token(r[f"final_answer_{run.lower()}"])
                                                  if what == "final answer"
                                                  else ("never" if r[f"first_layer_{run.lower()}"] is None
                                                        else r[f"first_layer_{run.lower()}"]) for r in rows]
                              for what in ("final answer", "first layer") for run in ("A", "B")}})


def generation(page: ExplorePage, lm, figs: dict, scale: float) -> None:
    """A greedy generation decoded at every layer of each step, and what the hybrid exit would run."""
    request, serve = page.request, models.serve_settings()
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
                column.plotly_chart(figs[f"generation_{name}"], key=f"fig_generation_{name}", **chrome.PLOT)
            spent = gen.exit_blocks(page.exit_threshold)
            st.markdown(
                f"At threshold {spent['threshold']:g} nats, the hybrid exit would have run "
                f"**{spent['hybrid_blocks']:,.0f}** "
                f"block-token units for the whole answer against **{spent['full_blocks']:,.0f}** for the full model "
                f"({spent['hybrid_blocks'] / spent['full_blocks']:.0%}), and {spent['changed']} of its "
                f"{len(gen.token_ids)} tokens would differ from the model's. (Each step counted as a prompt of the "
                "tokens before it, as on Early exit.)")
            literal_table({"token": [viz.visible_token(t) for t in gen.tokens],
                           **{f"first layer · {decoders.label(d)}": [("never" if f is None else f)
                                                                      for f in gen.first_layer(d)]
                              for d in gen.grids}})


def downloads(page: ExplorePage, lm, res, target, window: tuple[int, int], has_spade_grid: bool, figs: dict) -> None:
    """The analysis (CSV with its facts, JSON), the view as a script or notebook, every figure drawn."""
    request, metric = page.request, page.metric
    meta = exports.export_meta({"model": res.model_name, "prompt": request, "spade_positions": page.spade_positions,
                                "max_tokens": page.max_tokens, "target": res.token(res.target_id), "metric": metric,
                                "positions_shown": f"{window[0]}-{window[1] - 1}",
                                "spade_every_position": has_spade_grid})
    stem = exports.file_stem(res.model_name, request[-24:], page.spade_positions, metric)  # the prompt's end
    FIGURE_NAMES = {"heatmap_positions": "Positions heatmap", "heatmap_answer": "Answer heatmap",
                    "entropy_curves": "Entropy curves", "target_curves": "Target curves",
                    "heatmap_positions_spade": "SPADE positions heatmap",
                    "heatmap_positions_tuned_lens": "Tuned-lens positions heatmap", "agreement": "Disagreement map",
                    "pins": "Pinned tokens", "compare_a": "Comparison A", "compare_b": "Comparison B",
                    "difference": "Difference B - A", "generation_logit_lens": "Generation, logit lens",
                    "generation_spade": "Generation, SPADE"}
    with st.expander("Download the analysis and the figures", icon=":material/download:"):
        d = st.columns(3)
        d[0].download_button("Analysis · CSV", file_name=f"{stem}.csv", mime="text/csv", key="dl_csv",
                             on_click="ignore",
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
                             help="Reproduces this view through the public API: same model, prompt, options and "
                                  "figures")
        d[0].download_button("This view · notebook", file_name=f"{stem}.ipynb", mime="application/x-ipynb+json",
                             key="dl_notebook", data=lambda: sv.view_notebook(view), on_click="ignore", width="stretch")
        for i, (name, fig) in enumerate(figs.items()):
            d[1 + i % 2].download_button(
                f"{FIGURE_NAMES[name]} · HTML", data=lambda fig=fig, name=name: exports.html_with_meta(
                    fig.to_html(include_plotlyjs=True, full_html=True), meta,
                    f"{FIGURE_NAMES[name]} · {res.model_name}"),
                file_name=f"{stem}-{name}.html", mime="text/html", key=f"dl_{name}", on_click="ignore", width="stretch",
            )
