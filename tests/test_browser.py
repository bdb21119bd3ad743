"""End to end in a real browser: `streamlit run app.py` + headless Debian chromium (Playwright).

Opens the Explore page on the default model, picks a preset, runs it, and checks that both
heatmaps render with one row per layer (31 on the 30-layer default model). Sweeps part of a task
on the Early-exit page and moves the threshold slider. Screenshots go to
test-artifacts/ (gitignored). Skipped when no chromium is found (`SPADE_VIZ_CHROMIUM`, else `chromium`
on PATH: `tests/browser.py` `find_chromium`); under `SPADE_VIZ_REQUIRE_BROWSER=1` (`scripts/test.sh`) a
missing one fails the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import CHROMIUM, chromium_available, chromium_browser, chromium_page, streamlit_server

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 240_000  # first model load + two analyses on a busy 2-core CI machine

pytestmark = [pytest.mark.browser, pytest.mark.slow,  # chromium on the real default model
              pytest.mark.skipif(not chromium_available(), reason=f"{CHROMIUM} is not installed")]

PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => {
    const trace = el._fullData && el._fullData[0];
    return {
        type: trace ? trace.type : null,
        rows: trace && trace.z ? trace.z.length : null,
        cols: trace && trace.z && trace.z[0] ? trace.z[0].length : null,
        ylabels: el.data && el.data[0] && el.data[0].y ? el.data[0].y.length : null,
        ticks: el.layout && el.layout.xaxis && el.layout.xaxis.ticktext ? Array.from(el.layout.xaxis.ticktext) : [],
    };
})"""

HEATMAP_SHOWS_JS = """(word) => {
    const plots = document.querySelectorAll('.js-plotly-plot');
    if (plots.length < 4 || !plots[0].layout || !plots[0].layout.xaxis.ticktext) return false;
    return Array.from(plots[0].layout.xaxis.ticktext).some(t => t.includes(word));
}"""


def _wait_idle(page) -> None:
    """Until the script has finished its run (no "running" indicator) and the last frame is painted."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"],"
        " [data-testid=\"stStatusWidgetRunningManIcon\"]')"
    )
    page.wait_for_timeout(800)


def _scroll_main(page, y: int) -> None:
    page.evaluate("(y) => document.querySelector('[data-testid=\"stMain\"]').scrollTo(0, y)", y)
    page.wait_for_timeout(400)


def test_explore_page_in_chromium(cache_without_lenses):
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit.log") as url:
        with chromium_page(1280, 800) as page:
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{url}/Explore")
            page.get_by_text("Explore a prompt, layer by layer").wait_for()
            # the first preset is analysed on arrival; now pick another one and run it
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4")
            page.locator(".st-key-preset").click()
            page.get_by_role("option", name="Repetition / induction").click()
            page.wait_for_function(HEATMAP_SHOWS_JS, arg="moon")
            _wait_idle(page)
            page.locator(".st-key-run button").first.click()
            page.wait_for_function(HEATMAP_SHOWS_JS, arg="moon")
            _wait_idle(page)

            plots = page.evaluate(PLOTS_JS)
            assert len(plots) == 4, plots
            positions, answer = plots[0], plots[1]
            assert positions["type"] == answer["type"] == "heatmap"
            assert positions["rows"] == positions["ylabels"] == 31  # layers 0..30 of the default model
            assert answer["rows"] == answer["ylabels"] == 31
            assert answer["cols"] == 2  # logit lens, SPADE (the ablation is off until asked for)
            assert 2 <= positions["cols"] <= 14
            assert any("␣moon" in t for t in positions["ticks"])  # leading-space marker on the axis
            assert page.locator("text=Final answer").count() >= 1
            sidebar_links = page.locator("[data-testid='stSidebar'] a").all_inner_texts()
            assert [t.strip().splitlines()[-1] for t in sidebar_links][:4] == [
                "Home", "Explore", "Early exit", "Compare decoders"]
            assert page.locator("[data-testid='stException']").count() == 0
            assert page.locator("[data-testid='stAlertContentError']").count() == 0

            # back to the first preset (cached since arrival) for the screenshots: the README's picture
            page.locator(".st-key-preset").click()
            page.get_by_role("option", name="Factual recall: capitals").click()
            page.wait_for_function(HEATMAP_SHOWS_JS, arg="Germany")
            _wait_idle(page)
            assert "moon" not in page.locator(".st-key-target").inner_text()  # no stale widget labels
            assert "Berlin" in page.get_by_text("Final answer").first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "explore.png"))
            _scroll_main(page, 560)
            page.screenshot(path=str(ARTIFACTS / "explore-heatmaps.png"))
            _scroll_main(page, 0)
            height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": 1280, "height": min(int(height) + 40, 4000)})
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "explore-full.png"))
    assert (ARTIFACTS / "explore.png").stat().st_size > 10_000


SPADE_GRID_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(el =>
    el.layout && el.layout.title && String(el.layout.title.text).startsWith('SPADE')).length"""
COLORBAR_JS = """() => { const el = document.querySelector('.js-plotly-plot');
    return el && el.data && el.data[0].colorbar ? el.data[0].colorbar.title.text : null; }"""


def test_shared_link_and_spade_positions_in_chromium(cache_without_lenses):
    """Share a view (preset, metric), open the link in a fresh session: the same prompt and view come
    back; then decode SPADE at every position and see its heatmap beside the logit lens's."""
    import json
    from urllib.parse import parse_qs, urlsplit

    induction = next(p for p in json.loads((ROOT / "spade_viz" / "assets" / "presets.json").read_text())["presets"]
                     if p["name"] == "Repetition / induction")
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit-links.log") as url:
        with chromium_browser() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{url}/Explore")
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4")
            page.locator(".st-key-preset").click()
            page.get_by_role("option", name="Repetition / induction").click()
            page.wait_for_function(HEATMAP_SHOWS_JS, arg="moon")
            page.locator(".st-key-metric").click()
            page.get_by_role("option", name="top-1 probability").click()
            page.wait_for_function(f"() => ({COLORBAR_JS})() === 'top-1 probability'")
            _wait_idle(page)
            page.get_by_role("button", name="Copy link").first.click()
            code = page.locator("[data-testid='stPopoverBody'] code").first
            code.wait_for()
            link = code.inner_text().strip()
            assert link.startswith(f"{url}/Explore?") and "metric=top1_prob" in link and "preset=" in link
            same = [(u.path, parse_qs(u.query)) for u in (urlsplit(page.url), urlsplit(link))]
            assert same[0] == same[1]  # the address bar holds the same link
            page.close()

            shared = browser.new_page(viewport={"width": 1280, "height": 900})  # a fresh session
            shared.set_default_timeout(WAIT_MS)
            shared.goto(link)
            shared.wait_for_function(HEATMAP_SHOWS_JS, arg="moon")
            _wait_idle(shared)
            assert shared.locator(".st-key-prompt textarea").input_value() == induction["text"]
            assert shared.evaluate(COLORBAR_JS) == "top-1 probability"  # the metric picked before sharing
            assert shared.evaluate(SPADE_GRID_JS) == 0
            shared.get_by_role("button", name="Decode SPADE at every position").first.click()  # a stale copy may linger
            shared.wait_for_function(f"() => ({SPADE_GRID_JS})() >= 1")
            _wait_idle(shared)
            plots = shared.evaluate(PLOTS_JS)
            positions = [p for p in plots if p["type"] == "heatmap" and p["rows"] == 31 and p["cols"] and p["cols"] > 3]
            assert len(positions) >= 3  # logit lens and SPADE over the positions, and the disagreement map
            assert shared.evaluate(SPADE_GRID_JS) == 1
            assert shared.locator("[data-testid='stException']").count() == 0
            shared.screenshot(path=str(ARTIFACTS / "explore-spade-positions.png"))


LIVE_SLIDER = "iframe[title*='live_slider']"
MARKER_JS = """() => {  // the current threshold's point over the trade-off curve: data values and pixels
    const marker = document.getElementById('marker');
    return [+marker.dataset.compute, +marker.dataset.accuracy, marker.style.transform];
}"""


def _unfold_setup(page) -> None:
    """Open the Early-exit page's set-up (data, sweep, linear SPADE), folded away once a sweep shows."""
    setup = page.locator("[data-testid='stExpander'] details").filter(has_text="Data, sweep and linear SPADE")
    if not setup.evaluate("(el) => el.open"):
        setup.locator("summary").click()


def _early_exit_task(page, url: str, task: str) -> None:
    """Open the Early-exit page and pick a built-in task."""
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{url}/Early_exit")
    page.get_by_text("how early can the model stop").wait_for()
    page.get_by_text("Data, sweep and linear SPADE").wait_for()
    _wait_idle(page)
    _unfold_setup(page)
    page.locator(".st-key-ee_task").click()
    page.keyboard.type(task)  # the list scrolls: type to filter it, then take the first match
    page.keyboard.press("Enter")


def _live(page):
    """The in-browser threshold slider's frame (a Streamlit component) once it has drawn."""
    frame = page.frame_locator(LIVE_SLIDER)
    frame.locator("[data-testid='live-metric-value']").first.wait_for()
    return frame, next(f for f in page.frames if f.url.split("?")[0].endswith("index.html"))


def _metrics(frame) -> list[str]:
    return [text.strip() for text in frame.locator("[data-testid='live-metric-value']").all_inner_texts()[:5]]


def test_early_exit_slider_in_chromium(cache_without_lenses):
    """Sweep part of a task on the default model, then move the threshold with the keyboard: the
    numbers move, from nobody exiting (tau 0) to everybody exiting at the first checkpoint."""
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit-early-exit.log") as url:
        with chromium_page(1280, 900) as page:
            _early_exit_task(page, url, "capitals")
            page.get_by_text("capitals: 153 examples").wait_for()
            _wait_idle(page)
            _unfold_setup(page)
            limit = page.locator(".st-key-ee_limit input")
            limit.fill("24")
            limit.press("Enter")
            _wait_idle(page)
            page.get_by_role("button", name="Run the sweep").first.click()  # a stale copy may linger
            page.get_by_text("Operating points", exact=True).wait_for()
            _wait_idle(page)
            assert page.locator("[data-testid='stException']").count() == 0
            assert limit.input_value() == "24"

            frame, frame_page = _live(page)
            slider = frame.locator("#tau")  # the slider runs in the browser: no server round trip per step
            slider.focus()
            slider.press("Home")
            nobody, marker_nobody = _metrics(frame), frame_page.evaluate(MARKER_JS)
            slider.press("End")
            everybody, marker_everybody = _metrics(frame), frame_page.evaluate(MARKER_JS)
            released = frame.locator("#tau-value").inner_text().split("= ")[1]
            page.get_by_text(f"Examples at τ = {released}").first.wait_for()  # the table follows the release
            _wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "early-exit.png"))

            # the honest run: chosen on every other example of the whole task, measured on the rest
            page.get_by_role("button", name="Honest run on all 153 examples").click()
            page.get_by_text("Held-out accuracy").wait_for()
            _wait_idle(page)
            honest = page.get_by_text("measured on 77 held-out").first.inner_text()
            assert page.locator("[data-testid='stException']").count() == 0
            assert page.locator("[data-testid='stAlertContentError']").count() == 0
            page.mouse.move(0, 0)  # no tooltip over the results
            _scroll_main(page, 100_000)
            page.screenshot(path=str(ARTIFACTS / "early-exit-honest.png"))

    assert nobody[4] == "30.0 / 30"  # tau 0: no checkpoint is confident, the full model answers
    assert float(nobody[1].rstrip("%")) >= 100.0  # ...and pays for its checkpoints on top
    assert float(everybody[4].split("/")[0]) < 30  # the largest tau: every example exits early
    assert float(everybody[1].rstrip("%")) < 100.0
    assert marker_nobody[0] >= 1.0 > marker_everybody[0]  # the marker on the trade-off curve moved left...
    assert marker_nobody[2] != marker_everybody[2]  # ...on the screen too
    assert "chosen on 76 calibration examples" in honest and "over the vocabulary" in honest


def test_a_fresh_server_slides_a_built_in_task_without_a_sweep(cache_without_lenses):
    """A teacher's first minute: a fresh server, the Early-exit page, a built-in task, and the slider is
    live at once from the sweep shipped with the package (no Run pressed, no model run)."""
    with streamlit_server(timeout=120, log_path=ARTIFACTS / "streamlit-shipped.log") as url:
        with chromium_page(1280, 900) as page:
            _early_exit_task(page, url, "antonyms")
            page.get_by_text("This sweep shipped with spade-viz").wait_for()
            page.locator(LIVE_SLIDER).scroll_into_view_if_needed()
            frame, _ = _live(page)
            slider = frame.locator("#tau")
            slider.focus()
            slider.press("Home")
            nobody = _metrics(frame)
            slider.press("End")
            everybody = _metrics(frame)
            assert page.locator("[data-testid='stException']").count() == 0
    assert nobody[4] == "30.0 / 30" and float(everybody[4].split("/")[0]) < 30
