"""spade-viz landing page. Start the app with `streamlit run app.py`; the pages live in pages/.

Every page (this one included) draws the shared sidebar, with the page links and the model
picker, through `ui.sidebar_model()`.
"""

from __future__ import annotations

import streamlit as st

from spade_viz import ui

st.set_page_config(page_title="spade-viz", page_icon=":material/layers:", layout="wide")

st.title("spade-viz: what is the model about to say?")
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
"""
)
ui.sidebar_model(show_errors_in_page=False)  # after the text above: it paints while the model loads
with st.popover("Copy link", icon=":material/link:", help="A link to this page."):
    ui.share_link("home", {}, where=st)
st.subheader("Pages")
for page in ui.app_pages():
    name, _, summary = page["summary"].partition(": ")  # "Early exit: sweep a labelled dataset, ..."
    st.page_link(page["path"], label=f"**{name}**: {summary}" if summary else f"**{page['title']}**",
                 icon=page["icon"])
st.caption(
    "The model picker in the sidebar is shared by every page. The embedded default "
    "(SmolLM2-135M-Instruct, 30 layers) runs on a laptop CPU; any Hugging Face model id, local "
    "model folder or `.gguf` file can be typed in instead."
)
