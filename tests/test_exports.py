"""What the download buttons write (spade_viz/viz/exports.py): names and headers that say what was
exported, and a downloaded sweep CSV that the command line still reads."""

from __future__ import annotations

import json

import numpy as np

from spade_viz.cli import main as cli_main
from spade_viz.exit.arrays import ExitArrays
from spade_viz.viz import exports
from test_exit import COST_ARGS, hand_arrays, long_frame

META = {"model": "HuggingFaceTB/SmolLM2-135M", "prompt": "France: Paris\nGermany:", "spade_positions": "original",
        "max_tokens": 512, "spade_every_position": True}


def test_file_stem_names_model_prompt_and_settings():
    stem = exports.file_stem("/models/llama-3 (local)/", "France: Paris\nGermany:", "renumbered", "top1_prob")
    assert stem == "spade-viz_llama-3-local_France-Paris-Germany_renumbered_top1_prob"
    assert exports.file_stem("smollm2-135m", "", None, "…") == "spade-viz_smollm2-135m"
    assert len(exports.file_stem("m", "x" * 500, *["y" * 40] * 10)) <= exports.STEM_CHARS


def test_csv_header_round_trip_and_json_and_html():
    meta = exports.export_meta(META)
    assert meta["exported_by"] == "spade-viz" and meta["model"] == META["model"] and "exported_at" in meta
    text = exports.csv_with_header("a,b\n1,2\n", meta)
    assert text.splitlines()[1] == '# exported_at: "' + meta["exported_at"] + '"'
    assert "\\nGermany" in text and text.count("\n") == len(meta) + 2  # the prompt's line break stays on its line
    back, lines = exports.read_csv_header(text)
    assert back == meta and lines == len(meta)
    data = exports.json_with_meta({"model": "m", "layers": []}, meta)
    assert list(data)[0] == "spade_viz_export" and json.loads(json.dumps(data))["spade_viz_export"]["prompt"] == \
        META["prompt"]
    page = exports.html_with_meta("<html><head><meta charset='utf-8'></head><body></body></html>", meta,
                                  "Positions <heatmap>")
    assert "<title>Positions &lt;heatmap&gt;</title>" in page
    assert '<meta name="spade-viz:prompt" content="France: Paris\nGermany:">' in page


def test_a_downloaded_sweep_csv_still_reads_back(tmp_path, capsys):
    path = tmp_path / "spade-viz_smollm2-135m_capitals_n3-sweep.csv"
    header = exports.export_meta({"model": "smollm2-135m", "task": "capitals # with a hash", "examples": 3})
    path.write_text(exports.csv_with_header(long_frame(hand_arrays()).to_csv(index=False), header))
    arrays = ExitArrays.from_csv(path)
    plain = hand_arrays()
    assert arrays.num_layers == plain.num_layers
    for name in plain.decoders:
        np.testing.assert_array_equal(arrays.correct[name], plain.correct[name])
    assert cli_main(["exit-curve", "--sweep", str(path), *COST_ARGS, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["curve"]
