"""What the download buttons write: file names and facts that say what was exported.

Pure text helpers (no Streamlit): a file stem naming the model, the prompt or task and the
settings; the same facts as a `<name>.meta.json` file beside a CSV, as a `spade_viz_export` entry
of a JSON export, and as a `<title>` plus `<meta>` tags of an HTML figure.

A CSV export is plain (`frame.to_csv(index=False)`: a header row, then data), so `pd.read_csv(path)`
reads it as it is; its facts go to the side file, never into `#` lines (which `read_csv` would take
for data, and which `comment="#"` would cut out of any row holding a `#` token). The side file is
named like the CLI's own `sweep --out results.csv` -> `results.meta.json`, where `exit-curve
--sweep` looks for a sweep's model and cost.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import PurePath

STEM_CHARS = 120  # file names stay well under every file system's limit


def slug(text: object, limit: int = 32) -> str:
    """A file-name-safe piece of `text`: letters, digits, dots, dashes and underscores; '' for nothing usable."""
    piece = re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-._")
    return piece[:limit].rstrip("-._")


def file_stem(*parts: object) -> str:
    """`spade-viz_<part>_<part>...`: the non-empty parts slugged (a model's path keeps its last name)."""
    pieces = ["spade-viz"]
    for part in parts:
        text = str(part or "").rstrip("/")
        if "/" in text:  # a Hub id or a folder: its last name
            text = text.rsplit("/", 1)[-1]
        piece = slug(text)
        if piece:
            pieces.append(piece)
    return "_".join(pieces)[:STEM_CHARS].rstrip("_-.")


def export_meta(meta: Mapping[str, object]) -> dict:
    """The facts of an export with the app's name and the time it was made (UTC, to the second)."""
    when = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    return {"exported_by": "spade-viz", "exported_at": when, **{k: v for k, v in meta.items() if v is not None}}


def meta_file_name(data_file: str) -> str:
    """The side file of a CSV export: `<stem>.meta.json` for `<stem>.csv`."""
    return PurePath(data_file).with_suffix(".meta.json").name


def csv_meta(meta: Mapping[str, object], data_file: str) -> str:
    """The text of a CSV's side file (`meta_file_name`): its facts, and the name of the CSV they describe."""
    return json.dumps({**meta, "data_file": PurePath(data_file).name}, indent=1, ensure_ascii=False)


def json_with_meta(payload: dict, meta: Mapping[str, object]) -> dict:
    """A JSON export with its facts under `spade_viz_export`, first."""
    return {"spade_viz_export": dict(meta), **payload}


def html_with_meta(page: str, meta: Mapping[str, object], title: str) -> str:
    """A full HTML page (plotly's `to_html`) with a `<title>` and one `<meta>` per fact in its head."""
    tags = f"<title>{html.escape(title)}</title>" + "".join(
        f'<meta name="spade-viz:{html.escape(str(key))}" content="{html.escape(str(value))}">'
        for key, value in meta.items())
    if "<head>" in page:
        return page.replace("<head>", "<head>" + tags, 1)
    return tags + page
