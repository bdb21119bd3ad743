r"""Benchmarks from the Hugging Face `datasets` ecosystem as labelled prompt rows (`--dataset hf:...`).

Spec grammar (what `--dataset` and the app's "Hugging Face dataset" box take)::

    hf:SOURCE[:CONFIG][:SPLIT][:key=value]...

* ``SOURCE`` is a local Parquet file (``.parquet``), a local Arrow file (``.arrow``), a local folder
  written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or else a Hub dataset id
  (``allenai/ai2_arc``), read with ``datasets.load_dataset`` from the Hub or the local HF cache.
  A local path may contain ``:`` -- the longest leading part that exists on disk is the path.
* ``CONFIG`` is the Hub config (``ARC-Easy``); leave it empty to name a split only
  (``hf:google/boolq::validation``). Local sources have no config: ``hf:PATH[:SPLIT]``.
* ``SPLIT`` defaults to ``test`` if the source has it, else ``validation``, else ``train`` (else its
  only split); the split used ends the dataset's name (``ai2_arc-ARC-Easy-test``). A Parquet or
  Arrow file is one split.
* Options, as trailing ``key=value`` parts: ``shots=K`` (few-shot demonstrations, default 0),
  ``limit=N`` (score the first N rows after the demonstrations), ``template=NAME`` (one of
  `TEMPLATES`, instead of recognising it), and ``config=``/``split=`` (same as the positional parts).

Templates turn a benchmark's published columns into rows whose ``answer`` is the next token:

* ``generic``   -- columns ``prompt``, ``answer`` (optional ``choices``, ``id``): used as they are.
* ``arc``       -- ai2_arc: ``question``, ``choices`` {``text``, ``label``}, ``answerKey``;
  labels "1".."4" are shown as letters like any other.
* ``mmlu``      -- cais/mmlu: ``question``, ``choices`` (list), ``answer`` (0-based index).
* ``hellaswag`` -- Rowan/hellaswag: ``ctx``, ``endings``, ``label`` ("2"; "" on the unlabelled test
  split, whose rows are then skipped), optional ``activity_label``.
* ``headqa``    -- head_qa: ``qtext``, ``answers`` [{``aid``, ``atext``}], ``ra`` (the right ``aid``).
* ``boolq``     -- google/boolq (``question``, ``passage``, ``answer`` true/false) and the super_glue
  variant (``label`` 1/0; -1 unlabelled): ``"{passage}\nQuestion: {question}?\nAnswer:"`` with the
  choices ``" yes"``/``" no"``, the usual BoolQ format (a yes/no question needs no letters).

Every multiple-choice template writes one lettered format, so a model is scored on one letter::

    Question: Which gas do plants take in?
    A. oxygen
    B. carbon dioxide
    Answer:                       -> answer " B", choices (" A", " B")

Few-shot: the first ``K`` rows of the split that the template can build are the demonstrations
(question and answer, separated by a blank line, before every scored prompt) and are never scored;
the rows after them are. So no scored example is ever among its own demonstrations, and the same
spec always gives the same prompts.

Rows are numbered as in the split (``row N`` is ``dataset[N]``, 0-based); ids are the source's
``id`` column when it has one, else ``row-N``. A template never runs code from the dataset:
nothing here passes ``trust_remote_code``. Only this module's functions import `datasets` and
`pyarrow`, so ``import spade_viz`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spade_viz.errors import InputError

__all__ = ["HF_PREFIX", "TEMPLATES", "HfRows", "HfSpec", "parse_hf_spec", "read_hf_rows"]

HF_PREFIX = "hf:"
SPLIT_PREFERENCE = ("test", "validation", "train")
MAX_SHOTS = 32  # more demonstrations than this would not fit a small model's context anyway
OPTION_KEYS = ("shots", "limit", "template", "config", "split")
_TABLE_SUFFIXES = (".parquet", ".arrow")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class HfSpec:
    """A parsed ``hf:`` spec (see the module doc); ``local`` when ``source`` is a path on disk."""

    source: str
    local: bool
    config: str | None = None
    split: str | None = None
    template: str | None = None
    shots: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class HfRows:
    """What a spec yields before validation: the dataset's name, its rows as
    ``(row number, {prompt, answer[, choices][, id]} or the reason it cannot be used)``, the
    template that built them and a hash of the spec, template and row content (the sweep's cache key)."""

    name: str
    rows: list[tuple[int, dict[str, Any] | str]]
    template: str
    source_hash: str


def parse_hf_spec(spec: str) -> HfSpec:
    """Split an ``hf:SOURCE[:CONFIG][:SPLIT][:key=value]...`` spec into its parts (grammar in the module doc)."""
    if not isinstance(spec, str) or not spec.startswith(HF_PREFIX) or not spec[len(HF_PREFIX):].strip():
        raise InputError(f"a Hugging Face dataset is named hf:SOURCE[:CONFIG][:SPLIT], not {spec!r}")
    parts = spec[len(HF_PREFIX):].split(":")
    options: dict[str, str] = {}
    while len(parts) > 1 and "=" in parts[-1]:
        key, _, value = parts.pop().partition("=")
        key = key.strip()
        if key not in OPTION_KEYS:
            raise InputError(f"{spec}: unknown option {key!r} (options: {', '.join(OPTION_KEYS)})")
        if key in options:
            raise InputError(f"{spec}: option {key!r} is given twice")
        options[key] = value.strip()
    source, rest, local = _split_source(parts)
    if len(rest) > 2 or (local and len(rest) > 1):
        form = "hf:PATH[:SPLIT]" if local else "hf:ID[:CONFIG][:SPLIT]"
        raise InputError(f"{spec}: too many ':' parts for {form} (options go last as key=value)")
    if local:
        config, split = None, (rest[0] if rest else None)
    else:
        config = rest[0] if rest else None
        split = rest[1] if len(rest) > 1 else None
    config = options.get("config", config) or None
    split = options.get("split", split) or None
    if local and config:
        raise InputError(f"{spec}: a local dataset has no config; write hf:PATH[:SPLIT]")
    template = options.get("template") or None
    if template is not None and template not in TEMPLATES:
        raise InputError(f"{spec}: unknown template {template!r} (templates: {', '.join(TEMPLATES)})")
    shots = _whole(spec, "shots", options.get("shots", "0"), 0, MAX_SHOTS)
    limit = _whole(spec, "limit", options["limit"], 1, None) if "limit" in options else None
    return HfSpec(source=source, local=local, config=config, split=split, template=template, shots=shots,
                  limit=limit)


def _split_source(parts: list[str]) -> tuple[str, list[str], bool]:
    """(source, the parts after it, is it local): the longest leading run of parts that names an
    existing path (so a path may hold ':'), else the first part as a Hub id."""
    for end in range(len(parts), 0, -1):
        candidate = ":".join(parts[:end]).strip()
        if candidate and Path(candidate).expanduser().exists():
            return str(Path(candidate).expanduser()), parts[end:], True
    source = parts[0].strip()
    if not _HUB_ID.fullmatch(source) or source.lower().endswith(_TABLE_SUFFIXES):
        raise InputError(f"no such file or folder: {source!r} (and it is not a Hub dataset id like "
                         "'allenai/ai2_arc')")
    return source, parts[1:], False


def _whole(spec: str, key: str, text: str, low: int, high: int | None) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f"{low} or more"
        raise InputError(f"{spec}: {key} must be a whole number {bound}, not {text!r}")
    return value


# ---------------------------------------------------------------- reading


def read_hf_rows(spec: str, max_rows: int) -> HfRows:
    """The rows an ``hf:`` spec names, built by its template; refuses more than `max_rows` candidate rows
    (demonstrations plus scored rows) unless ``limit=`` takes fewer."""
    parsed = parse_hf_spec(spec)
    table, split = _open_table(parsed, spec)
    template_name = choose_template(table.column_names, parsed, spec)
    template = TEMPLATES[template_name]
    wanted = len(table) if parsed.limit is None else min(len(table), parsed.shots + parsed.limit)
    if wanted > max_rows:
        raise InputError(f"{spec}: the split has {len(table):,} rows; the limit is {max_rows:,}. Take fewer with "
                         f"a trailing ':limit=N'")
    records = table.select(template.columns(table.column_names)).slice(0, wanted).to_pylist()
    rows = _with_shots([(i, template.build(r)) for i, r in enumerate(records)], parsed.shots, spec)
    source = Path(parsed.source)
    stem = source.stem if parsed.local and source.is_file() else source.name  # a file's name less .parquet
    name = "-".join(p for p in (stem, parsed.config, split) if p) + (f"-{parsed.shots}shot" if parsed.shots else "")
    payload = {"spec": [parsed.source, parsed.config, split, template_name, parsed.shots, parsed.limit],
               "rows": rows}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return HfRows(name=name, rows=rows, template=template_name, source_hash=digest)


def _with_shots(built: list[tuple[int, dict[str, Any] | str]], shots: int,
                spec: str) -> list[tuple[int, dict[str, Any] | str]]:
    """The scored rows, each prompt led by the first `shots` usable rows as worked demonstrations;
    those rows themselves are left out (never scored against their own answer)."""
    if not shots:
        return built
    demos = [(i, row) for i, row in built if isinstance(row, dict) and _demonstrable(row)][:shots]
    if len(demos) < shots:
        raise InputError(f"{spec}: shots={shots} needs {shots} usable rows for the demonstrations and more to "
                         f"score; the split has {len(demos)} usable")
    taken = {i for i, _ in demos}
    lead = "".join(row["prompt"] + row["answer"] + "\n\n" for _, row in demos)
    scored = []
    for i, row in built:
        if i in taken:
            continue
        if isinstance(row, dict) and isinstance(row.get("prompt"), str):
            row = {**row, "prompt": lead + row["prompt"]}
        scored.append((i, row))
    if not scored:
        raise InputError(f"{spec}: all {len(built)} rows read are demonstrations (shots={shots}); none is left "
                         "to score")
    return scored


def _demonstrable(row: dict[str, Any]) -> bool:
    return all(isinstance(row.get(k), str) and row[k].strip() for k in ("prompt", "answer"))


def _open_table(spec: HfSpec, text: str):
    """The chosen split as a pyarrow Table, and the split's name (None for a single file)."""
    if spec.local:
        path = Path(spec.source)
        if path.is_file():
            if spec.split:
                raise InputError(f"{text}: a Parquet or Arrow file is one split; drop ':{spec.split}'")
            return _read_file_table(path), None
        return _read_saved_folder(path, spec.split, text)
    return _read_hub(spec, text)


def _read_file_table(path: Path):
    # deferred: pyarrow loads only when an hf: spec names a file
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".arrow":
            with pa.memory_map(str(path)) as source:
                try:  # what save_to_disk and the datasets cache write
                    return pa.ipc.open_stream(source).read_all()
                except pa.ArrowInvalid:
                    source.seek(0)
                    return pa.ipc.open_file(source).read_all()  # the Arrow file (Feather v2) format
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"cannot read {path}: {err}") from None
    raise InputError(f"{path} is not a .parquet or .arrow file (for JSONL or CSV, drop the 'hf:')")


def _read_saved_folder(path: Path, split: str | None, text: str):
    if not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        raise InputError(f"{text}: {path} is not a folder written by save_to_disk (it has no dataset_dict.json "
                         "or state.json); for a folder of Parquet files, name one of the files")
    import datasets  # deferred: the datasets library loads only for hf: specs

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"cannot read the saved dataset {path}: {err}") from None
    if isinstance(loaded, datasets.DatasetDict):
        split = choose_split(list(loaded), split, text)
        loaded = loaded[split]
    elif split:
        raise InputError(f"{text}: {path} holds one split (a saved Dataset, not a DatasetDict); drop ':{split}'")
    return _arrow(loaded), split


def _read_hub(spec: HfSpec, text: str):
    import datasets  # deferred: the datasets library loads only for hf: specs

    try:
        split = spec.split or choose_split(datasets.get_dataset_split_names(spec.source, spec.config), None, text)
        loaded = datasets.load_dataset(spec.source, spec.config, split=split)
    except ConnectionError:
        raise InputError(f"the Hugging Face dataset {spec.source!r} is neither in the local cache nor reachable "
                         "on the Hub (offline?); fetch it once where the Hub is reachable, or save it with "
                         "save_to_disk and name that folder") from None
    except InputError:
        raise
    except Exception as err:  # datasets raises many kinds (no such config, bad split...): one line for the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot load the Hugging Face dataset {spec.source!r}"
                         f"{f' ({spec.config})' if spec.config else ''}: {reason}") from None
    return _arrow(loaded), split


def _arrow(dataset):
    """A `datasets.Dataset` as a pyarrow Table (no decoding: images and class labels stay raw)."""
    return dataset.with_format("arrow")[0:len(dataset)]


def choose_split(available: Sequence[str], requested: str | None, spec: str) -> str:
    """`requested` if the source has it, else the first of `SPLIT_PREFERENCE` it has, else its only split."""
    available = list(available)
    if requested:
        if requested not in available:
            raise InputError(f"{spec}: no split {requested!r} (splits: {', '.join(available) or 'none'})")
        return requested
    for name in SPLIT_PREFERENCE:
        if name in available:
            return name
    if len(available) == 1:
        return available[0]
    raise InputError(f"{spec}: name a split (splits: {', '.join(available) or 'none'})")


# ---------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    """A benchmark's columns (``a|b``: either) and how one of its rows becomes a prompt row, or why not."""

    required: tuple[str, ...]
    build: Callable[[dict[str, Any]], dict[str, Any] | str]
    optional: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()  # substrings of a Hub id or file name that name this benchmark

    def missing(self, columns: Sequence[str]) -> list[str]:
        return [need for need in self.required if not any(c in columns for c in need.split("|"))]

    def columns(self, columns: Sequence[str]) -> list[str]:
        wanted = [c for need in self.required for c in need.split("|")] + list(self.optional)
        return [c for c in wanted if c in columns]


def choose_template(columns: Sequence[str], spec: HfSpec, text: str) -> str:
    """The template asked for, else the one the source's name points to, else the first whose columns
    are all there; an error names the columns missing."""
    columns = list(columns)
    if spec.template:
        missing = TEMPLATES[spec.template].missing(columns)
        if missing:
            raise InputError(f"{text}: the {spec.template} template needs the column(s) {', '.join(missing)}, "
                             f"missing here (columns: {', '.join(columns)})")
        return spec.template
    if not TEMPLATES["generic"].missing(columns):
        return "generic"
    named = (Path(spec.source).name + " " + (spec.config or "")).lower()
    hinted = next((name for name, t in TEMPLATES.items() if any(h in named for h in t.hints)), None)
    if hinted and not TEMPLATES[hinted].missing(columns):
        return hinted
    fitting = next((name for name, t in TEMPLATES.items() if not t.missing(columns)), None)
    if fitting:
        return fitting
    closest = hinted or min(TEMPLATES, key=lambda name: len(TEMPLATES[name].missing(columns)))
    raise InputError(f"{text}: the columns ({', '.join(columns)}) fit no template; {closest} lacks "
                     f"{', '.join(TEMPLATES[closest].missing(columns))} (templates: "
                     + "; ".join(f"{n}: {', '.join(t.required)}" for n, t in TEMPLATES.items()) + ")")


def _lettered(stem: str, options: Sequence[Any], gold: int) -> dict[str, Any] | str:
    """The one multiple-choice format: the stem, lettered options, "Answer:"; the gold letter is the answer."""
    if not 2 <= len(options) <= len(_LETTERS):
        return f"{len(options)} options (a multiple-choice row needs 2 to {len(_LETTERS)})"
    if not all(isinstance(o, str) for o in options):
        return "an option is not text"
    letters = _LETTERS[: len(options)]
    lines = [stem.strip()] + [f"{letter}. {option.strip()}" for letter, option in zip(letters, options)]
    return {"prompt": "\n".join(lines) + "\nAnswer:", "answer": f" {letters[gold]}",
            "choices": [f" {letter}" for letter in letters]}


def _text(row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    return value if isinstance(value, str) and value.strip() else None


def _index(value: Any, count: int) -> int | None:
    """A 0-based gold index from an int or a digit string, when it is in range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value < count else None


def _pairs(value: Any, first: str, second: str) -> list[tuple[Any, Any]] | None:
    """(first, second) pairs from a struct of two lists ({text: [...], label: [...]}, what a Sequence of a
    dict stores) or from a list of structs ([{aid, atext}, ...])."""
    if isinstance(value, dict) and isinstance(value.get(first), list) and isinstance(value.get(second), list):
        if len(value[first]) != len(value[second]):
            return None
        return list(zip(value[first], value[second]))
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return [(v.get(first), v.get(second)) for v in value]
    return None


def _generic(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "prompt", "answer", "choices") if k in row and row[k] is not None}


def _arc(row: dict[str, Any]) -> dict[str, Any] | str:
    question, key = _text(row, "question"), row.get("answerKey")
    pairs = _pairs(row.get("choices"), "text", "label")
    if question is None:
        return "no question text"
    if not pairs:
        return "'choices' is not {text: [...], label: [...]} with one label per text"
    labels = [str(label).strip() for _, label in pairs]
    if str(key).strip() not in labels:
        return f"answerKey {key!r} is not one of the labels {labels}"
    built = _lettered(f"Question: {question}", [text for text, _ in pairs], labels.index(str(key).strip()))
    if isinstance(built, dict) and _text(row, "id"):
        built["id"] = row["id"]
    return built


def _mmlu(row: dict[str, Any]) -> dict[str, Any] | str:
    question, choices = _text(row, "question"), row.get("choices")
    if question is None:
        return "no question text"
    if not isinstance(choices, list):
        return "'choices' is not a list"
    answer = row.get("answer")
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in _LETTERS:
        answer = _LETTERS.index(answer.strip().upper())
    gold = _index(answer, len(choices))
    if gold is None:
        return f"answer {row.get('answer')!r} is not the index of one of the {len(choices)} choices"
    return _lettered(f"Question: {question}", choices, gold)


def _hellaswag(row: dict[str, Any]) -> dict[str, Any] | str:
    context, endings = _text(row, "ctx"), row.get("endings")
    if context is None:
        return "no context text ('ctx')"
    if not isinstance(endings, list):
        return "'endings' is not a list"
    gold = _index(row.get("label"), len(endings))
    if gold is None:
        return f"no gold ending (label {row.get('label')!r})"
    activity = _text(row, "activity_label")
    lead = f"{activity.strip()}: " if activity else ""
    return _lettered(f"Context: {lead}{context.strip()}\nQuestion: Which ending fits best?", endings, gold)


def _headqa(row: dict[str, Any]) -> dict[str, Any] | str:
    question, right = _text(row, "qtext"), row.get("ra")
    pairs = _pairs(row.get("answers"), "aid", "atext")
    if question is None:
        return "no question text ('qtext')"
    if not pairs or not all(isinstance(aid, int) for aid, _ in pairs):
        return "'answers' is not a list of {aid, atext}"
    pairs.sort(key=lambda pair: pair[0])
    ids = [aid for aid, _ in pairs]
    if right not in ids or isinstance(right, bool):
        return f"ra {right!r} is not one of the answer ids {ids}"
    return _lettered(f"Question: {question}", [text for _, text in pairs], ids.index(right))


def _boolq(row: dict[str, Any]) -> dict[str, Any] | str:
    question, passage = _text(row, "question"), _text(row, "passage")
    if question is None or passage is None:
        return "no question or passage text"
    if "answer" in row and isinstance(row["answer"], bool):
        truth = row["answer"]
    elif not isinstance(row.get("label"), bool) and row.get("label") in (0, 1):
        truth = row["label"] == 1
    else:
        return f"no true/false answer (answer {row.get('answer')!r}, label {row.get('label')!r})"
    question = question.strip()
    question = question if question.endswith("?") else question + "?"
    return {"prompt": f"{passage.strip()}\nQuestion: {question}\nAnswer:", "answer": " yes" if truth else " no",
            "choices": [" yes", " no"]}


TEMPLATES: dict[str, Template] = {  # recognition order: the first whose columns are all there
    "generic": Template(("prompt", "answer"), _generic, optional=("choices", "id")),
    "arc": Template(("question", "choices", "answerKey"), _arc, optional=("id",),
                    hints=("ai2_arc", "arc-easy", "arc_easy", "arc-challenge", "arc_challenge")),
    "mmlu": Template(("question", "choices", "answer"), _mmlu, hints=("mmlu",)),
    "hellaswag": Template(("ctx", "endings", "label"), _hellaswag, optional=("activity_label",),
                          hints=("hellaswag",)),
    "headqa": Template(("qtext", "answers", "ra"), _headqa, hints=("head_qa", "headqa")),
    "boolq": Template(("question", "passage", "answer|label"), _boolq, hints=("boolq",)),
}
