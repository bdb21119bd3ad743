"""Streamlit's AppTest on the app as a visitor sees it: `app.py` (which declares the pages and draws
the shared sidebar) on one page.

AppTest can switch to a page that `st.navigation` registers only after a first run of the app; that
first run (the home page, with the test's session state) is made by the first `run()`, which then
switches and runs the page with the query parameters the test set.
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def open_page(page: str | None = None, timeout: float = 240) -> AppTest:
    """The app on `page` ('pages/explore.py'; None: the home page), not run yet."""
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
