"""The app's pages, declared once: `app.py` hands them to `st.navigation`, which frames every page
(the sidebar's page list, the URL paths), and the landing page lists them with their summaries."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

SENT_PROMPT = "_sv_send"  # a prompt another page sends to Explore, analysed on arrival


@dataclass(frozen=True)
class PageInfo:
    """One page: its file, title, icon, address and the line the landing page says of it."""

    path: str  # relative to app.py
    title: str
    icon: str
    url_path: str  # the page's address: old shareable links keep working
    summary: str = ""


HOME = PageInfo("pages/home.py", "Home", ":material/layers:", "")
EXPLORE = PageInfo("pages/explore.py", "Explore", ":material/search:", "Explore",
                   "one prompt, every layer, decoded by the logit lens and by SPADE")
EARLY_EXIT = PageInfo("pages/early_exit.py", "Early exit", ":material/fast_forward:", "Early_exit",
                      "sweep a labelled dataset, then slide the exit threshold and watch accuracy against compute")
COMPARE = PageInfo("pages/compare_decoders.py", "Compare decoders", ":material/compare_arrows:",
                   "Compare_decoders", "logit lens, tuned lens, SPADE and linear SPADE on a dataset, layer by layer")
PAGES = (HOME, EXPLORE, EARLY_EXIT, COMPARE)


def navigation():
    """`st.navigation` over `PAGES` (the home page is the default, at the site's root)."""
    return st.navigation([st.Page(p.path, title=p.title, icon=p.icon, url_path=p.url_path or None,
                                  default=p is HOME) for p in PAGES])


def send_to_explore(prompt: str) -> None:
    """Open the Explore page with `prompt` in its box, analysed on arrival (call from a button)."""
    st.session_state[SENT_PROMPT] = prompt
    st.switch_page(EXPLORE.path)
