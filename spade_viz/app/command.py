"""The `spade-viz` command (`python -m spade_viz`): the CLI, plus `app`, the warm start.

`spade-viz app [streamlit flags]` does before the first visitor what the first visitor would wait
for: import the engine, load the default model (in server mode every allowed model, up to
`max_models`) into the very pool the sessions use (`models.model_pool`), and analyse the Explore
page's first preset into the shared store. It prints when it is ready, then serves Streamlit in the
same process (headless, no usage statistics, server mode's own flags), so all of it stays warm.
In server mode each computation gets one math thread (unless `OMP_NUM_THREADS` says otherwise):
sessions run side by side on the cores.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .. import cli
from ..errors import InputError
from ..serve import ServeSettings

CHECKOUT_APP = Path(__file__).resolve().parents[2] / "app.py"  # the app runs from the checkout


def main(argv: list[str] | None = None) -> int:
    """The command line, with `app` served here."""
    return cli.main(argv, app=serve)


def app_script() -> Path:
    """The app's entry point: `app.py` in the current folder, else the checkout's; InputError if none."""
    for path in (Path.cwd() / "app.py", CHECKOUT_APP):
        if path.is_file() and (path.parent / "pages").is_dir():
            return path
    raise InputError("the app runs from a checkout of spade-viz: no app.py (with its pages/) here or beside the "
                     "package; run the command in the checkout")


def warm_up(settings: ServeSettings, say=print) -> None:
    """Load the models the sessions will ask for into their pool and analyse the first preset."""
    import spade_viz as sv  # deferred (and below): the app's modules load torch and Streamlit

    from . import analyses, models
    from .datasets import presets

    if settings.enabled and "OMP_NUM_THREADS" not in os.environ:
        import torch

        # A class computes many sessions at once: one math thread each lets them share the cores
        # instead of spinning against each other (a third of the CPU per analysis on a busy machine).
        torch.set_num_threads(1)
    started = time.perf_counter()
    names = settings.choices(sv.DEFAULT_MODEL)[: settings.max_models] if settings.enabled else (sv.DEFAULT_MODEL,)
    pool = models.model_pool(settings.max_models)
    loaded = [pool.get((name, "auto", "fp32"), progress=lambda done, total, message: say(f"  {message}"))
              for name in names]  # the keys `models.requested_key` asks for
    say(f"loaded {', '.join(lm.name for lm in loaded)} in {time.perf_counter() - started:.1f} s")
    tick = time.perf_counter()
    res = analyses.analysis(loaded[0], presets()[0].text)
    sv.viz.answer_heatmap(res)  # the first figure also loads plotly's validators
    say(f"analysed the first preset in {time.perf_counter() - tick:.1f} s")


def _say_when_serving(say=print, poll: float = 0.2) -> None:
    """Print the address once Streamlit answers its health check (the config is read by then)."""
    from streamlit import config  # deferred: loaded with the server

    while True:
        time.sleep(poll)
        address = config.get_option("server.address") or "localhost"
        url = f"http://{'localhost' if address in ('0.0.0.0', '::') else address}:{config.get_option('server.port')}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    say(f"spade-viz is ready: {url}", flush=True)
                    return
        except OSError:
            continue


def serve(streamlit_flags: list[str]) -> None:
    """Warm up, then run Streamlit on `app.py` in this process (until it is stopped)."""
    settings = ServeSettings.from_env()  # bad server-mode settings: InputError before any work
    script = app_script()
    started = time.perf_counter()
    quiet = logging.getLogger("streamlit.runtime.caching.cache_data_api")  # "no runtime yet": expected here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    warm_up(settings, say=lambda line: print(line, flush=True))
    quiet.setLevel(level)
    print(f"warm in {time.perf_counter() - started:.1f} s; starting the server", flush=True)
    from streamlit.runtime.pages_manager import PagesManager  # deferred: only this command serves
    from streamlit.web import cli as streamlit_cli

    # Streamlit runs a full garbage collection after every script run (`runner.postScriptGC`): with torch,
    # transformers and the model loaded that walks ~450k objects, about 0.25 CPU-s a run, half of a cached
    # visit's cost. What is alive now (modules, the server's included, models, the warm analysis) moves to
    # the permanent generation, so the collections walk only the sessions' objects. A model or analysis
    # dropped later is still freed, by its reference count (it holds no reference cycle: tests/test_app.py).
    gc.collect()
    gc.freeze()

    # The pages are declared by st.navigation in app.py. Streamlit would take pages/ for a page list of
    # its own until app.py first runs, and the first visitor's direct link would see "Page not found".
    PagesManager.uses_pages_directory = False

    # No source watcher: it walks every imported module (torch, transformers) after each new session's
    # first run, the largest part of a session's own server CPU; `--server.fileWatcherType auto` brings it back.
    flags = ["--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    flags += settings.streamlit_flags() if settings.enabled else []
    threading.Thread(target=_say_when_serving, daemon=True).start()
    streamlit_cli.main(args=["run", str(script), *flags, *streamlit_flags], prog_name="streamlit",
                       standalone_mode=False)


if __name__ == "__main__":
    sys.exit(main())
