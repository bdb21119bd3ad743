"""`analyze --pin / --generate / --export-script` on the real default model: the generation is the model's
own greedy one, the pins end at the model's softmax probability, and the exported script, run in a
fresh process, prints the same final answer and entropies. Bad input: one line, exit status 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spade_viz as sv
from spade_viz import cli
from test_bad_input import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "France: Paris\nJapan: Tokyo\nGermany:"
PINS = [" Berlin", " Rome"]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """One CLI run with pins, a generation of 8 tokens and the exported script: (JSON, script path)."""
    script = tmp_path_factory.mktemp("export") / "view.py"
    argv = ["analyze", PROMPT, "--pin", PINS[0], "--pin", PINS[1], "--generate", "8", "--export-script", str(script),
            "--json"]
    out = subprocess.run([sys.executable, "-m", "spade_viz", *argv], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout), script


@pytest.mark.slow
def test_generate_is_the_models_own_greedy_generation(analysed, default_lm):
    data, _ = analysed
    ids = default_lm.encode(PROMPT)
    with torch.no_grad():
        inputs = torch.tensor([ids])
        own = default_lm.model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=8,
                                        do_sample=False, pad_token_id=default_lm.tokenizer.eos_token_id)
    own = own[0, len(ids):].tolist()
    generation = data["generation"]
    assert generation["token_ids"] == own and len(own) == 8
    assert generation["tokens"] == [default_lm.token_str(i) for i in own]
    assert set(generation["first_layer"]) == {"logit_lens", "spade"}
    assert all(len(layers) == 8 for layers in generation["first_layer"].values())
    assert all(0 <= f <= default_lm.num_layers for f in generation["first_layer"]["spade"])


@pytest.mark.slow
def test_pins_end_at_the_models_softmax_probability(analysed, default_lm):
    data, _ = analysed
    ids = default_lm.encode(PROMPT)
    with torch.no_grad():
        probs = torch.softmax(default_lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    assert list(data["pins"]) == PINS
    for pin in PINS:
        token_id = default_lm.tokenizer(pin, add_special_tokens=False).input_ids[0]
        for name in ("logit_lens", "spade"):
            trajectory = data["pins"][pin][name]
            assert len(trajectory) == default_lm.num_layers + 1
            assert trajectory[-1] == pytest.approx(float(probs[token_id]), rel=1e-4)
    # the final answer's pin is its target probability in the analysis, layer by layer
    target = {row["layer"]: row["spade"]["target_prob"] for row in data["layers"]}
    assert data["final_answer"] == PINS[0]
    assert data["pins"][PINS[0]]["spade"] == pytest.approx([target[i] for i in range(len(target))], rel=1e-4)


@pytest.mark.slow
def test_the_exported_script_reproduces_the_analysis_in_a_fresh_process(analysed, tmp_path):
    data, script = analysed
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"final answer: {data['final_answer']!r}" in out.stdout
    for name in ("logit_lens", "spade"):
        line = re.search(rf"^{name} entropy by layer: (.*)$", out.stdout, re.M).group(1)
        printed = [float(x) for x in line.split()]
        assert printed == pytest.approx([row[name]["entropy"] for row in data["layers"]], abs=1e-4)
    assert re.search(r"^generated: ' Berlin", out.stdout, re.M)


def test_bad_pins_and_generations_are_one_line(capsys, tmp_path):
    code, _, err = run_cli(["analyze", "x", "--pin", ""], capsys)
    assert_one_line_error(code, err, "--pin token is empty")
    code, _, err = run_cli(["analyze", "x", *sum([["--pin", f"#{i}"] for i in range(6)], [])], capsys)
    assert_one_line_error(code, err, "at most 5")
    code, _, err = run_cli(["analyze", "x", "--generate", "-1"], capsys)
    assert_one_line_error(code, err, "--generate")
    code, _, err = run_cli(["analyze", "x", "--export-script", str(tmp_path / "no" / "such" / "dir.py")], capsys)
    assert_one_line_error(code, err, "export-script")


def test_the_papers_new_names_are_decoder_aliases():
    args = cli.build_parser().parse_args(["exit-curve", "--sweep", "s.csv", "--confidence", "linear_simlens",
                                          "--answer", "SimLens"])
    assert (args.confidence, args.answer) == ("linear_spade", "spade")


def test_pins_and_a_generation_in_text_and_json_on_a_tiny_model(capsys, tiny_folders, tiny_lms):
    folder, lm = tiny_folders["llama"], tiny_lms["llama"]
    code, out, err = run_cli(["analyze", "the cat sat", "--model", folder, "--pin", "#5", "--generate", "3"], capsys)
    assert code == 0, err
    assert re.search(r"^pin '#5' spade: ", out, re.M) and re.search(r"^generated 3 tokens: ", out, re.M)
    code, out, err = run_cli(["analyze", "the cat sat", "--model", folder, "--pin", "#5", "--generate", "3",
                              "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    gen = sv.follow_generation(lm, "the cat sat", 3)
    assert data["generation"]["token_ids"] == gen.token_ids
    assert data["generation"]["first_layer"] == {name: gen.first_layer(name) for name in gen.grids}
    reading = sv.read_position(lm, sv.analyze(lm, "the cat sat"), pins=["#5"])
    assert data["pins"]["#5"]["spade"] == pytest.approx(list(reading.pin_probs["#5"]["spade"]), rel=1e-5)
