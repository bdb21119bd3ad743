"""The Streamlit app: what the pages share, one module per job. The engine below imports none of it.

- `chrome`: messages, the shared look, the projector switch.
- `models`: the models shared by every session, and the sidebar's model picker.
- `analyses`: one store of analyses (and SPADE grids) for all sessions, within a byte budget.
- `datasets`: the dataset picker (built-in, upload, Hugging Face) and the Explore presets.
- `jobs`: server mode's queue for sweeps, fits and trainings; progress bars.
- `links` (pure): a page's state <-> its URL; `sharing`: the URL and the "Copy link" box.
- `state` (pure): each page's state, one typed object; `widgets`: widgets bound to its fields.
- `live_slider`: the Early-exit threshold slider that runs in the browser.
- `pages`: the page list `app.py` hands to `st.navigation`.
"""
