"""What the download buttons write: file names and headers that say what was exported.

Pure text helpers (no Streamlit): a file stem naming the model, the prompt or task and the
settings; the same facts as `# key: value` lines at the head of a CSV (JSON-quoted values, so a
prompt's line breaks stay on one line), as a `spade_viz_export` entry of a JSON export, and as a
`<title>` plus `<meta>` tags of an HTML figure.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone

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


def csv_header(meta: Mapping[str, object]) -> str:
    """`# key: value` lines (values as JSON: a prompt's line breaks stay on its line) for a CSV's head."""
    return "".join(f"# {key}: {json.dumps(value, ensure_ascii=False)}\n" for key, value in meta.items())


def csv_with_header(csv_text: str, meta: Mapping[str, object]) -> str:
    """A CSV whose first lines say what it holds (`read_csv_header` reads them back)."""
    return csv_header(meta) + csv_text


def read_csv_header(text: str) -> tuple[dict, int]:
    """The `# key: value` lines at the head of a CSV, as a dict, and how many lines they take."""
    meta, count = {}, 0
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        count += 1
        key, _, value = line[1:].strip().partition(": ")
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return meta, count


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
