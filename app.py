"""spade-viz, the Streamlit app: `streamlit run app.py`. Declares the pages and draws what every page
shares (the look, the projector switch, the model picker); each page then draws itself."""

from __future__ import annotations

import streamlit as st

from spade_viz.app import chrome, jobs, models, pages

st.set_page_config(page_title="spade-viz", page_icon=":material/layers:", layout="wide")
page = pages.navigation()
chrome.page_style()
chrome.display_options(st.sidebar)
models.sidebar()
jobs.say_wait()
page.run()
