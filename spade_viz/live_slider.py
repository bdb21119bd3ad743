"""The Early-exit page's threshold slider, run in the browser (a small Streamlit component).

Streamlit reruns a script (or a fragment) on every widget change and re-sends its figures: about
a second per slider step on a busy machine. Here every slider position's numbers arrive once
(`exit.session.slider_grid`), and the browser redraws the metrics, the marker on the trade-off
curve and the exit histogram itself on each key press or drag step. Only on release does the
threshold come back to the server, for what follows it there (the examples table, the real exit).

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

from . import decoders


def _frontend_folder() -> Path:
    """index.html and plotly.min.js side by side, in the cache folder (a temp folder if unwritable)."""
    from .models.loading import cache_dir  # here, not at the top: the page paints before torch loads

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


def live_threshold_slider(grid: dict, tradeoff, value: float, key: str, large: bool = False):
    """Draw the in-browser slider, its metrics, the trade-off figure (drawn once; the browser moves the
    current threshold's point over it) and the exit-layer histogram; returns the last released
    threshold as {"tau": float, "id": str} (the id tells a new release from one already seen), or None."""
    return _component()(
        grid=grid, tradeoff=json.loads(tradeoff.to_json()), value=float(value), large=large, key=key, default=None,
        colours={"hybrid": decoders.colour("hybrid"), "full": decoders.colour("full")},
        payload_id=hashlib.sha256(json.dumps(grid).encode()).hexdigest()[:16],
    )
