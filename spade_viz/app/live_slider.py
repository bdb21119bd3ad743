"""The Early-exit page's threshold slider, run in the browser (a small Streamlit component).

Streamlit reruns a script on every widget change and re-sends its figures: about a second per
slider step on a busy machine. Here every slider position's numbers arrive once
(`exit.session.slider_grid`), and the browser redraws the metrics, the marker on the trade-off
curve and the exit histogram itself on each key press or drag step. Only on release does the
threshold go back to the server, whose page state then holds it (the examples table, the link and
the real exit follow it).

The page's state is the one truth: the slider is told the value to show on every run, and shows it
unless the user is moving it or the server has not yet taken in the user's last release (its
`release_id`), so a rerun never snaps the slider back to an older value.

The frontend is one HTML file shipped with the package; Plotly's own bundle is copied beside it
into the cache folder once, so the component works offline.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import plotly
import streamlit.components.v1 as components

from .. import decoders


def _frontend_folder() -> Path:
    """index.html and plotly.min.js side by side, in the cache folder (a temp folder if unwritable)."""
    from ..models.loading import cache_dir  # deferred: the page paints before torch loads

    html = resources.files("spade_viz") / "assets" / "live_slider" / "index.html"
    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    for root in (cache_dir(), Path(tempfile.gettempdir()) / "spade-viz"):
        folder = root / "components" / f"live_slider-{plotly.__version__}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "plotly.min.js").exists():
                shutil.copyfile(bundle, folder / ".plotly.min.js.tmp")
                (folder / ".plotly.min.js.tmp").replace(folder / "plotly.min.js")
            page = html.read_text(encoding="utf-8")
            if not (folder / "index.html").exists() or (folder / "index.html").read_text(encoding="utf-8") != page:
                (folder / ".index.html.tmp").write_text(page, encoding="utf-8")
                (folder / ".index.html.tmp").replace(folder / "index.html")
            return folder
        except OSError:
            continue
    raise OSError("no writable folder for the slider component (set SPADE_VIZ_CACHE)")


@functools.cache
def _component():
    return components.declare_component("live_slider", path=str(_frontend_folder()))


def live_threshold_slider(grid: dict, tradeoff, value: float, release_id: str | None, notes: list[str], key: str,
                          large: bool = False):
    """Draw the in-browser slider at `value` (a threshold of `grid`), its metrics with `notes` beside
    them (and a warning wherever accuracy falls more than 2 points below the full model's), the
    trade-off figure (drawn once; the browser moves the current threshold's point over it) and the
    exit-layer histogram. A release sets the component's value (`st.session_state[key]`, which the
    page reads at the start of its next run) to {"tau": float, "id": str}; `release_id` is the id of
    the last release the page state took in."""
    return _component()(
        grid=grid, tradeoff=json.loads(tradeoff.to_json()), value=float(value), release_id=release_id,
        notes=list(notes), large=large, key=key, default=None,
        colours={"hybrid": decoders.colour("hybrid"), "full": decoders.colour("full")},
        payload_id=hashlib.sha256(json.dumps(grid).encode()).hexdigest()[:16],
    )
