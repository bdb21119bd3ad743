"""Server mode: visitors pick among the operator's models only, never reach the server's files, do not
change each other's model, wait their turn for heavy jobs, and meet the upload limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import spade_viz as sv
from apptest import open_page
from spade_viz.app import jobs, models
from spade_viz.cli import main
from spade_viz.serve import JobQueue, ServeSettings

ROOT = Path(__file__).resolve().parent.parent
EXPLORE = str(ROOT / "pages" / "explore.py")
TIMEOUT = 180


@pytest.fixture
def served(tiny_folders, tmp_path, monkeypatch) -> list[str]:
    """Server mode with two tiny models allowed, room for both, a 1 KB upload limit."""
    models = [str(tiny_folders["llama"]), str(tiny_folders["qwen2"])]
    settings = tmp_path / "serve.toml"
    settings.write_text(f"models = {json.dumps(models)}\nmax_models = 2\nmax_upload_mb = 1\nmax_rows = 5\n")
    monkeypatch.setenv("SPADE_VIZ_SERVE", str(settings))
    monkeypatch.setenv("SPADE_VIZ_CACHE", str(tmp_path / "cache"))
    return models


def _messages(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.error, *at.sidebar.error])


def test_settings_off_by_default_and_from_a_file(tmp_path):
    assert ServeSettings.from_env({}) == ServeSettings()
    assert ServeSettings().allows("/any/folder", "smollm2-135m")  # a single user keeps every power
    on = ServeSettings.from_env({"SPADE_VIZ_SERVE": "1"})
    assert on.enabled and on.choices("smollm2-135m") == ("smollm2-135m",) and not on.allows("/etc", "smollm2-135m")
    assert "--server.enableXsrfProtection" in on.streamlit_flags()
    bad = tmp_path / "bad.toml"
    for text, complaint in (("max_models = 0", "at least 1"), ("colour = 1", "unknown"), ("models = []", "list"),
                            ("visitors_save = 1", "true or false"), ("max_rows = ", "cannot read")):
        bad.write_text(text)
        with pytest.raises(sv.InputError, match=complaint):
            ServeSettings.from_env({"SPADE_VIZ_SERVE": str(bad)})


@pytest.mark.parametrize("typed", ["/etc", "/etc/passwd", "Qwen/Qwen2.5-0.5B", "~/.cache/spade-viz"])
def test_a_typed_path_or_hub_id_is_refused_naming_no_file(served, typed):
    at = open_page("pages/explore.py", TIMEOUT)
    at.session_state["sv_model"] = models.OTHER  # as a crafted session would: the picker offers no such thing
    at.session_state["sv_model_path"] = typed
    at.session_state["sv_model"] = typed
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="sv_model").value == served[0]  # the operator's first model, not the typed one
    assert not any(text_input.key == "sv_model_path" for text_input in at.sidebar.text_input)  # no box to type in
    shown = " ".join(str(el.value) for kind in ("markdown", "caption", "error", "warning", "info")
                     for el in [*at.get(kind), *at.sidebar.get(kind)])
    assert typed not in shown


def test_an_allowed_model_loads_and_a_second_session_leaves_the_first_alone(served):
    first = open_page("pages/explore.py", TIMEOUT)
    first.session_state["sv_model"] = served[0]
    first.run()
    assert not first.exception and not _messages(first)
    assert first.sidebar.selectbox(key="sv_model").options == served
    shown = [json.loads(chart.proto.spec)["data"][0]["z"] for chart in first.get("plotly_chart")[:1]]
    loads = models.MODEL_LOADS

    second = open_page("pages/explore.py", TIMEOUT)
    second.session_state["sv_model"] = served[1]
    second.run()
    assert not second.exception and not _messages(second)
    assert models.MODEL_LOADS == loads + 1

    first.run()  # the first visitor's next rerun: same model, same numbers, nothing reloaded
    assert first.sidebar.selectbox(key="sv_model").value == served[0]
    assert [json.loads(chart.proto.spec)["data"][0]["z"] for chart in first.get("plotly_chart")[:1]] == shown
    assert models.MODEL_LOADS == loads + 1


def test_an_oversized_upload_is_refused(served):
    at = open_page("pages/early_exit.py", TIMEOUT)
    at.session_state["sv_model"] = served[0]
    at.run()
    at.radio(key="ee_source").set_value("Upload a file").run()
    rows = [json.dumps({"prompt": f"Country {i}:", "answer": " Paris"}) for i in range(60_000)]
    at.file_uploader(key="ee_upload").upload("big.jsonl", "\n".join(rows).encode(), "application/jsonl").run()
    assert not at.exception
    assert "accepts files of up to 1 MB" in _messages(at)
    small = "\n".join(rows[:8]).encode()  # 8 rows: under the size, over the 5-row limit
    at.file_uploader(key="ee_upload").upload("rows.jsonl", small, "application/jsonl").run()
    assert "has 8 rows; this server accepts up to 5" in _messages(at)


def test_heavy_jobs_beyond_the_limit_wait_their_turn_in_order():
    queue = JobQueue(capacity=1)
    seen: dict[str, list[int]] = {"second": [], "third": []}
    order = []
    first_in = threading.Event()
    release = threading.Event()

    def job(name):
        with queue.slot(on_wait=lambda position: seen[name].append(position), poll=0.02):
            order.append(name)
            if name == "first":
                first_in.set()
                release.wait(5)

    threads = [threading.Thread(target=job, args=("first",))]
    threads[0].start()
    first_in.wait(5)
    for name in ("second", "third"):
        threads.append(threading.Thread(target=job, args=(name,)))
        threads[-1].start()
        time.sleep(0.1)
    time.sleep(0.2)
    assert order == ["first"]  # the others wait while the one slot is taken...
    assert seen["second"][-1] == 1 and seen["third"][-1] == 2  # ...and are told their place
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first", "second", "third"]


def test_a_waiting_job_that_is_interrupted_gives_its_place_up():
    queue = JobQueue(capacity=1)
    with queue.slot():
        def give_up(position):
            raise KeyboardInterrupt  # a visitor who left (Streamlit stops a script by raising)

        with pytest.raises(KeyboardInterrupt):
            with queue.slot(on_wait=give_up):
                pass
        assert queue.position(object()) == 0 and not queue._waiting
    with queue.slot():  # the slot is free again
        pass


@pytest.mark.slow
@pytest.mark.browser
def test_server_mode_in_chromium_offers_only_the_operators_models(cache_without_lenses, monkeypatch):
    from browser import chromium_available, chromium_page, streamlit_server

    if not chromium_available():
        pytest.skip("chromium is not installed")
    monkeypatch.setenv("SPADE_VIZ_SERVE", "1")  # the defaults: the embedded default model only
    with streamlit_server(timeout=120) as url, chromium_page(1280, 900) as page:
        page.set_default_timeout(240_000)
        page.goto(f"{url}/Explore")
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4")
        page.locator(".st-key-sv_model").click()
        options = page.get_by_role("option").all_inner_texts()
        assert len(options) == 1 and "embedded default" in options[0]  # no "Other: Hub id, folder…"
        page.keyboard.press("Escape")
        assert page.locator(".st-key-sv_model_path").count() == 0 and page.locator(".st-key-sv_device").count() == 0
        assert page.locator("[data-testid='stException']").count() == 0


def test_a_heavy_job_beyond_the_limit_waits_and_says_so_on_the_page(served):
    """Another visitor's sweep holds the server's one heavy-job slot: this visitor's sweep waits for it,
    shown its place in the queue, and then runs."""
    at = open_page("pages/early_exit.py", TIMEOUT)
    at.session_state["sv_model"] = served[0]
    at.run()
    at.number_input(key="ee_limit").set_value(6).run()
    held, release = threading.Event(), threading.Event()

    def another_visitors_job():
        with jobs._job_queue(models.serve_settings().max_heavy_jobs).slot():
            held.set()
            release.wait(30)

    other = threading.Thread(target=another_visitors_job)
    other.start()
    held.wait(10)
    threading.Timer(2.0, release.set).start()
    at.button(key="ee_run").click().run()
    other.join()
    assert not at.exception and not _messages(at)
    waited = [c.value for c in at.caption if c.value.startswith("Waited")]
    assert waited and "number 1 in the queue" in waited[0]
    assert at.get("component_instance")  # ...and then the sweep ran: the slider is there


def test_settings_broken_while_serving_keep_the_last_good_ones_and_name_no_file(served, tmp_path):
    """A serve.toml made malformed while the server runs: visitors go on with the last good settings and
    see neither its path nor its text (the operator's log says why)."""
    at = open_page("pages/explore.py", TIMEOUT)
    at.session_state["sv_model"] = served[0]
    at.run()
    assert not at.exception and not _messages(at)
    settings = tmp_path / "serve.toml"
    settings.write_text("models = [unclosed\nmax_models = -3\n")
    at.run()
    assert not at.exception, at.exception
    shown = " ".join(e.value for e in [*at.error, *at.warning, *at.sidebar.error, *at.sidebar.warning])
    assert str(settings) not in shown and "unclosed" not in shown.lower() and "Traceback" not in shown
    assert at.sidebar.selectbox(key="sv_model").options == [models.label(m) for m in served]  # still the list
    assert len(at.get("plotly_chart")) == 4  # the page still works


@pytest.mark.slow  # a fresh interpreter importing the engine
def test_the_app_command_refuses_bad_settings_in_one_line_before_any_work(tmp_path):
    env = {**os.environ, "SPADE_VIZ_SERVE": str(tmp_path / "missing.toml")}
    done = subprocess.run([sys.executable, "-m", "spade_viz", "app"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert main(["app"]) == 2  # the CLI alone cannot serve: it says how to start the app
