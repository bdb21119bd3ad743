"""Streamlit's AppTest on the app as a visitor sees it: `app.py` (which declares the pages and draws
the shared sidebar) on one page.

AppTest can switch to a page that `st.navigation` registers only after a first run of the app; that
first run (the home page, with the test's session state) is made by the first `run()`, which then
switches and runs the page with the query parameters the test set.

The page files are named after their addresses (pages/Explore.py serves /Explore), so a visitor's
direct link finds its page at once. A server decides once, at its first `st.navigation`, that the
`pages/` folder is not a page list of its own; AppTest decides anew on every run and would then run a
page file without `app.py`. `_as_a_server` makes it decide as the server does.
"""

from __future__ import annotations

from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
_plain_init = PagesManager.__init__


def _as_a_server(self, *args, **kwargs) -> None:
    _plain_init(self, *args, **kwargs)
    PagesManager.uses_pages_directory = False  # what st.navigation sets for the server's lifetime


PagesManager.__init__ = _as_a_server


def open_page(page: str | None = None, timeout: float = 240) -> AppTest:
    """The app on `page` ('pages/Explore.py'; None: the home page), not run yet."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    if page in (None, "app.py"):
        return at
    plain_run = at.run

    def first_run(*, timeout: float | None = None) -> AppTest:
        query = dict(at.query_params)
        plain_run(timeout=timeout)  # the home page
        at.query_params.clear()
        at.query_params.update(query)
        at.switch_page(page)
        at.run = plain_run  # later runs stay on whatever page the app is on
        return plain_run(timeout=timeout)

    at.run = first_run
    return at
