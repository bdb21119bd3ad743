"""Dataset loading, validation and gold-token rules (fast, offline)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spade_viz.data import (
    MAX_ROWS,
    Dataset,
    DatasetError,
    Example,
    answer_split,
    builtin_tasks,
    choice_token_ids,
    gold_token_id,
    load_builtin,
    load_dataset,
)
from spade_viz.data import datasets as dsmod

MIN_ITEMS = {
    "capitals": 100,
    "translation_en_fr": 100,
    "antonyms": 100,
    "next_item": 100,
    "element_names": 100,
    "multiple_choice": 100,
    "yes_no": 100,
    "multiple_choice_cloze": 100,
}


# --------------------------------------------------------------------------
# Tokenizers built offline
# --------------------------------------------------------------------------

_CORPUS = [
    "France: Paris\nJapan: Tokyo\nItaly: Rome\nEgypt: Cairo\nGermany: Berlin\n",
    "Spain: Madrid\nBerlin Berlin Berlin Paris Tokyo Rome Cairo Madrid\n",
    "Question: Is Paris in France?\nAnswer: Yes\nAnswer: No\nAnswer: A B C D\n",
    "hot -> cold\nbig -> small\nc, d, e, f\n1,2,3,4,5,6,7,8,9,10\n",
] * 20


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A GPT-2-style byte-level BPE (space folded into the next token as 'Ġ')."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<bos>"],
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>")


@pytest.fixture(scope="module")
def word_tokenizer():
    """A WordLevel tokenizer that splits on whitespace and keeps spaces apart,
    like tokenizers that put a space in a token of its own."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", " ", ":", "\n", "Germany", "Berlin", "Paris", "Answer", "Yes", "No", "A", "B"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex(r"\s|\w+|[^\w\s]"), behavior="isolated"
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


# --------------------------------------------------------------------------
# Built-in tasks
# --------------------------------------------------------------------------


def test_builtin_task_list():
    tasks = builtin_tasks()
    assert set(MIN_ITEMS) <= set(tasks)
    for path in tasks.values():
        assert path.suffix == ".jsonl" and path.is_file()


@pytest.mark.parametrize("name", sorted(MIN_ITEMS))
def test_builtin_task_is_clean(name):
    ds = load_builtin(name)
    assert ds.name == name
    assert ds.errors == ()
    assert len(ds.examples) >= MIN_ITEMS[name]
    assert len({ex.id for ex in ds.examples}) == len(ds.examples)
    assert len({ex.prompt for ex in ds.examples}) == len(ds.examples), "duplicate prompts"
    for ex in ds.examples:
        # The prompt ends right before the answer; the answer carries the space.
        assert not ex.prompt[-1].isspace(), ex.id
        assert ex.answer.startswith(" ") or ex.prompt.endswith(","), ex.id


def test_builtin_choice_tasks_are_balanced():
    mc = load_builtin("multiple_choice")
    letters = [ex.answer for ex in mc.examples]
    assert all(ex.choices == (" A", " B", " C", " D") for ex in mc.examples)
    counts = {L: letters.count(L) for L in (" A", " B", " C", " D")}
    assert max(counts.values()) - min(counts.values()) <= 1, counts

    yn = load_builtin("yes_no")
    assert all(ex.choices == (" Yes", " No") for ex in yn.examples)
    yes = sum(ex.answer == " Yes" for ex in yn.examples)
    assert yes * 2 == len(yn.examples)


def test_capitals_exact_format():
    ds = load_builtin("capitals")
    shots = "France: Paris\nJapan: Tokyo\nItaly: Rome\nEgypt: Cairo\n"
    by_country = {}
    for ex in ds.examples:
        assert ex.prompt.startswith(shots) and ex.prompt.endswith(":")
        country = ex.prompt[len(shots):-1]
        assert "\n" not in country
        by_country[country] = ex.answer
    assert by_country["Germany"] == " Berlin"
    assert not {"France", "Japan", "Italy", "Egypt"} & set(by_country)
    for disputed in ("Bolivia", "Eswatini", "Israel", "Palestine", "Sri Lanka", "Netherlands"):
        assert disputed not in by_country


def test_unknown_builtin():
    with pytest.raises(DatasetError, match="available"):
        load_builtin("no_such_task")


def test_builtin_gold_tokens_with_bpe(bpe_tokenizer):
    # Every built-in item yields a gold token without a boundary merge.
    for name in ("capitals", "yes_no", "multiple_choice", "next_item"):
        ds = load_builtin(name)
        for ex in ds.examples[::8]:
            sp = answer_split(bpe_tokenizer, ex.prompt, ex.answer)
            assert not sp.merged, (name, ex.id)
            if ex.choices:
                ids = choice_token_ids(bpe_tokenizer, ex.prompt, ex.choices)
                assert sp.gold_id in ids


# --------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------


def _jsonl(rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


GOOD = [
    {"id": "a", "prompt": "Germany:", "answer": " Berlin"},
    {"id": "b", "prompt": "Is Paris in France?\nAnswer:", "answer": " Yes", "choices": [" Yes", " No"]},
    {"prompt": "Spain:", "answer": " Madrid"},
]


def test_jsonl_roundtrip(tmp_path: Path):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(_jsonl(GOOD))
    ds = load_dataset(path)
    assert isinstance(ds, Dataset)
    assert ds.name == "mine" and ds.errors == ()
    assert ds.examples == (
        Example("a", "Germany:", " Berlin", None),
        Example("b", "Is Paris in France?\nAnswer:", " Yes", (" Yes", " No")),
        Example("line-3", "Spain:", " Madrid", None),
    )
    import hashlib

    assert ds.source_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    # Same bytes as an upload give the same dataset.
    up = load_dataset(path.read_bytes(), name="mine", fmt="jsonl")
    assert up == ds


def _csv_bytes(rows, header=("id", "prompt", "answer", "choices")) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode()


def test_csv_roundtrip_matches_jsonl():
    rows = []
    for r in GOOD:
        ch = r.get("choices")
        rows.append([r.get("id", ""), r["prompt"], r["answer"], json.dumps(ch) if ch else ""])
    ds = load_dataset(_csv_bytes(rows), name="mine", fmt="csv")
    assert ds.errors == ()
    # Multi-line prompts survive CSV quoting; leading spaces are kept.
    assert [(e.prompt, e.answer, e.choices) for e in ds.examples] == [
        (e.prompt, e.answer, e.choices) for e in load_dataset(_jsonl(GOOD), fmt="jsonl").examples
    ]
    assert ds.examples[2].id == "row-4"  # header is row 1


def test_csv_pipe_choices_and_format_inference(tmp_path: Path):
    data = _csv_bytes([["", "Answer:", " B", " A| B| C| D"]])
    path = tmp_path / "up.csv"
    path.write_bytes(data)
    ds = load_dataset(path)
    assert ds.examples[0].choices == (" A", " B", " C", " D")
    # Upload without a format: sniffed as CSV; a .jsonl name wins over sniffing.
    assert load_dataset(data).examples[0].choices == (" A", " B", " C", " D")
    assert load_dataset(io.BytesIO(_jsonl(GOOD[:1]))).examples[0].answer == " Berlin"


def test_semicolon_csv_and_unicode_line_separator():
    ds = load_dataset("prompt;answer\nGermany:; Berlin\n".encode(), fmt="csv")
    assert ds.examples[0].answer == " Berlin"
    # U+2028 inside a JSON string is not a line break for JSONL.
    ds = load_dataset(_jsonl([{"prompt": "a\u2028b:", "answer": " c"}]), fmt="jsonl")
    assert ds.examples[0].prompt == "a\u2028b:" and ds.errors == ()


def test_glued_answer_is_kept_with_a_warning():
    rows = [
        {"prompt": "Germany:", "answer": "Berlin"},     # glued: warn
        {"prompt": "Germany:", "answer": " Berlin"},    # fine
        {"prompt": "Germany: ", "answer": "Berlin"},    # space in the prompt: fine
        {"prompt": "3,4,5,", "answer": "6"},            # digit sequence: fine
    ]
    ds = load_dataset(_jsonl(rows), fmt="jsonl")
    assert len(ds.examples) == 4 and ds.errors == ()
    assert [w.row for w in ds.warnings] == [1]
    assert ds.warnings[0].message.startswith("line 1: ") and "' Berlin'" in ds.warnings[0].message
    for name in builtin_tasks():
        assert load_builtin(name).warnings == (), name


def test_json_array_accepted():
    ds = load_dataset(json.dumps(GOOD).encode(), fmt="json")
    assert len(ds.examples) == 3 and ds.examples[2].id == "item-3"


def test_bad_jsonl_rows_are_reported_and_skipped():
    rows = [
        GOOD[0],                                                   # line 1 ok
        "{not json",                                               # line 2
        {"prompt": "", "answer": " x"},                            # line 3
        {"prompt": "P:", "answer": ""},                            # line 4
        {"prompt": "P:"},                                          # line 5
        {"prompt": "P:", "answer": " x", "choices": " x, y"},      # line 6
        {"prompt": "P:", "answer": " z", "choices": [" x", " y"]}, # line 7
        {"prompt": "P:", "answer": " x", "choices": [" x", ""]},   # line 8
        {"id": "a", "prompt": "Q:", "answer": " y"},               # line 9 duplicate id
        "[1, 2]",                                                  # line 10
        {"prompt": "P:", "answer": 7},                             # line 11
        "",                                                        # line 12 blank: ignored
        {"prompt": "P:", "answer": "x", "choices": [" x", " y"]},  # line 13
        GOOD[2],                                                   # line 14 ok
    ]
    ds = load_dataset(_jsonl(rows), name="bad", fmt="jsonl")
    assert [e.id for e in ds.examples] == ["a", "line-14"]
    by_row = {e.row: e.message for e in ds.errors}
    assert sorted(by_row) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    for row, msg in by_row.items():
        assert msg.startswith(f"line {row}: "), msg
        assert "\n" not in msg
    assert "invalid JSON" in by_row[2]
    assert "empty 'prompt'" in by_row[3]
    assert "empty 'answer'" in by_row[4]
    assert "missing 'answer'" in by_row[5]
    assert "list" in by_row[6]
    assert "not one of the choices" in by_row[7]
    assert "choice 2 is empty" in by_row[8]
    assert "duplicate id 'a'" in by_row[9] and "line 1" in by_row[9]
    assert "JSON object" in by_row[10]
    assert "must be a string" in by_row[11]
    assert "spaces" in by_row[13]


def test_bad_csv_rows_use_row_numbers():
    data = _csv_bytes([
        ["x", "Germany:", " Berlin", ""],      # row 2 ok
        ["y", "", " Paris", ""],               # row 3 empty prompt
        ["z", "Q:", " Yes", "[\" Yes\", \" No\""],  # row 4 broken JSON list
        ["w", "Q:", " No", " Yes| No"],        # row 5 ok
    ])
    ds = load_dataset(data, name="up", fmt="csv")
    assert [e.id for e in ds.examples] == ["x", "w"]
    assert [(e.row, e.message.split(":")[0]) for e in ds.errors] == [(3, "row 3"), (4, "row 4")]


@pytest.mark.parametrize(
    "data, fmt, pattern",
    [
        (b"", "jsonl", "empty"),
        (b"   \n\n", None, "empty"),
        (b"hello there\nthis is text\n", "jsonl", "Not a JSONL file"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", None, "UTF-8"),
        (b"question,reply\nA,B\n", "csv", "'prompt' and 'answer'"),
        (_jsonl([{"prompt": "", "answer": ""}, {"foo": 1}]), "jsonl", "No valid rows"),
        (b'{"prompt": 1}', "xml", "Unknown format"),
    ],
)
def test_unusable_files_raise_one_line(data, fmt, pattern):
    with pytest.raises(DatasetError, match=pattern) as info:
        load_dataset(data, name="f", fmt=fmt)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_and_limits(tmp_path: Path, monkeypatch):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope.jsonl")
    monkeypatch.setattr(dsmod, "MAX_BYTES", 100)
    with pytest.raises(DatasetError, match="limit is"):
        load_dataset(b"x" * 101, fmt="jsonl")
    monkeypatch.setattr(dsmod, "MAX_BYTES", 10**6)
    monkeypatch.setattr(dsmod, "MAX_ROWS", 3)
    with pytest.raises(DatasetError, match="more than 3 rows"):
        load_dataset(_jsonl(GOOD * 2), fmt="jsonl")
    assert MAX_ROWS >= 10_000


# --------------------------------------------------------------------------
# Gold-token rule
# --------------------------------------------------------------------------


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_gold_token_leading_space_bpe(bpe_tokenizer):
    tok = bpe_tokenizer
    berlin = _ids(tok, " Berlin")
    assert len(berlin) == 1, tok.convert_ids_to_tokens(berlin)  # 'ĠBerlin'
    prompt = "France: Paris\nGermany:"
    # Stored convention: answer with its leading space.
    assert gold_token_id(tok, prompt, " Berlin") == berlin[0]
    # Prompt ending in the space, answer without: BPE merges across the boundary;
    # the divergence point still gives 'ĠBerlin', and the context drops the bare space.
    sp = answer_split(tok, prompt + " ", "Berlin")
    assert sp.gold_id == berlin[0]
    assert sp.merged and list(sp.context_ids) == _ids(tok, prompt)
    # No space anywhere: the answer is glued to the prompt, and that is what is scored.
    glued = gold_token_id(tok, prompt, "Berlin")
    assert glued == _ids(tok, "Berlin")[0] and glued != berlin[0]


def test_gold_token_space_as_own_token(word_tokenizer):
    tok = word_tokenizer
    space, berlin = _ids(tok, " ")[0], _ids(tok, "Berlin")[0]
    assert _ids(tok, " Berlin") == [space, berlin]
    # Here the first token of " Berlin" is the bare space, by the rule.
    assert gold_token_id(tok, "Germany:", " Berlin") == space
    sp = answer_split(tok, "Germany: ", "Berlin")
    assert sp.gold_id == berlin and not sp.merged


def test_gold_token_raw_tokenizers_object(bpe_tokenizer):
    raw = bpe_tokenizer.backend_tokenizer
    assert gold_token_id(raw, "Germany:", " Berlin") == gold_token_id(bpe_tokenizer, "Germany:", " Berlin")


def test_gold_token_rejects_empty_answer(bpe_tokenizer):
    with pytest.raises(ValueError):
        gold_token_id(bpe_tokenizer, "Germany:", "")


def test_choice_tokens_distinct(bpe_tokenizer):
    tok = bpe_tokenizer
    ids = choice_token_ids(tok, "Answer:", [" A", " B", " C", " D"])
    assert len(set(ids)) == 4
    assert ids[1] == gold_token_id(tok, "Answer:", " B")
    yn = choice_token_ids(tok, "Answer:", [" Yes", " No"])
    assert len(set(yn)) == 2
    with pytest.raises(ValueError, match="same token"):
        choice_token_ids(tok, "Germany:", [" Berlin", " Berlin Mitte"])


def test_choice_tokens_on_the_default_models_tokenizer(default_lm):
    """Every built-in task splits cleanly on the real tokenizer (reached through the project's own loader)."""
    tok = default_lm.tokenizer
    assert tok.convert_ids_to_tokens(gold_token_id(tok, "Germany:", " Berlin")) == "ĠBerlin"
    assert tok.convert_ids_to_tokens(choice_token_ids(tok, "Answer:", [" A", " B", " C", " D"])) == [
        "ĠA", "ĠB", "ĠC", "ĠD"
    ]
    for name in builtin_tasks():
        for ex in load_builtin(name).examples[::10]:
            sp = answer_split(tok, ex.prompt, ex.answer)
            assert not sp.merged, ex.id
            if ex.choices:
                assert sp.gold_id in choice_token_ids(tok, ex.prompt, ex.choices)


def test_head_is_a_dataset_of_its_own():
    full = load_builtin("capitals")
    assert full.head(len(full)) is full and full.head(10_000) is full
    head = full.head(5)
    assert head.examples == full.examples[:5] and head.errors == ()
    assert head.source_hash != full.source_hash  # its own sweep cache entry
    assert head.source_hash == full.head(5).source_hash  # and the same one each time


def test_the_generator_outside_the_package_reproduces_the_shipped_tasks(tmp_path: Path):
    """scripts/make_datasets.py writes every built-in task file byte for byte as shipped."""
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, str(root / "scripts" / "make_datasets.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    shipped = sorted((root / "spade_viz" / "assets" / "datasets").glob("*.jsonl"))
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [p.name for p in shipped]
    for path in shipped:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    assert not list((root / "spade_viz").rglob("make_datasets.py"))
