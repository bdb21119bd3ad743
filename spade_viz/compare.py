"""Decoders compared on a dataset: per-layer accuracy and agreement, and how early each gets there.

Input is a sweep's per-(decoder, layer) summary (`SweepResult.summary()`: columns decoder,
layer, accuracy, agree_final); everything here is plain pandas, for the page, the CLI and tests.

"Final accuracy" is the accuracy at layer L, where every decoder is the model's own output.
A decoder "reaches 95% of final accuracy" at the first layer whose accuracy is at least 0.95 x
that; it "stays" from the first layer after which it never drops below it again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .decoders import SWEPT, label

COMPARED = SWEPT  # every decoder a sweep computes, in reading order: the order of lines and table rows
FRACTION = 0.95


def layer_curves(summary: pd.DataFrame, decoders: Sequence[str] = COMPARED) -> pd.DataFrame:
    """The summary rows of the compared decoders present, in `decoders` order, sorted by layer."""
    present = [name for name in decoders if name in set(summary["decoder"])]
    rows = summary[summary["decoder"].isin(present)].copy()
    rows["decoder"] = pd.Categorical(rows["decoder"], categories=present, ordered=True)
    rows = rows.sort_values(["decoder", "layer"]).reset_index(drop=True)
    rows["decoder"] = rows["decoder"].astype(str)
    return rows


def final_accuracy(curves: pd.DataFrame) -> float:
    """Accuracy of the full model: any decoder's value at the last layer (they are all the model there)."""
    if curves.empty:
        return float("nan")
    last = curves[curves["layer"] == curves["layer"].max()]
    return float(last["accuracy"].iloc[0])


def _first(values: np.ndarray, target: float) -> tuple[int | None, int | None]:
    """(first index with value >= target, first index from which every value is >= target)."""
    hits = values >= target - 1e-12
    reached = int(np.argmax(hits)) if hits.any() else None
    misses = np.nonzero(~hits)[0]
    stays = (int(misses[-1]) + 1 if len(misses) else 0) if hits.any() else None
    if stays is not None and stays >= len(values):
        stays = None
    return reached, stays


def first_layers(curves: pd.DataFrame, fraction: float = FRACTION) -> pd.DataFrame:
    """Per decoder: the first layer reaching `fraction` x final accuracy (and from which it stays
    there), and the first layer agreeing with the final answer on `fraction` of the examples.

    Layers are <NA> (shown as "never") when never reached; with a final accuracy of 0 the accuracy
    columns are None for every decoder (there is nothing to reach).
    """
    final = final_accuracy(curves)
    target = fraction * final
    rows = []
    for name, group in curves.groupby("decoder", sort=False):
        group = group.sort_values("layer")
        accuracy, agree = group["accuracy"].to_numpy(), group["agree_final"].to_numpy()
        reached, stays = _first(accuracy, target) if final > 0 else (None, None)
        agree_first, _ = _first(agree, fraction)
        rows.append({
            "decoder": name,
            "final_accuracy": float(accuracy[-1]),
            "first_layer": reached,
            "stays_from": stays,
            "first_layer_agreeing": agree_first,
            "best_accuracy": float(accuracy.max()),
            "best_layer": int(group["layer"].to_numpy()[int(np.argmax(accuracy))]),
        })
    table = pd.DataFrame(rows, columns=["decoder", "final_accuracy", "first_layer", "stays_from",
                                        "first_layer_agreeing", "best_accuracy", "best_layer"])
    for column in ("first_layer", "stays_from", "first_layer_agreeing"):
        table[column] = table[column].astype("Int64")
    return table


def display_table(table: pd.DataFrame, num_layers: int, fraction: float = FRACTION) -> pd.DataFrame:
    """The first-layers table with readable headers and cells ("12 / 30", "never") for the page."""
    def layer(value) -> str:
        return "never" if pd.isna(value) else f"{int(value)} / {num_layers}"

    pct = f"{fraction:.0%}"
    return pd.DataFrame({
        "decoder": [label(name) for name in table["decoder"]],
        "final accuracy": [f"{value:.1%}" for value in table["final_accuracy"]],
        f"first layer ≥ {pct} of final accuracy": [layer(v) for v in table["first_layer"]],
        "stays there from": [layer(v) for v in table["stays_from"]],
        f"first layer agreeing with the final answer on ≥ {pct}": [layer(v) for v in table["first_layer_agreeing"]],
        "best accuracy (layer)": [f"{a:.1%} ({int(b)})" for a, b in zip(table["best_accuracy"], table["best_layer"])],
    })


def format_table(table: pd.DataFrame, num_layers: int, fraction: float = FRACTION) -> str:
    """The first-layers table as aligned text (CLI and notes)."""
    shown = display_table(table, num_layers, fraction)
    return shown.to_string(index=False)
