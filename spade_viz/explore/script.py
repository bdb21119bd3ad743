"""The Explore view as code: a Python script, or a Jupyter notebook, that reproduces it through the
public API (same model, prompt, options and figures). Plain text; the notebook's JSON (nbformat 4)
is written here by hand, so no notebook library is needed.

`view` holds: model, prompt, spade_positions, max_tokens, target (None: the final answer), metric,
and optionally pins (a list of tokens), position (of the pins; None: the answer), generate (tokens,
0: none), threshold (of the generation's exit line), compare_prompt and compare_model (a second run).
"""

from __future__ import annotations

import json

from ..errors import InputError

_KEYS = ("model", "prompt", "spade_positions", "max_tokens", "target", "metric", "pins", "position", "generate",
         "threshold", "compare_prompt", "compare_model")


def _cells(view: dict) -> list[tuple[str, str]]:
    """(kind, source) of each step: 'markdown' or 'code'."""
    unknown = set(view) - set(_KEYS)
    if unknown or "prompt" not in view:
        raise InputError(f"a view needs a prompt and only these keys: {', '.join(_KEYS)}")
    v = {"model": "smollm2-135m", "spade_positions": "original", "max_tokens": 512, "target": None,
         "metric": "entropy", "pins": [], "position": None, "generate": 0, "threshold": 1.0, "compare_prompt": None,
         "compare_model": None, **view}
    cells = [("markdown", "# spade-viz: one prompt, layer by layer\nWhat each layer would predict next, read by "
                          "the logit lens and by SPADE (SimLens in the paper's version 2)."),
             ("code", "import spade_viz as sv\n\n"
                      f"MODEL = {v['model']!r}\nPROMPT = {v['prompt']!r}\nMETRIC = {v['metric']!r}\n"
                      f"OPTIONS = dict(spade_positions={v['spade_positions']!r}, max_tokens={int(v['max_tokens'])}, "
                      f"target={v['target']!r})\n\n"
                      "lm = sv.load_model(MODEL)\n"
                      "res = sv.analyze(lm, PROMPT, **OPTIONS)\n"
                      "print('final answer:', repr(res.token(res.final_answer_id)))\n"
                      "for name in res.decoders:\n"
                      "    entropy = res.answer[name].entropy[:, 0]\n"
                      "    print(f'{name} entropy by layer:', ' '.join(f'{h:.4f}' for h in entropy))\n"
                      "figures = res.figures(METRIC)  # name -> plotly figure, as on the Explore page")]
    if v["pins"]:
        cells.append(("code", f"PINS = {list(v['pins'])!r}\n"
                              f"reading = sv.read_position(lm, res, position={v['position']!r}, pins=PINS)\n"
                              "for pin, per_decoder in reading.trajectories('prob').items():\n"
                              "    for name, probs in per_decoder.items():\n"
                              "        print(f'pin {pin!r} {name}:', ' '.join(f'{p:.4f}' for p in probs))\n"
                              "figures['pins'] = sv.viz.pin_curves(reading)"))
    if v["compare_prompt"] or v["compare_model"]:
        other_model = v["compare_model"] or v["model"]
        cells.append(("code", f"lm_b = sv.load_model({other_model!r}) if {other_model!r} != MODEL else lm\n"
                              f"res_b = sv.analyze(lm_b, {v['compare_prompt'] or v['prompt']!r}, **OPTIONS)\n"
                              "comparison = sv.compare_analyses(res, res_b)\n"
                              "print(comparison.summary.to_string(index=False))\n"
                              "figures['comparison'] = sv.viz.comparison_heatmaps(res, res_b, METRIC)\n"
                              "figures['difference'] = sv.viz.difference_curves(comparison)"))
    if int(v["generate"]):
        cells.append(("code", f"gen = sv.follow_generation(lm, PROMPT, {int(v['generate'])}, "
                              f"spade_positions={v['spade_positions']!r}, max_tokens={int(v['max_tokens'])})\n"
                              "print('generated:', repr(gen.text))\n"
                              "for name in gen.grids:\n"
                              "    print(f'{name} first layer per token:', gen.first_layer(name))\n"
                              f"print(gen.exit_blocks({float(v['threshold'])!r}))\n"
                              "for name in gen.grids:\n"
                              "    figures[f'generation_{name}'] = sv.viz.generation_heatmap(gen, name)"))
    return cells


def view_script(view: dict) -> str:
    """A runnable script: prints the final answer and the entropies, builds the figures
    (`python script.py --show` opens them in a browser)."""
    parts = ['"""' + source.lstrip("# ").replace("\n", "\n\n") + '"""' if kind == "markdown" else source
             for kind, source in _cells(view)]
    parts.append("if __name__ == '__main__':\n    import sys\n\n    if '--show' in sys.argv:\n"
                 "        for figure in figures.values():\n            figure.show()")
    return "\n\n".join(parts) + "\n"


def view_notebook(view: dict) -> str:
    """The same steps as a Jupyter notebook (JSON text, nbformat 4); its last cell shows the figures."""
    cells = [*_cells(view), ("code", "for figure in figures.values():\n    figure.show()")]
    notebook = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": [{"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source.splitlines(keepends=True),
                   **({"execution_count": None, "outputs": []} if kind == "code" else {})}
                  for i, (kind, source) in enumerate(cells)],
    }
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
