"""Presenting in a real browser (chromium, a warm server): the tour is shown once per browser (a cookie
survives the reload that a new session is), and the projector switch enlarges page text and captions
at once, on the page where it is switched."""

from __future__ import annotations

import pytest

from browser import CHROMIUM, chromium_available, chromium_browser, warm_server
from spade_viz.viz.style import PROJECTOR_SCALE

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not chromium_available(), reason=f"{CHROMIUM} is not installed")]

WAIT_MS = 240_000
CAPTION_PX = """() => parseFloat(getComputedStyle(
    document.querySelector('[data-testid="stCaptionContainer"]')).fontSize)"""


def test_the_tour_once_per_browser_and_the_projector_on_the_spot(cache_without_lenses):
    with warm_server() as (url, _server), chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(WAIT_MS)
        page.goto(url)
        page.get_by_text("A one-minute tour").wait_for()
        link = page.get_by_role("link", name="See it on Explore")
        assert link.get_attribute("href").rstrip("/").lower().endswith("explore")  # a real link
        page.get_by_role("button", name="Skip the tour").click()
        page.get_by_role("button", name="Show the tour again").wait_for()
        page.wait_for_function("() => document.cookie.includes('sv_tour=done')")
        page.reload()  # a new session in the same browser
        page.get_by_role("button", name="Show the tour again").wait_for()
        assert page.get_by_text("A one-minute tour").count() == 0
        fresh = browser.new_context().new_page()  # another browser: the tour again
        fresh.set_default_timeout(WAIT_MS)
        fresh.goto(url)
        fresh.get_by_text("A one-minute tour").wait_for()

        page.goto(f"{url}/Explore")
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4")
        before = page.evaluate(CAPTION_PX)
        page.get_by_text("Larger fonts (projector)").click()
        page.wait_for_function(f"() => ({CAPTION_PX})() > {before} * 1.2")
        assert page.evaluate(CAPTION_PX) == pytest.approx(before * PROJECTOR_SCALE, rel=0.05)
        assert page.url.endswith("Explore") or "/Explore" in page.url  # the same page, not reopened
