"""`hf:` datasets: small local copies of ARC, BoolQ, HeadQA, MMLU and HellaSwag in their published schemas
(column names and feature types as on the Hub), saved with save_to_disk and as Parquet / Arrow, read back
through `load_task_or_file` into exactly the rows the templates promise; few-shot demonstrations never
scored; the default split; errors that name what is missing; and one CLI sweep end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Features, Image, List, Value

from apptest import open_page
from spade_viz.data import DatasetError, Example, load_task_or_file, parse_hf_spec
from spade_viz.data import datasets as data_module
from tiny_models import save_tiny

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- the benchmarks' published schemas

ARC_FEATURES = Features({
    "id": Value("string"),
    "question": Value("string"),
    "choices": {"text": List(Value("string")), "label": List(Value("string"))},  # Sequence({text, label})
    "answerKey": Value("string"),
})
BOOLQ_FEATURES = Features({"question": Value("string"), "answer": Value("bool"), "passage": Value("string")})
SUPER_GLUE_BOOLQ_FEATURES = Features({"question": Value("string"), "passage": Value("string"), "idx": Value("int32"),
                                      "label": ClassLabel(names=["False", "True"])})
HEADQA_FEATURES = Features({
    "name": Value("string"), "year": Value("string"), "category": Value("string"), "qid": Value("int32"),
    "qtext": Value("string"), "ra": Value("int32"), "image": Image(),
    "answers": List({"aid": Value("int32"), "atext": Value("string")}),  # a list of structs
})
MMLU_FEATURES = Features({"question": Value("string"), "subject": Value("string"),
                          "choices": List(Value("string")), "answer": ClassLabel(names=["A", "B", "C", "D"])})
HELLASWAG_FEATURES = Features({
    "ind": Value("int32"), "activity_label": Value("string"), "ctx_a": Value("string"), "ctx_b": Value("string"),
    "ctx": Value("string"), "endings": List(Value("string")), "source_id": Value("string"),
    "split": Value("string"), "split_type": Value("string"), "label": Value("string"),
})


def _arc(questions: list[tuple[str, list[str], list[str], str]], prefix: str = "Mercury_") -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "id": [f"{prefix}{i}" for i in range(len(questions))],
        "question": [q for q, _, _, _ in questions],
        "choices": [{"text": texts, "label": labels} for _, texts, labels, _ in questions],
        "answerKey": [key for _, _, _, key in questions],
    }, features=ARC_FEATURES)


ARC_TEST = [
    ("Which gas do plants take in?", ["oxygen", "carbon dioxide", "helium", "neon"], list("ABCD"), "B"),
    ("What melts ice?", ["heat", "cold", "dark"], list("ABC"), "A"),
    ("Which is a mammal?", ["trout", "frog", "whale", "ant"], ["1", "2", "3", "4"], "3"),  # numeric labels
    ("What do bees make?", ["honey", "milk", "silk", "wax", "glue"], list("ABCDE"), "A"),
    ("Which planet is red?", ["Venus", "Mars", "Earth", "Pluto"], list("ABCD"), "B"),
]


@pytest.fixture
def arc_folder(tmp_path) -> Path:
    """An ARC-Easy-like DatasetDict saved with save_to_disk: train, validation and test."""
    folder = tmp_path / "arc_easy"
    datasets.DatasetDict({
        "train": _arc([("Train question?", ["yes", "no"], list("AB"), "A")], prefix="train_"),
        "validation": _arc([("Validation question?", ["up", "down"], list("AB"), "B")], prefix="val_"),
        "test": _arc(ARC_TEST),
    }).save_to_disk(str(folder))
    return folder


# ---------------------------------------------------------------- rows, template by template


def test_arc_from_a_saved_dataset_dict_reads_the_test_split_into_lettered_questions(arc_folder):
    dataset = load_task_or_file(f"hf:{arc_folder}")
    assert dataset.name == "arc_easy-test"  # test is preferred and named
    assert not dataset.errors
    assert dataset.examples[0] == Example(
        id="Mercury_0",
        prompt="Question: Which gas do plants take in?\nA. oxygen\nB. carbon dioxide\nC. helium\nD. neon\nAnswer:",
        answer=" B", choices=(" A", " B", " C", " D"))
    assert dataset.examples[1].choices == (" A", " B", " C") and dataset.examples[1].answer == " A"
    numeric = dataset.examples[2]  # labels "1".."4" are shown as letters; answerKey "3" is C
    assert numeric.prompt == "Question: Which is a mammal?\nA. trout\nB. frog\nC. whale\nD. ant\nAnswer:"
    assert numeric.answer == " C"
    assert dataset.examples[3].choices == (" A", " B", " C", " D", " E")
    assert len(dataset) == 5


def test_the_split_can_be_named_and_defaults_to_validation_without_a_test_split(arc_folder, tmp_path):
    train = load_task_or_file(f"hf:{arc_folder}:train")
    assert train.name == "arc_easy-train" and [ex.id for ex in train.examples] == ["train_0"]
    assert load_task_or_file(f"hf:{arc_folder}:split=validation").examples[0].answer == " B"

    folder = tmp_path / "boolq"  # google/boolq publishes train and validation only
    rows = {"question": ["is the sky blue", "can fish fly?"], "answer": [True, False],
            "passage": ["The sky is blue by day.", "Most fish swim."]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=BOOLQ_FEATURES),
                          "validation": datasets.Dataset.from_dict(rows, features=BOOLQ_FEATURES)}).save_to_disk(
        str(folder))
    dataset = load_task_or_file(f"hf:{folder}")
    assert dataset.name == "boolq-validation"
    assert dataset.examples == (
        Example("row-0", "The sky is blue by day.\nQuestion: is the sky blue?\nAnswer:", " yes", (" yes", " no")),
        Example("row-1", "Most fish swim.\nQuestion: can fish fly?\nAnswer:", " no", (" yes", " no")),
    )
    with pytest.raises(DatasetError, match=r"no split 'dev' \(splits: train, validation\)"):
        load_task_or_file(f"hf:{folder}:dev")


def test_super_glue_boolq_labels_and_its_unlabelled_rows(tmp_path):
    path = tmp_path / "super_glue_boolq.parquet"
    datasets.Dataset.from_dict({"question": ["is water wet", "is fire cold", "is it unknown"],
                                "passage": ["Water is wet.", "Fire is hot.", "Nobody knows."],
                                "idx": [0, 1, 2], "label": [1, 0, -1]},
                               features=SUPER_GLUE_BOOLQ_FEATURES).to_parquet(str(path))
    dataset = load_task_or_file(f"hf:{path}")
    assert dataset.name == "super_glue_boolq"  # a file is one split: no split in the name
    assert [(ex.prompt, ex.answer) for ex in dataset.examples] == [
        ("Water is wet.\nQuestion: is water wet?\nAnswer:", " yes"),
        ("Fire is hot.\nQuestion: is fire cold?\nAnswer:", " no")]
    assert [e.message for e in dataset.errors] == ["row 2: no true/false answer (answer None, label -1)"]


def test_headqa_parquet_orders_answers_by_id_and_letters_the_right_one(tmp_path):
    path = tmp_path / "head_qa_en.parquet"
    datasets.Dataset.from_dict({
        "name": ["Cuaderno_2013_1_B"], "year": ["2013"], "category": ["biology"], "qid": [7],
        "qtext": ["Which organelle makes ATP?"], "ra": [3], "image": [None],
        "answers": [[{"aid": 2, "atext": "Ribosome"}, {"aid": 1, "atext": "Nucleus"},
                     {"aid": 4, "atext": "Golgi apparatus"}, {"aid": 3, "atext": "Mitochondrion"}]],
    }, features=HEADQA_FEATURES).to_parquet(str(path))
    (example,) = load_task_or_file(f"hf:{path}").examples
    assert example == Example(
        id="row-0",
        prompt="Question: Which organelle makes ATP?\nA. Nucleus\nB. Ribosome\nC. Mitochondrion\n"
               "D. Golgi apparatus\nAnswer:",
        answer=" C", choices=(" A", " B", " C", " D"))


def test_mmlu_class_label_answers(tmp_path):
    folder = tmp_path / "mmlu"
    split = {"question": ["2 + 2 = ?", "Capital of France?"], "subject": ["elementary_mathematics", "geography"],
             "choices": [["3", "4", "5", "22"], ["Lyon", "Nice", "Paris", "Lille"]], "answer": [1, 2]}
    datasets.DatasetDict({name: datasets.Dataset.from_dict(split, features=MMLU_FEATURES)
                          for name in ("test", "validation", "dev")}).save_to_disk(str(folder))
    dataset = load_task_or_file(f"hf:{folder}")
    assert dataset.name == "mmlu-test"
    assert [(ex.prompt, ex.answer) for ex in dataset.examples] == [
        ("Question: 2 + 2 = ?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:", " B"),
        ("Question: Capital of France?\nA. Lyon\nB. Nice\nC. Paris\nD. Lille\nAnswer:", " C")]


def test_hellaswag_arrow_file_and_its_unlabelled_rows(tmp_path):
    folder = tmp_path / "hellaswag_saved"
    datasets.Dataset.from_dict({
        "ind": [4, 5], "activity_label": ["Removing ice from car", "Baking cookies"],
        "ctx_a": ["Then, the man writes over the snow.", "A woman mixes dough."],
        "ctx_b": ["then", "she"],
        "ctx": ["Then, the man writes over the snow. then", "A woman mixes dough. she"],
        "endings": [[", the man sleeps.", ", the man scrapes the ice.", ", the car flies.", ", a dog sings."],
                    ["bakes it.", "eats a tyre.", "paints a cloud.", "sings."]],
        "source_id": ["activitynet~v_-1IBHYS3L-Y", "activitynet~v_x"], "split": ["val", "test"],
        "split_type": ["indomain", "indomain"], "label": ["1", ""],  # the test split publishes no label
    }, features=HELLASWAG_FEATURES).save_to_disk(str(folder))
    (arrow,) = folder.glob("*.arrow")
    dataset = load_task_or_file(f"hf:{arrow}")
    assert dataset.examples == (Example(
        id="row-0",
        prompt="Context: Removing ice from car: Then, the man writes over the snow. then\n"
               "Question: Which ending fits best?\nA. , the man sleeps.\nB. , the man scrapes the ice.\n"
               "C. , the car flies.\nD. , a dog sings.\nAnswer:",
        answer=" B", choices=(" A", " B", " C", " D")),)
    assert [e.message for e in dataset.errors] == ["row 1: no gold ending (label '')"]
    assert load_task_or_file(f"hf:{folder}").examples == dataset.examples  # the saved folder reads the same
    with pytest.raises(DatasetError, match=r"no usable row with the hellaswag template: row 0: no gold ending"):
        load_task_or_file(f"hf:{_unlabelled(tmp_path)}")


def _unlabelled(tmp_path: Path) -> Path:
    """A HellaSwag test split as published: no row has a label."""
    path = tmp_path / "hellaswag_test.parquet"
    datasets.Dataset.from_dict({
        "ind": [9], "activity_label": ["Baking cookies"], "ctx_a": ["A woman mixes dough."], "ctx_b": ["she"],
        "ctx": ["A woman mixes dough. she"], "endings": [["bakes it.", "eats a tyre.", "paints a cloud.", "sings."]],
        "source_id": ["activitynet~v_x"], "split": ["test"], "split_type": ["indomain"], "label": [""],
    }, features=HELLASWAG_FEATURES).to_parquet(str(path))
    return path


def test_a_dataset_with_prompt_and_answer_columns_is_used_as_it_is(tmp_path):
    path = tmp_path / "capitals.parquet"
    datasets.Dataset.from_dict({"prompt": ["France: Paris\nJapan:", "Italy: Rome\nEgypt:"],
                                "answer": [" Tokyo", " Cairo"],
                                "choices": [[" Tokyo", " Kyoto"], [" Cairo", " Giza"]]}).to_parquet(str(path))
    dataset = load_task_or_file(f"hf:{path}")
    assert dataset.examples == (Example("row-0", "France: Paris\nJapan:", " Tokyo", (" Tokyo", " Kyoto")),
                                Example("row-1", "Italy: Rome\nEgypt:", " Cairo", (" Cairo", " Giza")))


# ---------------------------------------------------------------- few-shot, limits, hashing


def test_demonstrations_are_never_scored_and_lead_every_prompt(arc_folder):
    plain = load_task_or_file(f"hf:{arc_folder}")
    shot = load_task_or_file(f"hf:{arc_folder}:test:shots=2")
    assert shot.name == "arc_easy-test-2shot"
    demos = plain.examples[:2]
    lead = "".join(ex.prompt + ex.answer + "\n\n" for ex in demos)
    assert [ex.id for ex in shot.examples] == [ex.id for ex in plain.examples[2:]]  # the demonstrations left out
    for scored, alone in zip(shot.examples, plain.examples[2:]):
        assert scored.prompt == lead + alone.prompt and scored.answer == alone.answer
        question = alone.prompt.split("\n", 1)[0]
        assert scored.prompt.count(question) == 1  # its own question is not among its demonstrations
        assert all(demo.id != scored.id and demo.prompt not in alone.prompt for demo in demos)
    limited = load_task_or_file(f"hf:{arc_folder}:test:shots=2:limit=2")
    assert [ex.id for ex in limited.examples] == ["Mercury_2", "Mercury_3"]
    with pytest.raises(DatasetError, match="none is left to score"):
        load_task_or_file(f"hf:{arc_folder}:train:shots=1")


def test_the_hash_follows_spec_shots_and_content(arc_folder, tmp_path):
    first, again = load_task_or_file(f"hf:{arc_folder}"), load_task_or_file(f"hf:{arc_folder}")
    assert first.source_hash == again.source_hash and len(first.source_hash) == 64
    assert load_task_or_file(f"hf:{arc_folder}:shots=1").source_hash != first.source_hash
    assert load_task_or_file(f"hf:{arc_folder}:limit=4").source_hash != first.source_hash
    changed = tmp_path / "changed"
    datasets.DatasetDict({"test": _arc([*ARC_TEST[:-1], ("Which planet is red?", ["Venus", "Mars"], list("AB"),
                                                          "B")])}).save_to_disk(str(changed))
    other = load_task_or_file(f"hf:{changed}")
    assert other.examples[:4] == first.examples[:4] and other.source_hash != first.source_hash


def test_more_rows_than_the_limit_need_a_limit(arc_folder, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_ROWS", 3)
    with pytest.raises(DatasetError, match=r"the split has 5 rows; the limit is 3.*:limit=N"):
        load_task_or_file(f"hf:{arc_folder}")
    assert len(load_task_or_file(f"hf:{arc_folder}:limit=3")) == 3


# ---------------------------------------------------------------- the spec and its errors


def test_spec_grammar(tmp_path):
    spec = parse_hf_spec("hf:allenai/ai2_arc:ARC-Easy:test:shots=5:limit=100")
    assert (spec.source, spec.local, spec.config, spec.split, spec.shots, spec.limit) == \
        ("allenai/ai2_arc", False, "ARC-Easy", "test", 5, 100)
    assert parse_hf_spec("hf:google/boolq::validation").split == "validation"
    assert parse_hf_spec("hf:google/boolq::validation").config is None
    assert parse_hf_spec("hf:cais/mmlu:all:template=mmlu").template == "mmlu"
    odd = tmp_path / "runs:2024" / "arc.parquet"  # a ':' inside a local path
    odd.parent.mkdir()
    _arc(ARC_TEST[:2]).to_parquet(str(odd))
    assert parse_hf_spec(f"hf:{odd}").source == str(odd) and parse_hf_spec(f"hf:{odd}").local
    assert [ex.answer for ex in load_task_or_file(f"hf:{odd}:limit=1").examples] == [" B"]
    for bad, message in [("hf:", "hf:SOURCE"), ("hf:a/b:c:d:e", "too many ':' parts"),
                         ("hf:a/b:shots=-1", "shots must be a whole number 0..32"),
                         ("hf:a/b:limit=0", "limit must be a whole number 1 or more"),
                         ("hf:a/b:seed=1", "unknown option 'seed'"), ("hf:a/b:template=gsm8k", "unknown template"),
                         ("hf:./no/such.parquet", "no such file or folder")]:
        with pytest.raises(DatasetError, match=message):
            load_task_or_file(bad)


def test_columns_that_fit_no_template_are_named(tmp_path):
    path = tmp_path / "questions.parquet"
    datasets.Dataset.from_dict({"question": ["Why?"], "options": [["a", "b"]]}).to_parquet(str(path))
    with pytest.raises(DatasetError, match=r"columns \(question, options\) fit no template; \w+ lacks"):
        load_task_or_file(f"hf:{path}")
    arc_like = tmp_path / "ai2_arc_partial.parquet"  # named like ARC: its missing column is what the error names
    datasets.Dataset.from_dict({"question": ["Why?"], "choices": [{"text": ["a", "b"], "label": ["A", "B"]}]}) \
        .to_parquet(str(arc_like))
    with pytest.raises(DatasetError, match="arc lacks answerKey"):
        load_task_or_file(f"hf:{arc_like}")
    asked = tmp_path / "arc.parquet"
    _arc(ARC_TEST[:1]).to_parquet(str(asked))
    with pytest.raises(DatasetError, match="the headqa template needs the column.s. qtext, answers, ra"):
        load_task_or_file(f"hf:{asked}:template=headqa")
    not_saved = tmp_path / "plain_folder"
    not_saved.mkdir()
    with pytest.raises(DatasetError, match="not a folder written by save_to_disk"):
        load_task_or_file(f"hf:{not_saved}")


def _offline(monkeypatch) -> None:
    """No Hub, also for a `datasets` already imported (it reads the variables when it is imported)."""
    import huggingface_hub

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_a_hub_id_neither_cached_nor_reachable_is_one_clear_error(monkeypatch):
    _offline(monkeypatch)
    dataset_id = f"spade-viz-tests/never-published-{uuid.uuid4().hex[:12]}"
    with pytest.raises(DatasetError) as caught:
        load_task_or_file(f"hf:{dataset_id}:default:test")
    message = str(caught.value)
    assert dataset_id in message and "neither in the local cache nor reachable on the Hub" in message


def test_a_hub_id_goes_to_load_dataset_with_its_config_and_default_split(monkeypatch):
    calls = []

    def split_names(path, config_name=None, **kwargs):
        return ["train", "validation", "test"]

    def load(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return _arc(ARC_TEST[:2])

    monkeypatch.setattr(datasets, "get_dataset_split_names", split_names)
    monkeypatch.setattr(datasets, "load_dataset", load)
    dataset = load_task_or_file("hf:allenai/ai2_arc:ARC-Easy")
    assert calls == [("allenai/ai2_arc", "ARC-Easy", {"split": "test"})]  # and never trust_remote_code
    assert dataset.name == "ai2_arc-ARC-Easy-test" and [ex.answer for ex in dataset.examples] == [" B", " A"]


# ---------------------------------------------------------------- the CLI and the app


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny("llama", tmp_path_factory.mktemp("tiny_hf") / "llama")


def test_cli_sweep_on_a_saved_folder(arc_folder, tiny_llama, tmp_path):
    out = tmp_path / "arc.csv"
    env = {**os.environ, "SPADE_VIZ_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "spade_viz", "sweep", "--dataset", f"hf:{arc_folder}:shots=1",
                           "--model", str(tiny_llama), "--out", str(out), "--linear-spade", "off"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # 4 scored rows after the demonstration; the tiny tokenizer starts ' A' and ' E' alike, so the
    # five-choice row is skipped with its reason
    assert "sweep of 'arc_easy-test-1shot'" in done.stdout and "3 examples" in done.stdout
    assert "skipped example Mercury_3: choices ' A' and ' E' start with the same token" in done.stderr
    assert out.is_file() and out.with_suffix(".meta.json").is_file()


def test_the_app_reads_a_hugging_face_spec(arc_folder, tiny_llama, isolated_cache):
    from spade_viz.app import models

    at = open_page("pages/early_exit.py", 240)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(tiny_llama)
    at.run()
    at.radio(key="ee_source").set_value("Hugging Face dataset").run()
    at.text_input(key="ee_hf_spec").input(f"hf:{arc_folder.parent / 'no_such_folder' / 'x.parquet'}").run()
    assert not at.exception, at.exception
    assert any("No such file or folder" in e.value for e in at.error)  # shown as a sentence
    at.text_input(key="ee_hf_spec").input(str(arc_folder)).run()  # the hf: prefix may be left out
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "ee_run" in [b.key for b in at.button]  # the dataset is usable: the sweep can start
