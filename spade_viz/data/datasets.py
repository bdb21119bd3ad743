"""Labelled prompt datasets: loading, validation and gold-token rules.

File format (built-in tasks and user uploads alike): one row per item with

* ``prompt``  -- the full text, ending right before the answer;
* ``answer``  -- the gold answer string, as it continues the prompt
  (so usually with a leading space: prompt ``"Germany:"``, answer ``" Berlin"``);
* ``choices`` -- optional list of candidate answers (the answer must be one of them);
* ``id``      -- optional; generated from the row number when missing.

Files are JSONL (one JSON object per line; a JSON array of objects is accepted
too) or CSV (header row with at least ``prompt`` and ``answer``; ``choices`` as
a JSON list or a ``|``-separated string).

Row numbers in messages are what a user sees in the file: ``line N`` for
JSONL (1-based physical line), ``row N`` for CSV (1-based record number,
header = row 1, so the first data row is row 2), ``item N`` for a JSON array.

Nothing here uses pickle or eval; files are parsed with :mod:`json` and :mod:`csv`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from spade_viz.data.hf import read_hf_rows
from spade_viz.errors import InputError, lone_surrogate_at
from spade_viz.limits import DEFAULT_TOKEN_LIMIT

__all__ = [
    "MAX_BYTES",
    "MAX_ROWS",
    "AnswerSplit",
    "Dataset",
    "DatasetError",
    "Example",
    "RowError",
    "answer_split",
    "builtin_tasks",
    "choice_token_ids",
    "gold_token_id",
    "load_builtin",
    "load_dataset",
]

MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 20_000
# No tokenizer averages more characters per token (SmolLM2's longest tokens, runs of '=' or spaces,
# have 64): text longer than max_tokens x this cannot fit and is refused before it is tokenized.
MAX_CHARS_PER_TOKEN = 128

ASSETS_DIR = resources.files("spade_viz") / "assets" / "datasets"  # package data, also when installed

_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_CSV_SUFFIXES = {".csv", ".tsv"}


class DatasetError(InputError, ValueError):
    """A file that cannot be used at all; the message is one human-readable line."""


@dataclass(frozen=True)
class Example:
    """One labelled item: the prompt, its gold answer and, for multiple choice, the candidates."""

    id: str
    prompt: str
    answer: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RowError:
    """A skipped row. ``row`` is 1-based as the user sees it (see module doc);
    ``message`` already starts with ``line N:`` / ``row N:`` / ``item N:``."""

    row: int
    message: str


@dataclass(frozen=True)
class Dataset:
    """The usable examples of one file or built-in task, with the rows skipped and why."""

    name: str
    examples: tuple[Example, ...]
    errors: tuple[RowError, ...]
    source_hash: str  # sha256 hex digest of the raw file bytes
    # Rows kept but probably not meant as written (e.g. an answer glued to the
    # prompt with no space between them); same numbering as ``errors``.
    warnings: tuple[RowError, ...] = ()

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def has_choices(self) -> bool:
        return any(ex.choices is not None for ex in self.examples)

    def notes(self, limit: int = 12) -> list[str]:
        """One line per skipped row (bad rows, duplicate ids) and per warning (answers glued to the
        prompt, rows too long to tokenize), at most `limit` of them plus a count of the rest: what the
        CLI prints and the pages show."""
        lines = [w.message for w in self.warnings if w.row == 0] + [f"skipped {e.message}" for e in self.errors]
        lines += [w.message for w in self.warnings if w.row != 0]
        if len(lines) > limit:
            lines = lines[: limit - 1] + [f"... and {len(lines) - limit + 1} more (skipped rows and warnings)"]
        return lines

    def head(self, n: int) -> "Dataset":
        """The first `n` examples as a dataset of their own, with its own hash (its own sweep cache entry)."""
        if n >= len(self.examples):
            return self
        digest = hashlib.sha256(f"{self.source_hash}:first{int(n)}".encode()).hexdigest()
        return replace(self, examples=self.examples[:n], errors=(), source_hash=digest)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def load_dataset(path_or_bytes: Any, name: str | None = None, fmt: str | None = None) -> Dataset:
    """Load and validate a JSONL/CSV dataset.

    ``path_or_bytes`` is a path (str/Path), raw bytes, or a file-like object
    with ``read()``/``getvalue()`` (e.g. a Streamlit upload, whose ``.name`` is
    used for the name and format when not given). ``fmt`` is ``"jsonl"``,
    ``"json"``, ``"csv"`` or ``"tsv"``; inferred from the file suffix, else
    sniffed from the content. Bad rows are skipped and listed in ``errors``;
    a file with no usable row raises :class:`DatasetError`.
    """
    if name is not None and not isinstance(name, str) or fmt is not None and not isinstance(fmt, str):
        raise DatasetError(f"name and fmt must be text or None, not {type(name).__name__} and {type(fmt).__name__}")
    raw, src_name = _read_raw(path_or_bytes)
    if name is None:
        name = Path(src_name).stem if src_name else "uploaded"
    fmt = _resolve_format(fmt, src_name, raw)
    source_hash = hashlib.sha256(raw).hexdigest()

    text = _decode(raw)
    if not text.strip():
        raise DatasetError("The file is empty.")

    if fmt == "csv" or fmt == "tsv":
        rows = _csv_rows(text, delimiter="\t" if fmt == "tsv" else _sniff_delimiter(text))
        label = "row"
    elif text.lstrip().startswith("["):
        rows = _json_array_rows(text)
        label = "item"
    else:
        rows = _jsonl_rows(text)
        label = "line"

    examples, errors, warnings = _validate(rows, label)
    if not examples and not errors:
        raise DatasetError("The file has no data rows" + (" (only a header)." if label == "row" else "."))
    if not examples:
        total = len(errors)
        first = "; ".join(e.message for e in errors[:2])
        more = f" (and {total - 2} more)" if total > 2 else ""
        raise DatasetError(f"No valid rows in the file: {first}{more}.")
    return Dataset(
        name=name,
        examples=tuple(examples),
        errors=tuple(errors),
        source_hash=source_hash,
        warnings=tuple(warnings),
    )


def builtin_tasks() -> dict[str, Path]:
    """Built-in task name -> its JSONL file in the package's ``assets/datasets``, sorted by name."""
    if not ASSETS_DIR.is_dir():
        return {}
    files = sorted((p for p in ASSETS_DIR.iterdir() if p.name.endswith(".jsonl")), key=lambda p: p.name)
    return {p.name.removesuffix(".jsonl"): Path(str(p)) for p in files}


def load_builtin(name: str) -> Dataset:
    """A built-in task by name (see `builtin_tasks`), e.g. ``load_builtin("capitals")``."""
    if not isinstance(name, str):
        raise DatasetError(f"a built-in task is named by text, not {type(name).__name__} {name!r}")
    tasks = builtin_tasks()
    if name not in tasks:
        available = ", ".join(tasks) or "none found"
        raise DatasetError(f"Unknown built-in task {name!r} (available: {available}).")
    return load_dataset(tasks[name], name=name, fmt="jsonl")


def load_task_or_file(spec: str) -> Dataset:
    """A dataset file path, the name of a built-in task, or an ``hf:`` Hugging Face dataset (what the
    CLI's --dataset takes)."""
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise DatasetError(f"name a dataset file or a built-in task, not {spec!r}")
    if isinstance(spec, str) and spec.startswith("hf:"):
        return load_hf_dataset(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return load_dataset(path)
    if path.is_dir():
        raise DatasetError(f"{spec} is a folder, not a dataset file")
    if spec in builtin_tasks():
        return load_builtin(spec)
    raise DatasetError(f"no such dataset file or built-in task: {spec!r} "
                       f"(built-in: {', '.join(builtin_tasks()) or 'none'})")


def load_hf_dataset(spec: str) -> Dataset:
    """A benchmark from the Hugging Face ecosystem, ``hf:SOURCE[:CONFIG][:SPLIT][:key=value]...``
    (grammar and templates in `spade_viz.data.hf`): its template's rows, validated like a file's rows."""
    try:
        read = read_hf_rows(spec, max_rows=MAX_ROWS)
    except InputError as err:
        raise DatasetError(str(err)) from None
    examples, errors, warnings = _validate(read.rows, "row")
    if not examples:
        first = "; ".join(e.message for e in errors[:2])
        more = f" (and {len(errors) - 2} more)" if len(errors) > 2 else ""
        raise DatasetError(f"{spec}: no usable row with the {read.template} template: {first or 'the split is empty'}"
                           f"{more}.")
    return Dataset(name=read.name, examples=tuple(examples), errors=tuple(errors), source_hash=read.source_hash,
                   warnings=tuple(warnings))


def _read_raw(src: Any) -> tuple[bytes, str | None]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        raw = bytes(src)
        _check_size(len(raw))
        return raw, None
    if isinstance(src, (str, Path)):
        path = Path(src)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DatasetError(f"File not found: {path}") from None
        except OSError as exc:
            raise DatasetError(f"Cannot read {path}: {exc.strerror or exc}") from None
        if path.is_dir():
            raise DatasetError(f"{path} is a folder, not a dataset file.")
        _check_size(size)
        try:
            return path.read_bytes(), str(path)
        except OSError as exc:
            raise DatasetError(f"Cannot read {path}: {exc.strerror or exc}") from None
    # File-like (e.g. Streamlit's UploadedFile, io.BytesIO).
    src_name = getattr(src, "name", None)
    src_name = src_name if isinstance(src_name, str) else None
    if hasattr(src, "getvalue"):
        data = src.getvalue()
    elif hasattr(src, "read"):
        data = src.read(MAX_BYTES + 1)
    else:
        raise DatasetError(f"Cannot read a dataset from a {type(src).__name__}.")
    if isinstance(data, str):
        data = data.encode("utf-8")
    _check_size(len(data))
    return bytes(data), src_name


def _check_size(n: int) -> None:
    if n > MAX_BYTES:
        raise DatasetError(
            f"The file is {n / 2**20:.1f} MB; the limit is {MAX_BYTES // 2**20} MB. "
            "Split it into smaller files."
        )


def _resolve_format(fmt: str | None, src_name: str | None, raw: bytes) -> str:
    if fmt is not None:
        f = fmt.lower().lstrip(".")
        if f == "ndjson":
            f = "jsonl"
        if f not in {"jsonl", "json", "csv", "tsv"}:
            raise DatasetError(f"Unknown format {fmt!r}: use 'jsonl' or 'csv'.")
        return f
    if src_name:
        suffix = Path(src_name).suffix.lower()
        if suffix in _JSONL_SUFFIXES:
            return "jsonl"
        if suffix in _CSV_SUFFIXES:
            return suffix[1:]
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "jsonl" if head in (b"{", b"[") else "csv"


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"The file is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8."
        ) from None


# A parsed row: (user-visible row number, dict of fields or an error string).
_Row = tuple[int, "dict[str, Any] | str"]


def _too_many_rows() -> DatasetError:
    return DatasetError(f"The file has more than {MAX_ROWS} rows; the limit is {MAX_ROWS}. Split it.")


def _json(text: str) -> Any:
    """json.loads, where nesting too deep for Python's parser and integers too long for int() are
    JSONDecodeErrors too (each row's problem, not a crash)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # Python's limit on integer digits (4,300)
        raise json.JSONDecodeError("a number with too many digits", text, 0) from None


def _jsonl_rows(text: str) -> list[_Row]:
    rows: list[_Row] = []
    # Split on "\n" only: str.splitlines() would also split on U+2028 and other
    # separators that may legally appear inside a JSON string.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if len(rows) >= MAX_ROWS:
            raise _too_many_rows()
        try:
            obj = _json(line)
        except json.JSONDecodeError as exc:
            rows.append((lineno, f"invalid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(obj, dict):
            rows.append((lineno, f"expected a JSON object {{...}}, got {_json_type(obj)}"))
            continue
        rows.append((lineno, obj))
    if rows and all(isinstance(r, str) for _, r in rows):
        # Nothing parsed as a JSON object at all: most likely not JSONL.
        _, first = rows[0]
        raise DatasetError(f"Not a JSONL file: line {rows[0][0]}: {first}.")
    return rows


def _json_array_rows(text: str) -> list[_Row]:
    try:
        data = _json(text)
    except json.JSONDecodeError as exc:
        # Could still be JSONL whose first line starts with '[' -- treat as JSONL.
        try:
            return _jsonl_rows(text)
        except DatasetError:
            raise DatasetError(f"Invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    if not isinstance(data, list):
        raise DatasetError("Expected a JSON list of objects or one JSON object per line.")
    if len(data) > MAX_ROWS:
        raise _too_many_rows()
    rows: list[_Row] = []
    for i, obj in enumerate(data, start=1):
        if isinstance(obj, dict):
            rows.append((i, obj))
        else:
            rows.append((i, f"expected a JSON object {{...}}, got {_json_type(obj)}"))
    return rows


def _csv_rows(text: str, delimiter: str = ",") -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError("The file is empty.") from None
    except csv.Error as exc:
        raise DatasetError(f"Cannot parse the CSV header: {exc}.") from None
    cols = [h.strip().lower() for h in header]
    index = _csv_columns(header, cols)
    rows: list[_Row] = []
    rowno = 1
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rowno += 1
            rows.append((rowno, f"cannot parse CSV ({exc})"))
            break
        rowno += 1
        if not any(cell.strip() for cell in rec):
            continue
        if len(rows) >= MAX_ROWS:
            raise _too_many_rows()
        if len(rec) > len(cols) and any(c.strip() for c in rec[len(cols):]):
            rows.append((rowno, f"{len(rec)} cells but the header has {len(cols)} columns (unquoted comma?)"))
            continue
        obj: dict[str, Any] = {}
        for c, i in index.items():
            obj[c] = rec[i] if i < len(rec) else None
        # Tolerant CSV: empty optional cells mean "absent".
        for opt in ("choices", "id"):
            if opt in obj and (obj[opt] is None or not str(obj[opt]).strip()):
                del obj[opt]
        if "choices" in obj:
            parsed = _parse_choice_cell(obj["choices"])
            if isinstance(parsed, str):
                rows.append((rowno, parsed))
                continue
            obj["choices"] = parsed
        rows.append((rowno, obj))
    return rows


def _csv_columns(header: list[str], cols: list[str]) -> dict[str, int]:
    """Column name -> its index; refuses a header without prompt and answer, or with a repeated name."""
    missing = [c for c in ("prompt", "answer") if c not in cols]
    if missing:
        shown = ", ".join(repr(h) for h in header[:8]) or "none"
        raise DatasetError(
            f"The CSV header must name the columns 'prompt' and 'answer' "
            f"(missing {', '.join(repr(m) for m in missing)}; found {shown})."
        )
    dupes = sorted({c for c in cols if c and cols.count(c) > 1})
    if dupes:
        raise DatasetError(f"The CSV header repeats the column(s) {', '.join(map(repr, dupes))}.")
    return {c: i for i, c in enumerate(cols) if c}


def _sniff_delimiter(text: str) -> str:
    """',' unless the header line clearly uses ';' or a tab (spreadsheet exports)."""
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    for d in (";", "\t"):
        if d in header:
            return d
    return ","


def _parse_choice_cell(cell: str) -> list[Any] | str:
    s = cell.strip()
    if s.startswith("["):
        try:
            val = _json(cell)
        except json.JSONDecodeError as exc:
            return f"choices looks like a JSON list but is not valid JSON ({exc.msg})"
        if not isinstance(val, list):
            return "choices must be a list"
        return val
    return cell.split("|")


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    return "an object"


def _validate(
    rows: Iterable[_Row], label: str
) -> tuple[list[Example], list[RowError], list[RowError]]:
    rows = list(rows)
    errors: list[RowError] = []
    warnings: list[RowError] = []
    # ids given explicitly, so generated ones can avoid them
    explicit_ids: set[str] = set()
    for _, obj in rows:
        if isinstance(obj, dict):
            rid = obj.get("id")
            if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip():
                explicit_ids.add(str(rid).strip())

    seen: dict[str, int] = {}
    examples: list[Example] = []
    glued_rows = 0
    for rowno, obj in rows:
        where = f"{label} {rowno}"
        if isinstance(obj, str):
            errors.append(RowError(rowno, f"{where}: {obj}"))
            continue
        problem = _check_row(obj)
        if isinstance(problem, str):
            errors.append(RowError(rowno, f"{where}: {problem}"))
            continue
        prompt, answer, choices = problem

        rid = obj.get("id")
        if rid is None or (isinstance(rid, str) and not rid.strip()):
            ex_id = f"{label}-{rowno}"
            while ex_id in explicit_ids:
                ex_id += "_"
        elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
            errors.append(RowError(rowno, f"{where}: id must be a string or an integer, got {_json_type(rid)}"))
            continue
        else:
            ex_id = str(rid).strip()
        if ex_id in seen:
            errors.append(RowError(rowno, f"{where}: duplicate id {ex_id!r} (first used on {label} {seen[ex_id]})"))
            continue
        seen[ex_id] = rowno
        examples.append(Example(id=ex_id, prompt=prompt, answer=answer, choices=choices))
        glued = _glued_answer(prompt, answer)
        if glued:
            glued_rows += 1
            warnings.append(RowError(rowno, f"{where}: {glued}"))
        long = overlong(prompt, DEFAULT_TOKEN_LIMIT)
        if long:
            warnings.append(RowError(rowno, f"{where}: the prompt has {long}: it is skipped unless the token "
                                            "limit is raised (`max_tokens`)"))
    if glued_rows >= 2 and glued_rows * 2 >= len(examples):
        warnings.insert(0, RowError(0, f"{glued_rows} of {len(examples)} answers follow their prompt with no "
                                       "space: a model's next word usually starts with one (' Berlin' after "
                                       "'Germany:'), so these are scored as glued-on tokens and accuracy will be "
                                       "near zero; fix: start each answer with a space"))
    return examples, errors, warnings


def overlong(text: str, max_tokens: int) -> str | None:
    """Why `text` cannot fit in `max_tokens` tokens with any tokenizer (more than `MAX_CHARS_PER_TOKEN`
    characters per token), checked without tokenizing it; None when it may fit."""
    if len(text) <= max_tokens * MAX_CHARS_PER_TOKEN:
        return None
    return f"{len(text):,} characters, more than {max_tokens} tokens can hold"


def _glued_answer(prompt: str, answer: str) -> str | None:
    """A note when the answer starts a word right after the prompt's last word or
    colon (``"Germany:" + "Berlin"``): then it is scored as written, glued on."""
    last, first = prompt[-1], answer[0]
    if last.isspace() or not first.isalnum():
        return None
    if not (last.isalnum() or last in ":;?!.=>"):
        return None
    tail = prompt[-200:].rstrip().rsplit(None, 1)[-1][-20:]
    return (
        f"the answer {answer!r} follows {tail!r} with no space, so it is scored as "
        f"{(tail + answer)[:40]!r}; if a space belongs there, write the answer as {' ' + answer!r}"
    )


def _invalid_text(**fields: str) -> str | None:
    """A problem when a field holds a lone surrogate (what a JSON escape of half a character pair
    decodes to): no tokenizer can read it."""
    for name, text in fields.items():
        at = lone_surrogate_at(text)
        if at is not None:
            label = name if name.startswith("choice ") else f"'{name}'"
            return f"{label} holds an invalid character (a lone surrogate, {text[at]!r}) at position {at}"
    return None


def _check_row(obj: dict[str, Any]) -> tuple[str, str, tuple[str, ...] | None] | str:
    """Return (prompt, answer, choices) or a problem description."""
    lower = {str(k).strip().lower(): v for k, v in obj.items()}
    if "prompt" not in lower or lower["prompt"] is None:
        return "missing 'prompt'"
    prompt = lower["prompt"]
    if not isinstance(prompt, str):
        return f"'prompt' must be a string, got {_json_type(prompt)}"
    if not prompt.strip():
        return "empty 'prompt'"

    if "answer" not in lower or lower["answer"] is None:
        return "missing 'answer'"
    answer = lower["answer"]
    if not isinstance(answer, str):
        return (
            f"'answer' must be a string, got {_json_type(answer)} "
            f"(write it as text, with the leading space if the answer follows one, e.g. \" {answer}\")"
        )
    if not answer.strip():
        return "empty 'answer'"

    bad = _invalid_text(prompt=prompt, answer=answer)
    if bad:
        return bad
    choices_val = lower.get("choices")
    if choices_val is None:
        return prompt, answer, None
    problem = _check_choices(choices_val, answer)
    return problem if problem else (prompt, answer, tuple(choices_val))


def _check_choices(choices_val: Any, answer: str) -> str | None:
    """What is wrong with a row's `choices` (given its answer), or None."""
    if not isinstance(choices_val, list):
        return f"'choices' must be a list of strings, got {_json_type(choices_val)}"
    if len(choices_val) < 2:
        return "'choices' needs at least two entries"
    for i, c in enumerate(choices_val, start=1):
        if not isinstance(c, str):
            return f"choice {i} must be a string, got {_json_type(c)}"
        if not c.strip():
            return f"choice {i} is empty"
    bad = _invalid_text(**{f"choice {i}": c for i, c in enumerate(choices_val, start=1)})
    if bad:
        return bad
    if len(set(choices_val)) != len(choices_val):
        dup = next(c for c in choices_val if choices_val.count(c) > 1)
        return f"'choices' lists {dup!r} twice"
    if answer not in choices_val:
        near = [c for c in choices_val if c.strip() == answer.strip()]
        hint = (
            f" (it matches {near[0]!r} except for spaces; spaces matter for tokenization)"
            if near
            else ""
        )
        return f"answer {answer!r} is not one of the choices {choices_val!r}{hint}"
    return None


# --------------------------------------------------------------------------
# Gold-token rules
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerSplit:
    """How a tokenizer splits ``prompt + answer``.

    ``context_ids`` are the tokens of ``prompt + answer`` before the first
    answer token and ``gold_id`` is that token. Normally ``context_ids`` equals
    the prompt's own tokens; when BPE merges across the boundary (e.g. a
    prompt ending in a space, ``"Germany: " + "Berlin"``) the split happens
    earlier and ``merged`` is True: ``context_ids`` is then a strict prefix of
    the prompt's tokens (``prompt_len`` tokens), which is what the model
    should see to be scored on ``gold_id``.
    """

    context_ids: tuple[int, ...]
    gold_id: int
    prompt_len: int

    @property
    def merged(self) -> bool:
        return len(self.context_ids) != self.prompt_len


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens.

    Accepts a transformers tokenizer (callable) or a raw ``tokenizers.Tokenizer``
    (whose ``encode`` returns an ``Encoding`` with ``.ids``).
    """
    if callable(tokenizer):
        enc = tokenizer(text, add_special_tokens=False)
        ids = enc["input_ids"]
    else:
        enc = tokenizer.encode(text, add_special_tokens=False)
        ids = getattr(enc, "ids", enc)
    ids = list(ids)
    if ids and isinstance(ids[0], (list, tuple)):  # batched output
        ids = list(ids[0])
    return [int(i) for i in ids]


def answer_split(tokenizer: Any, prompt: str, answer: str) -> AnswerSplit:
    """Split ``prompt + answer`` at the first answer token (see :class:`AnswerSplit`).

    The rule: tokenize ``prompt + answer`` and ``prompt`` (no special tokens);
    the gold token is the token of the joint tokenization at the first index
    where the two differ (or right after the prompt when the prompt's tokens
    are a prefix). The answer is used verbatim: store ``" Berlin"`` after a
    prompt ending in ``"Germany:"``.
    """
    if not answer:
        raise ValueError("empty answer: there is no gold token")
    p_ids = _encode(tokenizer, prompt)
    full = _encode(tokenizer, prompt + answer)
    n = min(len(p_ids), len(full))
    k = 0
    while k < n and p_ids[k] == full[k]:
        k += 1
    if k >= len(full):
        raise ValueError(
            f"the answer {answer!r} adds no token after the prompt for this tokenizer"
        )
    return AnswerSplit(context_ids=tuple(full[:k]), gold_id=full[k], prompt_len=len(p_ids))


def gold_token_id(tokenizer: Any, prompt: str, answer: str) -> int:
    """First token of ``answer`` as the tokenizer splits it after ``prompt``."""
    return answer_split(tokenizer, prompt, answer).gold_id


def choice_token_ids(tokenizer: Any, prompt: str, choices: Sequence[str]) -> list[int]:
    """First token of each choice after ``prompt`` (same rule as :func:`gold_token_id`).

    Raises ``ValueError`` when two choices share a first token (the model could
    not tell them apart on one token) or when the choices split the prompt at
    different points (their first tokens would not be read at one position).
    """
    splits = [answer_split(tokenizer, prompt, c) for c in choices]
    ids = [s.gold_id for s in splits]
    owner: dict[int, str] = {}
    for c, t in zip(choices, ids):
        if t in owner:
            raise ValueError(
                f"choices {owner[t]!r} and {c!r} start with the same token ({t}); "
                "make their first words differ"
            )
        owner[t] = c
    ctx_lens = {len(s.context_ids) for s in splits}
    if len(ctx_lens) > 1:
        raise ValueError(
            "the choices merge with the end of the prompt differently; "
            "end the prompt without trailing whitespace and start each choice with a space"
        )
    return ids
