"""Headless exit-curve reports: what `python -m spade_viz exit-curve` prints, as plain dicts.

The same numbers the Early-exit page shows: the hybrid curve over all thresholds, the two
paper-style operating points, and the baselines (full model, oracle, classic early exit,
SPADE at the first layer reaching the full model's accuracy).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .arrays import ExitArrays
from .cost import Checkpoints, CostModel
from .simulate import CURVE_COLUMNS, ExitSimulator, operating_points

JSON_CURVE_KEYS = ("threshold", "accuracy", "agreement", "compute_fraction", "speedup", "mean_exit_layer")


def parse_cost(text: str) -> CostModel:
    """'BLOCK,HEAD,MAP' parameter counts (e.g. '3.5e6,2.8e7,3.3e5')."""
    parts = [p for p in (text or "").replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise InputError(f"`cost` wants three numbers BLOCK,HEAD,MAP (parameter counts), not {text!r}")
    return CostModel(*values)


def resolve_cost(meta: dict, cost: str | None = None, model: str | None = None, counts_of=None,
                 **options) -> CostModel:
    """The cost model: explicit counts, else the sweep's metadata, else the model's config
    (`counts_of(name)` gives its parameter counts; the CLI passes the config reader)."""
    options = {k: v for k, v in options.items() if v is not None}
    if cost:
        return parse_cost(cost).with_options(**options)
    if not model:
        stored = meta.get("cost") if isinstance(meta.get("cost"), dict) else meta
        if all(key in stored for key in ("block_params", "head_params", "map_params")):
            return CostModel.from_dict(stored, **options)
    name = model or meta.get("model")
    if not name:
        raise InputError(
            "cannot account compute: the sweep names no model; pass `model=NAME` (its config is read) "
            "or `cost=BLOCK,HEAD,MAP`"
        )
    if counts_of is None:
        raise InputError("cannot account compute: pass `cost=BLOCK,HEAD,MAP`")
    return CostModel.from_dict(counts_of(str(name)), **options)


def exit_curve_report(
    arrays: ExitArrays,
    cost: CostModel,
    checkpoints: Checkpoints = Checkpoints(),
    confidence: str = "linear_spade",
    answer: str = "spade",
    count: int = 200,
    tolerance: float = 0.01,
    threshold: float | None = None,
) -> dict:
    """The `exit-curve` report as a JSON-ready dict: the hybrid curve over `count` thresholds, its
    operating points (`tolerance`: accuracy loss allowed), the baselines, and `threshold`'s point if given."""
    sim = ExitSimulator(arrays, cost, checkpoints, confidence, answer)
    curve = sim.curve(count=count)
    full = sim.full_model()
    report = {
        "settings": sim.settings(),
        "full_model": full.to_dict(),
        "curve": [{key: float(row[key]) for key in JSON_CURVE_KEYS} for _, row in curve.iterrows()],
        "operating_points": operating_points(curve, full.accuracy, tolerance),
        "oracle": sim.oracle().point.to_dict(),
        "warning": arrays.chance_level_warning(full.accuracy),
        "first_layer_reaching_full_accuracy": {
            decoder: sim.first_layer_reaching(decoder) for decoder in arrays.decoders
        },
    }
    if "logit_lens" in arrays.decoders:
        classic = sim.classic_curve(count=count)
        report["classic_operating_points"] = operating_points(classic, full.accuracy, tolerance)
    if threshold is not None:
        report["at_threshold"] = sim.at(threshold, with_answers=False).point.to_dict()
    return report


def _fmt_point(point: dict | None) -> str:
    if point is None:
        return "none"
    tau = point.get("threshold")
    tau_text = "" if tau is None or np.isnan(tau) else f"tau={tau:.3f}  "
    return (f"{tau_text}accuracy {point['accuracy']:.3f}  agreement {point['agreement']:.3f}  "
            f"compute {point['compute_fraction']:.3f}  speedup {point['speedup']:.2f}x  "
            f"mean exit layer {point['mean_exit_layer']:.1f}")


def format_exit_curve(report: dict, rows: int = 15) -> str:
    """`exit_curve_report`'s dict as text for the terminal, the curve thinned to about `rows` thresholds."""
    settings = report["settings"]
    cost = settings["cost"]
    lines = [
        f"{settings['examples']} examples, {settings['num_layers']} layers, mean {settings['mean_tokens']:.1f} tokens; "
        f"confidence {settings['confidence']}, answer {settings['answer']}; checkpoints {settings['checkpoints']}",
        f"cost units: one block on one token; unembedding = {cost['head_units']:.2f}, linear-SPADE map = "
        f"{cost['map_units']:.3f} blocks; continuation tokens {cost['continuation_tokens']:g}",
        f"{'threshold':>10} {'accuracy':>9} {'agreement':>10} {'compute':>8} {'speedup':>8} {'exit layer':>11}",
    ]
    curve = report["curve"]
    picks = sorted(set(np.linspace(0, len(curve) - 1, min(rows, len(curve))).round().astype(int).tolist()))
    for i in picks:
        r = curve[i]
        lines.append(f"{r['threshold']:>10.3f} {r['accuracy']:>9.3f} {r['agreement']:>10.3f} "
                     f"{r['compute_fraction']:>8.3f} {r['speedup']:>7.2f}x {r['mean_exit_layer']:>11.1f}")
    points = report["operating_points"]
    lines += [
        f"full model:          {_fmt_point(report['full_model'])}",
        f"best accuracy:       {_fmt_point(points['best_accuracy'])}",
        f"within 1 point:      {_fmt_point(points['within_1pt'])}",
        f"oracle (no checks):  {_fmt_point(report['oracle'])}",
    ]
    if "classic_operating_points" in report:
        lines.append(f"classic exit, 1 pt:  {_fmt_point(report['classic_operating_points']['within_1pt'])}")
    if "at_threshold" in report:
        lines.append(f"at your threshold:   {_fmt_point(report['at_threshold'])}")
    if report.get("note"):
        lines.insert(0, "note: " + report["note"])
    if report.get("calibration"):
        c = report["calibration"]
        lines.insert(0, f"checkpoints {c['checkpoints']} and threshold {c['threshold']:.3f} chosen on "
                        f"{c['n_calibration']} calibration examples ({c['split']}, "
                        f"{c['calibration_speedup_within_1pt']:.2f}x there); everything below is scored on the "
                        f"other {c['n_heldout']}")
    if report.get("checkpoint_search"):
        top = report["checkpoint_search"][:3]
        lines.append("checkpoint search (in-sample), best layouts: " + "; ".join(
            f"{row['checkpoints']} {row['speedup_within_1pt']:.2f}x" for row in top))
    if report.get("warning"):
        lines.append("warning: " + report["warning"])
    first = report["first_layer_reaching_full_accuracy"]
    lines.append("first layer reaching the full model's accuracy: "
                 + ", ".join(f"{k} {'never' if v is None else v}" for k, v in first.items()))
    return "\n".join(lines)


__all__ = ["CURVE_COLUMNS", "exit_curve_report", "format_exit_curve", "parse_cost", "resolve_cost"]
