"""The dataset picker of the Early-exit and Compare pages, and the Explore page's presets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import streamlit as st

from ..data import DatasetError, builtin_tasks, load_builtin, load_dataset, load_hf_dataset
from .chrome import show_error
from .models import serve_settings
from .state import BUILTIN, HUB, UPLOAD, DataChoice
from .widgets import bind

PRESETS_FILE = resources.files("spade_viz") / "assets" / "presets.json"  # package data


@st.cache_data(max_entries=16, show_spinner=False)
def _builtin_dataset(name: str):
    return load_builtin(name)


@st.cache_data(max_entries=8, show_spinner=False)
def _uploaded_dataset(raw: bytes, name: str):
    stem, dot, ext = name.rpartition(".")
    return load_dataset(raw, name=stem if dot else name, fmt=ext if dot else None)


@st.cache_data(max_entries=8, show_spinner="Loading the Hugging Face dataset…")
def _hf_dataset(spec: str):
    """Once per spec: a Hub download or a large Parquet file is not read again on every rerun."""
    return load_hf_dataset(spec)


def dataset_picker(prefix: str, choice: DataChoice):
    """A built-in task, an uploaded file or a Hugging Face dataset (widget keys `{prefix}_...`), as
    `choice` says; None until one is usable.

    A file with bad rows is shown with its row-numbered errors and used only once the user agrees
    to drop those rows. Hugging Face datasets are not offered in server mode: their specs name
    paths on the server and downloads to its disk.
    """
    tasks = list(builtin_tasks())
    sources = [BUILTIN, UPLOAD] + ([] if serve_settings().enabled else [HUB])
    if choice.source not in sources:
        choice.source = BUILTIN
    if choice.task not in tasks:
        choice.task = tasks[0] if tasks else None
    st.radio("Data", sources, horizontal=True, label_visibility="collapsed",
             **bind(choice, "source", f"{prefix}_source"))
    if choice.source == HUB:
        return _hf_picker(prefix, choice)
    if choice.source == BUILTIN:
        if not tasks:
            st.error("No built-in tasks were found in assets/datasets.")
            return None
        st.selectbox("Task", tasks, help="Few-shot prompts whose gold answer is the next token.",
                     **bind(choice, "task", f"{prefix}_task"))
        return _builtin_dataset(choice.task)
    return _upload_picker(prefix)


def _upload_picker(prefix: str):
    upload = st.file_uploader(
        "A JSONL or CSV file with `prompt` and `answer` (optional `choices`, `id`)", key=f"{prefix}_upload",
        type=["jsonl", "json", "ndjson", "csv", "tsv"],
        help="The answer continues the prompt, usually with its leading space: prompt 'Germany:', answer ' Berlin'.",
    )
    if upload is None:
        return None
    serve = serve_settings()
    if upload.size > serve.max_upload_mb * 2**20:
        show_error(f"{upload.name} is {upload.size / 2**20:.1f} MB; this server accepts files of up to "
                   f"{serve.max_upload_mb} MB")
        return None
    try:
        dataset = _uploaded_dataset(upload.getvalue(), upload.name)
    except DatasetError as err:
        show_error(err)
        return None
    if len(dataset) + len(dataset.errors) > serve.max_rows:
        show_error(f"{upload.name} has {len(dataset) + len(dataset.errors)} rows; this server accepts up to "
                   f"{serve.max_rows}")
        return None
    if dataset.errors:
        bad = len(dataset.errors)
        st.warning(f"{bad} row{'s' if bad > 1 else ''} of {upload.name} cannot be used ({len(dataset)} can):")
        st.code("\n".join(e.message for e in dataset.errors[:20]) + (f"\n… and {bad - 20} more" if bad > 20 else ""),
                language=None)
        if not st.checkbox(f"Use the {len(dataset)} good rows without the bad ones", key=f"{prefix}_accept_partial"):
            return None
    if dataset.warnings:  # kept rows that are probably not what was meant: answers glued on, rows too long
        shown = [w.message for w in dataset.warnings]
        st.warning(f"{len(shown)} warning{'s' if len(shown) > 1 else ''} about {upload.name}: "
                   + " · ".join(shown[:5]) + (f" · … and {len(shown) - 5} more" if len(shown) > 5 else ""),
                   icon=":material/warning:")
    return dataset


def _hf_picker(prefix: str, choice: DataChoice):
    """The "Hugging Face dataset" source: a spec typed in, loaded once per spec."""
    st.text_input(
        "Hugging Face dataset", placeholder="hf:allenai/ai2_arc:ARC-Easy:test",
        help="hf:ID[:CONFIG][:SPLIT] -- a Hub id (from the Hub or the local cache), a folder written by "
             "save_to_disk, or a .parquet/.arrow file; options last, e.g. :shots=5:limit=200. The split defaults "
             "to test, else validation, else train.", **bind(choice, "hf_spec", f"{prefix}_hf_spec"))
    st.caption("ARC, MMLU, HellaSwag, HeadQA and BoolQ are recognised from their columns and become lettered "
               "questions answered by ' A', ' B'… (BoolQ: ' yes'/' no'); a dataset with `prompt` and `answer` "
               "columns is used as it is.")
    spec = choice.hf_spec.strip()
    if not spec:
        return None
    try:
        dataset = _hf_dataset(spec if spec.startswith("hf:") else "hf:" + spec)
    except DatasetError as err:
        show_error(err)
        return None
    notes = dataset.notes(6)
    if notes:
        st.warning(f"{len(dataset)} examples from {dataset.name}; " + " · ".join(notes), icon=":material/warning:")
    return dataset


@dataclass(frozen=True)
class Preset:
    """One Explore-page example prompt: `note` is shown under the picker; `expected` is the correct
    answer's first token."""

    name: str
    text: str
    note: str = ""
    expected: str = ""


@st.cache_data(show_spinner=False)
def presets() -> list[Preset]:
    """The Explore-page presets from assets/presets.json."""
    data = json.loads(PRESETS_FILE.read_text(encoding="utf-8"))
    return [Preset(p["name"], p["text"], p.get("note", ""), p.get("expected", "")) for p in data["presets"]]
