"""What a person feels, measured in a real browser against a real `streamlit run` server.

- first paint: a fresh server, the landing page opened: navigation start -> title, sidebar and
  explanation visible (the model loads behind a status);
- first heatmap: a fresh server, the Explore page opened: navigation start -> first heatmap drawn;
- the threshold slider at N examples (default 1000: a real sweep's arrays tiled to N and stored in
  the sweep cache under the key the page looks up): key press -> metrics, marker and histogram
  updated and painted (measured inside the page), median and maximum over many presses, and how
  long after a release the server's examples table follows.

Everything runs on a temporary `SPADE_VIZ_CACHE` (the user's converted models linked in): the
user's own cache is never written.

    python bench/browser_latency.py [--examples 1000] [--presses 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import spade_viz as sv  # noqa: E402
from browser import chromium_page, streamlit_server  # noqa: E402
from spade_viz.data import load_builtin, load_dataset  # noqa: E402
from spade_viz.models.loading import cache_dir  # noqa: E402
from spade_viz.sweep import run_sweep, save_cached, sweep_cache_key  # noqa: E402

WATCH_JS = """() => {  // inside the slider's frame: key press -> next painted frame after the metrics change
    window.__latencies = [];
    let pressed = null;
    document.getElementById('tau').addEventListener('keydown', () => { pressed = performance.now(); }, true);
    new MutationObserver(() => {
        if (pressed === null) return;
        const start = pressed; pressed = null;
        requestAnimationFrame(() => setTimeout(() => window.__latencies.push(performance.now() - start), 0));
    }).observe(document.getElementById('metrics'), {childList: true, subtree: true});
}"""


def tiled_upload(lm, examples: int, folder: Path) -> Path:
    """A JSONL of `examples` rows (capitals tiled, ids made unique) whose sweep is a real capitals sweep's
    arrays tiled likewise, stored in the sweep cache where the page will look for it."""
    task = load_builtin("capitals")
    real = run_sweep(lm, task)
    rows = [{"id": f"{e.id}-{i // len(task)}", "prompt": e.prompt, "answer": e.answer}
            for i, e in zip(range(examples), (task.examples * (examples // len(task) + 1)))]
    path = folder / f"capitals-{examples}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    dataset = load_dataset(path.read_bytes(), name=path.stem, fmt="jsonl")
    order = np.arange(examples) % real.num_examples
    tile = lambda arrays: {k: v[order] for k, v in arrays.items()}  # noqa: E731
    tiled = replace(real, dataset_name=dataset.name, dataset_hash=dataset.source_hash,
                    example_ids=[r["id"] for r in rows], n_tokens=real.n_tokens[order], gold_ids=real.gold_ids[order],
                    final_ids=real.final_ids[order], n_choices=real.n_choices[order], top1=tile(real.top1),
                    entropy=tile(real.entropy), entropy_vocab=tile(real.entropy_vocab),
                    top1_vocab=tile(real.top1_vocab))
    save_cached(sweep_cache_key(lm, dataset), tiled)
    return path


def first_paint(url: str) -> tuple[float, float]:
    """(landing page painted, Explore's first heatmap) in ms from navigation start, each on a fresh page."""
    with chromium_page(1280, 900) as page:
        page.set_default_timeout(300_000)
        page.goto(url, wait_until="commit")
        page.get_by_role("heading", name="spade-viz").wait_for()
        page.locator("[data-testid='stSidebar']").wait_for()
        landing = page.evaluate("performance.now()")
    with chromium_page(1280, 900) as page:
        page.set_default_timeout(300_000)
        page.goto(f"{url}/Explore", wait_until="commit")
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .heatmaplayer').length > 0",
                               polling="raf")
        heatmap = page.evaluate("performance.now()")
    return landing, heatmap


def slider(url: str, upload: Path, examples: int, presses: int) -> tuple[list[float], float]:
    """Key-press latencies (ms) of the live slider, and the release -> examples-table time (ms)."""
    with chromium_page(1280, 1000) as page:
        page.set_default_timeout(300_000)
        page.goto(f"{url}/Early_exit")
        page.get_by_text("how early can the model stop").wait_for()
        page.get_by_text("Upload a file").click()
        page.locator(".st-key-ee_upload input[type='file']").set_input_files(str(upload))
        limit = page.locator(".st-key-ee_limit input")
        limit.wait_for()
        limit.fill(str(examples))
        limit.press("Enter")
        page.get_by_text("Operating points", exact=True).wait_for()  # the stored sweep, no model run
        page.locator("iframe[title*='live_slider']").scroll_into_view_if_needed()  # frames load when in view
        frame = next(f for f in _frames(page) if f.url.split("?")[0].endswith("index.html"))
        frame.locator("[data-testid='live-metric-value']").first.wait_for()
        frame.evaluate(WATCH_JS)
        knob = frame.locator("#tau")
        knob.focus()
        knob.press("Home")
        time.sleep(1.0)
        frame.evaluate("window.__latencies = []")
        for i in range(presses):
            knob.press("ArrowRight" if i % 8 < 6 else "PageUp")
            time.sleep(0.12)
        latencies = frame.evaluate("window.__latencies")
        shown = frame.locator("#tau-value").inner_text().split("= ")[1]
        start = time.perf_counter()
        page.get_by_text(f"Examples at τ = {shown}").first.wait_for()
        table = (time.perf_counter() - start) * 1000
    return latencies, table


def _frames(page):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        frames = [f for f in page.frames if "live_slider" in f.url]
        if frames:
            return frames
        time.sleep(0.2)
    raise TimeoutError("the live slider never appeared")


def import_seconds() -> float:
    """Wall seconds a fresh Python takes to import torch and transformers' causal-LM classes: the part of
    the first heatmap's wait that comes before any model or page work."""
    code = "import torch, transformers; from transformers import AutoModelForCausalLM"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--presses", type=int, default=40)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        # a cache of its own (the server inherits it): the tiled sweep and the slider's files never land in
        # the user's cache; only the converted models are shared, read through a link
        models = cache_dir() / "models"
        models.mkdir(parents=True, exist_ok=True)
        cache = Path(folder) / "cache"
        cache.mkdir()
        (cache / "models").symlink_to(models, target_is_directory=True)
        os.environ["SPADE_VIZ_CACHE"] = str(cache)
        lm = sv.load_model(sv.DEFAULT_MODEL)
        upload = tiled_upload(lm, args.examples, Path(folder))
        imports = import_seconds()
        with streamlit_server(timeout=120, warm=False) as url:  # fresh: nothing loaded yet
            landing, heatmap = first_paint(url)
            latencies, table = slider(url, upload, args.examples, args.presses)
    print(f"first paint (landing page, fresh server): {landing:.0f} ms; first Explore heatmap: {heatmap / 1000:.1f} s "
          f"(importing torch and transformers takes {imports:.1f} s in a fresh process)")
    print(f"threshold slider at {args.examples} examples, {len(latencies)} key presses: key press -> metrics, "
          f"marker and histogram painted: median {statistics.median(latencies):.1f} ms, "
          f"max {max(latencies):.1f} ms")
    print(f"release -> examples table updated by the server: {table:.0f} ms")


if __name__ == "__main__":
    main()
