"""The Early-exit page walked as a user would, in a real browser: long sequences of actions (key
presses, drags, jump buttons, layout changes, leaving the page and coming back, opening the copied
link in a new tab), checking after each that every view agrees:

- the slider's threshold = the examples table's = the address bar's = the "Copy link" box's;
- the slider's accuracy = the table heading's (both computed at that one threshold);
- the caption's checkpoint layout = the layout in the link = the layout controls' values.

Seeded random sequences plus the reproductions of the bugs this replaced (a slider that snapped back
after a rerun, a layout that changed behind its caption on coming back, a stale copied link).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from browser import CHROMIUM, chromium_available, chromium_browser, streamlit_server
from spade_viz import windows

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 240_000
LIVE_SLIDER = "iframe[title*='live_slider']"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not chromium_available(), reason=f"{CHROMIUM} is not installed")]

ELSEWHERE = {"Explore": "Explore a prompt, layer by layer", "Home": "what is the model about to say",
             "Compare decoders": "which one finds the answer earliest"}
LAYOUT_RE = re.compile(r"checkpoints every (?:(\d+) layers|layer) from (\d+)")


def _wait_idle(page) -> None:
    """Until the script run triggered by the last action has finished and painted."""
    page.wait_for_timeout(700)  # a key release reaches the server after the slider's 350 ms pause
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"],"
        " [data-testid=\"stStatusWidgetRunningManIcon\"]')"
    )
    page.wait_for_timeout(600)


def _frame(page):
    frame = page.frame_locator(LIVE_SLIDER)
    frame.locator("[data-testid='live-metric-value']").first.wait_for()
    return frame


def _copied_link(page) -> str:
    """What the "Copy link" box holds (opened, read, closed)."""
    page.get_by_role("button", name="Copy link").first.click()
    box = page.locator("[data-testid='stPopoverBody'] code").first
    box.wait_for()
    text = box.inner_text().strip()
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    return text


def _views(page, with_copied_link: bool = False) -> dict:
    """Every place the threshold and the layout show, read off the page."""
    frame = _frame(page)
    heading = page.locator("[data-testid='stMarkdownContainer']").filter(has_text="Examples at τ = ").first.inner_text()
    caption = next(t for t in page.locator("[data-testid='stCaptionContainer']").all_inner_texts()
                   if LAYOUT_RE.search(t) and "examples ·" in t)
    every, start = LAYOUT_RE.search(caption).groups()
    query = {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}
    views = {
        "slider_tau": frame.locator("#tau-value").inner_text().split("= ")[1],
        "table_tau": re.search(r"τ = ([0-9.]+)", heading).group(1),
        "url_tau": f"{float(query['tau']):.3f}",
        "slider_accuracy": frame.locator("[data-testid='live-metric-value']").first.inner_text().strip(),
        "table_accuracy": re.search(r"accuracy ([0-9.]+%)", heading).group(1),
        "caption_layout": (int(every or 1), int(start)),
        "url_layout": (int(query["every"]), int(query["first"])),
    }
    if with_copied_link:
        copied = {k: v[-1] for k, v in parse_qs(urlparse(_copied_link(page)).query).items()}
        views["copied_tau"] = f"{float(copied['tau']):.3f}"
        views["copied_layout"] = (int(copied["every"]), int(copied["first"]))
    return views


def _disagreements(views: dict) -> list[str]:
    taus = {views[k] for k in ("slider_tau", "table_tau", "url_tau", "copied_tau") if k in views}
    layouts = {views[k] for k in ("caption_layout", "url_layout", "copied_layout") if k in views}
    return ([] if len(taus) == 1 else ["threshold"]) + ([] if len(layouts) == 1 else ["layout"]) + (
        [] if views["slider_accuracy"] == views["table_accuracy"] else ["accuracy"])


def _check(page, what: str, with_copied_link: bool = False) -> dict:
    """The views once the page is idle. A rerun still in flight may show an older value for a moment,
    so they are read again for up to 15 s; a view that never catches up fails."""
    for _ in range(15):
        views = _views(page, with_copied_link)
        if not _disagreements(views):
            break
        page.wait_for_timeout(1000)
    assert not _disagreements(views), (what, _disagreements(views), views)
    assert page.locator("[data-testid='stException']").count() == 0, what
    return views


def _press(page, key: str, times: int = 1) -> None:
    slider = _frame(page).locator("#tau")
    slider.focus()
    for _ in range(times):
        slider.press(key)
    _wait_idle(page)


def _drag(page, share: float) -> None:
    frame_element = page.locator(LIVE_SLIDER).element_handle()
    box = frame_element.content_frame().locator("#tau").bounding_box()
    offset = page.locator(LIVE_SLIDER).bounding_box()
    x0, y = offset["x"] + box["x"], offset["y"] + box["y"] + box["height"] / 2
    page.mouse.move(x0 + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(x0 + box["width"] * share, y, steps=8)
    page.mouse.up()
    _wait_idle(page)


def _go(page, title: str, wait_for: str) -> None:
    """Leave for another page through the sidebar's page list (or come back)."""
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text=title).first.click()
    page.get_by_text(wait_for).first.wait_for()  # a title, or a line the page shows
    _wait_idle(page)


def _set_every(page, every: int) -> None:
    page.get_by_text("Checkpoints and compute accounting").click()
    box = page.locator(".st-key-ee_every input")
    box.fill(str(every))
    box.press("Enter")
    _wait_idle(page)
    page.get_by_text("Checkpoints and compute accounting").click()  # fold it again


def test_walking_the_early_exit_page_keeps_every_view_in_agreement(cache_without_lenses):
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit-walk.log") as url:
        with chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(url)  # a visitor's first visit, then the page list to Early exit
            page.get_by_text("what is the model about to say").wait_for()
            _go(page, "Early exit", "This sweep shipped with spade-viz")  # the first task's shipped sweep
            _wait_idle(page)
            opening = _check(page, "the opening view", with_copied_link=True)

            # the reproductions: End then Home, each after the rerun; the slider stays where it was let go
            _press(page, "End")
            at_end = _check(page, "End")
            assert float(at_end["slider_tau"]) > float(opening["slider_tau"])
            _press(page, "Home")
            assert _check(page, "Home")["slider_tau"] == "0.000"
            _press(page, "ArrowRight", 40)
            moved = _check(page, "40 steps right", with_copied_link=True)
            assert float(moved["slider_tau"]) > 0

            # leave and come back: the layout and threshold are where they were, caption included
            _go(page, "Explore", ELSEWHERE["Explore"])
            _go(page, "Early exit", "Slide the threshold")
            back = _check(page, "left for Explore and came back", with_copied_link=True)
            assert (back["slider_tau"], back["caption_layout"]) == (moved["slider_tau"], moved["caption_layout"])

            # a jump button moves the slider, the table and the copied link together
            page.get_by_role("button", name="Best accuracy").click()
            _wait_idle(page)
            jumped = _check(page, "Best accuracy", with_copied_link=True)

            # the copied link, opened in a new tab (a new session), shows the same view
            link = _copied_link(page)
            other = browser.new_page(viewport={"width": 1280, "height": 1000})
            other.set_default_timeout(WAIT_MS)
            other.goto(link)
            other.get_by_text("Slide the threshold", exact=True).wait_for()
            _frame(other)
            _wait_idle(other)
            opened = _check(other, "the copied link in a new tab")
            assert (opened["slider_tau"], opened["caption_layout"], opened["table_accuracy"]) == (
                jumped["slider_tau"], jumped["caption_layout"], jumped["table_accuracy"])
            other.close()

            # a layout change by hand: caption, numbers and link follow it; the threshold stays on the grid
            _set_every(page, 2)
            assert _check(page, "every 2", with_copied_link=True)["caption_layout"][0] == 2

            # then a seeded random walk over all of it
            rng = random.Random(19)
            for step in range(14):
                action = rng.choice(["key", "key", "drag", "jump", "away", "every"])
                if action == "key":
                    key = rng.choice(["ArrowRight", "ArrowLeft", "PageUp", "PageDown", "Home", "End"])
                    _press(page, key, rng.randint(1, 12))
                elif action == "drag":
                    _drag(page, rng.uniform(0.05, 0.95))
                elif action == "jump":
                    page.get_by_role("button", name=rng.choice(["Best accuracy", "Fastest within 1 point"])).click()
                    _wait_idle(page)
                elif action == "away":
                    _go(page, *rng.choice(list(ELSEWHERE.items())))
                    _go(page, "Early exit", "Slide the threshold")
                else:
                    _set_every(page, rng.choice([1, 2, 3, 4]))
                _check(page, f"step {step}: {action}", with_copied_link=step % 3 == 0)
            page.screenshot(path=str(ARTIFACTS / "early-exit-walk.png"))


def test_every_built_in_task_opens_within_two_points_or_says_so(cache_without_lenses):
    """An honest opening: a view that loses more than 2 points against the full model says so beside
    the headline numbers (yes_no opened at -14.1 pt with no word)."""
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit-openings.log") as url:
        with chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            for task in ("yes_no", "capitals", "multiple_choice"):
                page.goto(f"{url}/Early_exit?task={task}")  # a link to the task: its shipped sweep shows at once
                page.locator("[data-testid='stCaptionContainer']").filter(has_text=f"{task}, ").first.wait_for()
                page.locator(LIVE_SLIDER).scroll_into_view_if_needed()  # a component's frame loads once in view
                _wait_idle(page)
                frame = _frame(page)
                delta = frame.locator(".metric .delta").first.inner_text()
                loss = -float(delta.split(" pt")[0]) if delta.startswith("-") else 0.0
                warning = frame.locator("[data-testid='live-loss']").inner_text()
                if loss > 2:
                    assert f"loses {loss:.1f} points" in warning, (task, delta, warning)
                else:
                    assert warning == "", (task, delta, warning)
                _check(page, f"{task} opening")


EXPLORE_PROMPT = ("river stone light music garden paper window market silver winter planet engine story forest "
                  "bridge ocean letter mountain city teacher ") * 3  # about 60 tokens: 46 window positions


def _explore_views(page, with_copied_link: bool = False) -> dict:
    """The first position shown, as the window slider, the heatmap's title, the address bar and the copied
    link say it (a link without `start` shows the window ending at the answer)."""
    title = page.evaluate("() => String(document.querySelector('.js-plotly-plot').layout.title.text)")
    first, count = re.search(r"positions (\d+)–\d+ of (\d+)", title).groups()

    def start_of(url: str) -> int:
        query = parse_qs(urlparse(url).query)
        return int(query["start"][-1]) if "start" in query else int(count) - windows.VIEW

    views = {"slider": int(page.locator("[data-testid='stSliderThumbValue']").first.inner_text()),
             "heatmap": int(first), "url": start_of(page.url)}
    if with_copied_link:
        views["copied"] = start_of(_copied_link(page))
    return views


def _explore_check(page, what: str, with_copied_link: bool = False) -> int:
    """The first position shown once every view agrees (read again for up to 15 s, as `_check`)."""
    for _ in range(15):
        views = _explore_views(page, with_copied_link)
        if len(set(views.values())) == 1:
            break
        page.wait_for_timeout(1000)
    assert len(set(views.values())) == 1, (what, views)
    assert page.locator("[data-testid='stException']").count() == 0, what
    return views["slider"]


def _move_window(page, key: str, times: int) -> None:
    slider = page.get_by_role("slider").first
    slider.focus()
    for _ in range(times):
        slider.press(key)
    _wait_idle(page)


def test_walking_the_explore_window_keeps_every_view_in_agreement(cache_without_lenses):
    """A reproduction: key presses arriving while the previous window's rerun ran left the address bar
    (and so the copied link) one step ahead of the slider and heatmap, for good."""
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit-walk-explore.log") as url:
        with chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{url}/Explore")
            page.get_by_label("Prompt (the model predicts the token that comes next)").fill(EXPLORE_PROMPT)
            page.get_by_role("button", name="Analyze").click()
            page.get_by_text("tokens · 30 layers").first.wait_for()
            _wait_idle(page)
            last = _explore_check(page, "the window ending at the answer", with_copied_link=True)
            _move_window(page, "ArrowLeft", 5)
            assert _explore_check(page, "5 left") < last
            for step in range(4):  # presses while the last one's rerun still computes its window
                _move_window(page, "ArrowLeft", 3)
                moved = _explore_check(page, f"3 more left, step {step}", with_copied_link=step == 3)
            _go(page, "Home", ELSEWHERE["Home"])
            _go(page, "Explore", "tokens · 30 layers")
            assert _explore_check(page, "left for Home and came back", with_copied_link=True) == moved
            link = _copied_link(page)
            other = browser.new_page(viewport={"width": 1280, "height": 1000})
            other.set_default_timeout(WAIT_MS)
            other.goto(link)
            other.get_by_text("tokens · 30 layers").first.wait_for()
            _wait_idle(other)
            assert _explore_check(other, "the copied link in a new tab") == moved
            other.close()
            _move_window(page, "End", 1)
            assert _explore_check(page, "End", with_copied_link=True) == last
