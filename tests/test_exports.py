"""What the download buttons write (spade_viz/viz/exports.py): names and facts that say what was
exported; CSVs that pandas reads as they are, with their facts in a side file; and downloaded sweep
CSVs, new and old, that the command line still reads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

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


def test_a_csv_export_reads_as_is_and_its_facts_lie_beside_it(tmp_path):
    # tokens a '#' comment character, a CSV parser or a careless reader would break
    frame = pd.DataFrame({"decoder": ["logit_lens", "spade", "spade"], "layer": [0, 1, 2],
                          "top1": ["#", " # Paris", "a,\"b\"\nc"], "entropy": [5.25, 0.5, 0.125]})
    stem = exports.file_stem(META["model"], META["prompt"][-24:], "original", "entropy")
    csv_path = tmp_path / f"{stem}.csv"
    csv_path.write_text(frame.to_csv(index=False))  # what a download button writes
    pd.testing.assert_frame_equal(pd.read_csv(csv_path), frame)  # no options: the file is a plain CSV
    meta = exports.export_meta(META)
    assert meta["exported_by"] == "spade-viz" and meta["model"] == META["model"] and "exported_at" in meta
    side = exports.meta_file_name(csv_path.name)
    assert side == f"{stem}.meta.json" and exports.meta_file_name(f"{stem}-sweep.csv") == f"{stem}-sweep.meta.json"
    (tmp_path / side).write_text(exports.csv_meta(meta, csv_path.name))
    facts = json.loads((tmp_path / side).read_text())
    assert facts == {**meta, "data_file": csv_path.name} and facts["prompt"] == META["prompt"]
    assert "\\nGermany" in exports.csv_meta(meta, "x.csv")  # a prompt's line break stays JSON-escaped


def test_json_and_html_exports_carry_the_facts():
    meta = exports.export_meta(META)
    data = exports.json_with_meta({"model": "m", "layers": []}, meta)
    assert list(data)[0] == "spade_viz_export" and json.loads(json.dumps(data))["spade_viz_export"]["prompt"] == \
        META["prompt"]
    page = exports.html_with_meta("<html><head><meta charset='utf-8'></head><body></body></html>", meta,
                                  "Positions <heatmap>")
    assert "<title>Positions &lt;heatmap&gt;</title>" in page
    assert '<meta name="spade-viz:prompt" content="France: Paris\nGermany:">' in page


def _curve(capsys, *args: str) -> dict:
    assert cli_main(["exit-curve", "--sweep", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_downloaded_sweep_csv_and_its_side_file_read_back(tmp_path, capsys):
    frame = long_frame(hand_arrays()).assign(top1=lambda f: f["top1"].replace({"x": "# x"}))  # '#' tokens
    path = tmp_path / "spade-viz_smollm2-135m_capitals_n3-sweep.csv"
    path.write_text(frame.to_csv(index=False))
    meta = exports.export_meta({"model": "smollm2-135m", "task": "capitals # with a hash", "examples": 3,
                                "cost": {"block_params": 1, "head_params": 0, "map_params": 0}})
    (tmp_path / exports.meta_file_name(path.name)).write_text(exports.csv_meta(meta, path.name))
    assert len(pd.read_csv(path)) == len(frame) and (pd.read_csv(path)["top1"] == "# x").any()
    arrays = ExitArrays.from_csv(path)
    plain = hand_arrays()
    assert arrays.num_layers == plain.num_layers and arrays.meta["task"] == "capitals # with a hash"
    for name in plain.decoders:
        np.testing.assert_array_equal(arrays.correct[name], plain.correct[name])
    given = _curve(capsys, str(path), *COST_ARGS)
    assert given["curve"]
    # the side file's cost model is the one exit-curve uses when none is given ("1,0,0" as COST_ARGS)
    assert _curve(capsys, str(path))["curve"] == given["curve"]


def test_an_old_download_with_hash_header_lines_still_reads_back(tmp_path, capsys):
    """Before the side file, the app wrote the facts as '# key: value' lines at the head of the CSV."""
    csv_text = long_frame(hand_arrays()).to_csv(index=False)
    old = tmp_path / "old.csv"
    old.write_text('# exported_by: "spade-viz"\n# exported_at: "2026-11-30T10:00:00+00:00"\n'
                   '# model: "smollm2-135m"\n# task: "capitals # with a hash"\n# examples: 3\n' + csv_text)
    new = tmp_path / "new.csv"
    new.write_text(csv_text)
    arrays = ExitArrays.from_csv(old)
    for name in hand_arrays().decoders:
        np.testing.assert_array_equal(arrays.correct[name], hand_arrays().correct[name])
    assert _curve(capsys, str(old), *COST_ARGS)["curve"] == _curve(capsys, str(new), *COST_ARGS)["curve"]
