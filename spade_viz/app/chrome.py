"""The shared look of every page: one-line messages, explanations, the CSS, the projector switch."""

from __future__ import annotations

import streamlit as st

from ..viz.style import PROJECTOR_SCALE

PROJECTOR_KEY = "sv_big_fonts"
PLOT = dict(theme=None, config={"displaylogo": False})  # every st.plotly_chart: the figures' own theme

_STYLE = """
<style>
/* denser page, and a title that starts below Streamlit's toolbar */
[data-testid="stMainBlockContainer"], .block-container { padding-top: 3.6rem; padding-bottom: 2rem; }
h1 { font-size: 2.0rem !important; padding-top: 0 !important; }
[data-testid="stSidebarUserContent"] { padding-top: 1rem; }
</style>
"""


def explain(text: str) -> None:
    """A short explanation above a view (one or two sentences, written for a student)."""
    st.caption(text)


def show_error(err: BaseException | str, where=None) -> None:
    """A user-facing error as one clear line (no traceback)."""
    message = str(err).strip() or type(err).__name__
    (where or st).error(message[:1].upper() + message[1:], icon=":material/error:")


_PROJECTOR_STYLE = f"""
<style>
/* the projector switch: Streamlit sizes text, captions and controls in rem, so scaling the root
   scales them all at once, by the figures' own factor */
html {{ font-size: {16 * PROJECTOR_SCALE:g}px !important; }}
</style>
"""


def page_style() -> None:
    """The shared CSS (drawn once per run by `app.py`); larger throughout with the projector switch on."""
    st.markdown(_STYLE + (_PROJECTOR_STYLE if font_scale() != 1.0 else ""), unsafe_allow_html=True)


def display_options(where) -> None:
    """The shared presentation switch (`font_scale`): larger figure fonts for a projector."""
    where.toggle("Larger fonts (projector)", key=PROJECTOR_KEY, persist_state="session",
                 help="Page text, captions, controls and every figure larger, for the back of a lecture room.")


def font_scale() -> float:
    """The figures' font scale the sidebar's projector switch asks for (1.0: off)."""
    return PROJECTOR_SCALE if st.session_state.get(PROJECTOR_KEY) else 1.0
