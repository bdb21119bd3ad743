"""A page's link: its state into the URL and the "Copy link" box, and an opened link back into it.

The pure half (parameters, validation) is `links`; this is the Streamlit half.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import streamlit as st

import spade_viz as sv

from . import links
from .models import LINKED_MODEL, OTHER


def opened(page: str, params) -> links.Link | None:
    """The state the URL's query parameters ask for, once per link (None when they hold nothing
    this page has not seen or written itself). A bad part of a link is shown as a warning and
    replaced by its default. A link's model is only offered in the sidebar, never loaded by itself."""
    query = st.query_params.to_dict()
    if not query or query == st.session_state.get(f"_sv_link_{page}"):
        return None
    st.session_state[f"_sv_link_{page}"] = query
    link = links.decode(query, params)
    if link.message():
        st.warning(link.message(), icon=":material/link_off:")
    model = str(link.state.get("model") or "").strip()
    if model:
        st.session_state[LINKED_MODEL] = model
        if st.session_state.get("sv_model", "") != OTHER:
            st.session_state["sv_model_path"] = model  # the sidebar's text box, shown once they pick "Other"
    return link


def link_model(lm: sv.LoadedModel | None) -> str:
    """The model a link should name: '' for the embedded default; a model a link offered and the
    visitor has not loaded yet stays in it."""
    pending = st.session_state.get(LINKED_MODEL)
    if pending:
        return pending
    return "" if lm is None or lm.name == sv.DEFAULT_MODEL else lm.name


def _quote(text: str, safe: str = "", encoding=None, errors=None) -> str:
    return quote(text, safe="/:,", encoding=encoding, errors=errors)


def share(page: str, query: dict[str, str], where=None) -> str:
    """Put the page's state into the URL and show the link in `where` (a popover or a container:
    `st.code` has its own copy button; None: the URL only). Returns the link: the page's address in
    the visitor's browser (`st.context.url`) with the query; where that is unknown, the query alone
    (append it to the page's address).

    The URL is sent on every run, not only when the server's copy differs: a run interrupted by the
    next one may already have sent its own state, while the next run's copy is the URL the browser
    had when it asked (the slider's previous value), so a check against it kept the interrupted
    run's URL beside the view of the last one. The browser adds no history entry for an unchanged
    URL."""
    st.query_params.from_dict(query)
    st.session_state[f"_sv_link_{page}"] = dict(query)
    text = urlencode(query, quote_via=_quote)
    base = (getattr(st.context, "url", None) or "").split("?")[0]  # the address as the browser last had it
    link = f"{base}?{text}" if text else (base or "?")
    if where is None:
        return link
    where.code(link, language=None, wrap_lines=True)
    where.caption("The page as you see it now: prompt, options and view (copy with the icon at the right). "
                  "Opening the link shows the same view; a model other than the default waits for a click.")
    return link
