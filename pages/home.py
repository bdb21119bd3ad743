"""Home: what spade-viz shows, a one-minute tour, and the pages."""

from __future__ import annotations

import streamlit as st

from spade_viz.app import models, sharing
from spade_viz.app.pages import EARLY_EXIT, EXPLORE, PAGES

state = st.session_state

TOUR = [  # (title, text, the page that shows it): a first visit's one-minute tour
    ("What the logit lens shows",
     "Every layer of the model holds a half-finished guess for the next token. The **logit lens** reads that "
     "guess straight away, as if the layer were the last one. On **Explore**, the first heatmap shows it: one "
     "row per layer (0 = the input, top = the model's answer), one column per token of your prompt.",
     EXPLORE),
    ("What SPADE adds",
     "A half-finished state read as if it were finished looks confused, so the logit lens finds the answer late. "
     "**SPADE** keeps only the start token `<s>` and the answer token at that layer and lets the remaining "
     "layers finish: it often finds the final answer many layers earlier. On Explore, the answer heatmap puts "
     "them side by side; *Decode SPADE at every position* does it for the whole prompt.",
     EXPLORE),
    ("What the threshold trades",
     "If a layer already knows the answer, the model could stop there. On **Early exit**, a cheap confidence "
     "check runs at each checkpoint and the model stops once it is below the **threshold** (an entropy). A low "
     "threshold waits for certainty: accurate, little saved. A high one stops early: fast, sometimes wrong. Slide "
     "it and watch accuracy against compute.",
     EARLY_EXIT),
]


TOUR_COOKIE = "sv_tour"  # "done" once a browser has finished or skipped the tour


def tour_step(step: int | str) -> None:
    state["_sv_tour"] = step


def remember_tour_done() -> None:
    """Store in the browser that the tour is done (a cookie the next visit's session reads)."""
    st.html(f"<script>document.cookie = '{TOUR_COOKIE}=done; max-age=31536000; path=/; SameSite=Lax';</script>",
            unsafe_allow_javascript=True)


st.title("spade-viz: what is the model about to say?")
seen = st.context.cookies.get(TOUR_COOKIE) == "done"  # this browser finished or skipped it before
step = state.setdefault("_sv_tour", "done" if seen else 0)  # once per browser; "done" after Finish or Skip
if step == "done" and not seen:
    remember_tour_done()
if step != "done":
    title, text, shown_on = TOUR[step]
    with st.container(border=True, key="tour"):
        st.markdown(f"**A one-minute tour · {step + 1} of {len(TOUR)} · {title}**")
        st.markdown(text)
        b = st.columns([1, 1, 1.4, 3], vertical_alignment="center")
        b[0].button("Back", key="tour_back", on_click=tour_step, args=(step - 1,), disabled=step == 0,
                    icon=":material/arrow_back:")
        last = step == len(TOUR) - 1
        b[1].button("Finish" if last else "Next", key="tour_next", type="primary",
                    on_click=tour_step, args=("done" if last else step + 1,),
                    icon=":material/check:" if last else ":material/arrow_forward:")
        b[2].button("Skip the tour", key="tour_skip", on_click=tour_step, args=("done",))
        b[3].page_link(shown_on.path, label=f"See it on {shown_on.title}", icon=shown_on.icon)
st.markdown(
    """
A language model computes its next token through many layers. **spade-viz** decodes every layer and
shows which token the model would answer if it stopped there:

- **Logit lens**: apply the model's final norm and output matrix straight to a layer's hidden state.
- **SPADE** (space-alignment decoding): keep only two rows of that layer, the start token `<s>` and
  the answer token, and run them through the remaining layers. It usually finds the final answer
  many layers before the logit lens; dropping `<s>` makes it worse.

For every layer you see the top token, how undecided the prediction is (its entropy), and how the
probability of an answer grows from layer to layer.

*Names:* version 2 of the paper (March 2026) calls SPADE **SimLens**, linear SPADE **Linear SimLens** and the
hybrid exit **SimExit**; this app keeps the first names (the command line takes both).
"""
)
models.current(show_errors_in_page=False)  # after the text above: it paints while the model loads
with st.popover("Copy link", icon=":material/link:", help="A link to this page."):
    sharing.share("home", {}, where=st)
st.subheader("Pages")
for page in PAGES[1:]:
    st.page_link(page.path, label=f"**{page.title}**: {page.summary}", icon=page.icon)
if step == "done":
    st.button("Show the tour again", key="tour_again", on_click=tour_step, args=(0,), icon=":material/replay:")
st.caption(
    "The model picker in the sidebar is shared by every page. The embedded default "
    "(SmolLM2-135M-Instruct, 30 layers) runs on a laptop CPU; any Hugging Face model id, local "
    "model folder or `.gguf` file can be typed in instead."
)
