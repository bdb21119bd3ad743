"""The `exit-curve` and `real-exit` subcommands, registered by `spade_viz.cli.build_parser`."""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..errors import InputError


def _checkpoint_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", default="all",
                        help="where the exit test runs: all (every layer from 1), every:K, from:M, "
                             "every:K,from:M, or layers:A,B,... (default: all); exit-curve also takes 'search': "
                             "the layout with the largest speedup within the tolerance (chosen in-sample)")
    parser.add_argument("--continuation-tokens", type=float, default=None,
                        help="rows charged in the one-token SPADE continuation (default 1; the paper charges 2)")


def _cmd_exit_curve(args) -> None:
    from .arrays import ExitArrays
    from .cost import Checkpoints
    from ..models.loading import config_parameter_counts
    from .report import exit_curve_report, format_exit_curve, resolve_cost

    if args.thresholds < 2:
        raise InputError("--thresholds must be at least 2")
    if not 0 <= args.tolerance < 1:
        raise InputError("--tolerance is a share of examples, between 0 and 1 (0.01 = one point)")
    search = args.checkpoints.strip().lower() == "search"
    checkpoints = None if search else Checkpoints.parse(args.checkpoints)
    arrays = ExitArrays.from_csv(args.sweep, default_length=args.length)
    cost = resolve_cost(arrays.meta, cost=args.cost, model=args.model, counts_of=config_parameter_counts,
                        continuation_tokens=args.continuation_tokens)
    searched = None
    if search:
        from .simulate import search_checkpoints

        arrays.require(args.confidence, " to use as the exit confidence")
        searched = search_checkpoints(arrays, cost, args.confidence, args.answer, tolerance=args.tolerance)
        checkpoints = Checkpoints.parse(searched["checkpoints"].iloc[0])
    report = exit_curve_report(arrays, cost, checkpoints, args.confidence, args.answer, args.thresholds,
                               args.tolerance, args.threshold)
    if searched is not None:
        report["checkpoint_search"] = searched.head(10).to_dict(orient="records")
    if args.json:
        print(json.dumps(_clean(report), allow_nan=False, default=_json_default))
    else:
        print(format_exit_curve(report))


def _json_default(value):
    return None


def _clean(value):
    """NaN and infinities (a threshold that does not apply) become null: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _cmd_real_exit(args) -> None:
    from .real import format_real_exit, real_exit_from_cli

    report = real_exit_from_cli(args, progress=lambda message: print(message, file=sys.stderr))
    print(json.dumps(_clean(report.to_dict()), allow_nan=False, default=_json_default) if args.json else format_real_exit(report))


def add_exit_commands(commands, add_model_args) -> None:
    curve = commands.add_parser(
        "exit-curve", help="hybrid early exit over all thresholds, from a sweep CSV (no model needed)"
    )
    curve.add_argument("--sweep", required=True, help="CSV written by `sweep` (one row per example, layer, decoder)")
    _checkpoint_args(curve)
    curve.add_argument("--confidence", default="linear_spade",
                       help="decoder whose entropy is the confidence (default: linear_spade)")
    curve.add_argument("--answer", default="spade", help="decoder that answers at the exit layer (default: spade)")
    curve.add_argument("--thresholds", type=int, default=200, help="number of entropy quantiles tried (default 200)")
    curve.add_argument("--threshold", type=float, default=None, help="also report this one threshold")
    curve.add_argument("--tolerance", type=float, default=0.01,
                       help="accuracy loss allowed for the speedup operating point (default 0.01 = 1 point)")
    curve.add_argument("--cost", default=None, help="parameter counts BLOCK,HEAD,MAP (default: from the sweep's "
                                                    "metadata or the model's config)")
    curve.add_argument("--model", default=None, help="model whose config gives the parameter counts "
                                                     "(default: the one the sweep names)")
    curve.add_argument("--length", type=int, default=None,
                       help="prompt length in tokens, when the sweep has no n_tokens column")
    curve.add_argument("--json", action="store_true", help="print one JSON object")
    curve.set_defaults(run=_cmd_exit_curve)

    real = commands.add_parser(
        "real-exit", help="run the hybrid exit for real (the forward pass stops) and time it against full passes"
    )
    add_model_args(real)
    real.add_argument("--dataset", required=True, help="built-in task name or a JSONL/CSV file")
    real.add_argument("--threshold", type=float, required=True, help="exit when the confidence entropy is below this")
    _checkpoint_args(real)
    real.add_argument("--lens", default=None, help="linear-SPADE file (default: the one saved for this model)")
    real.add_argument("--limit", type=int, default=None, help="use the first N examples")
    real.add_argument("--repeats", type=int, default=3, help="timed rounds over the dataset (default 3)")
    real.add_argument("--json", action="store_true", help="print one JSON object")
    real.set_defaults(run=_cmd_real_exit)
