"""The `exit-curve` and `real-exit` subcommands, registered by `spade_viz.cli.build_parser`."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..decoders import canonical
from ..errors import InputError
from ..exit.arrays import ExitArrays
from ..exit.cost import Checkpoints, CostModel
from ..exit.honest import calibrated_real_exit
from ..exit.real import format_real_exit, prepare_prompts, run_real_exit
from ..exit.report import exit_curve_report, format_exit_curve, resolve_cost
from ..exit.simulate import search_checkpoints
from ..lenses.affine import AffineLens, find_lens
from ..models.loading import config_parameter_counts, load_model
from ..progress import Progress, no_progress
from .options import each_tenth, finite_float, load_dataset_noted, say, skipped_notes, warn, whole


def _checkpoint_args(parser: argparse.ArgumentParser, default: str = "all") -> None:
    parser.add_argument("--checkpoints", default=None if default == "all" else default,
                        help="where the exit test runs: all (every layer from 1), every:K, from:M, "
                             f"every:K,from:M, or layers:A,B,... (default: {default})" + (
                                 "; also 'calibrated': the layout (and threshold) with the largest speedup within "
                                 "the tolerance on every other example, the curve scored on the others; and "
                                 "'search': the same chosen and scored on all examples (optimistic)"
                                 if default == "calibrated" else ""))
    parser.add_argument("--continuation-tokens", type=finite_float(0, 1000), default=None,
                        help="rows charged in the one-token SPADE continuation (default 1; the paper charges 2)")


def _cmd_exit_curve(args) -> None:
    if args.thresholds < 2:
        raise InputError("--thresholds must be at least 2")
    if not 0 <= args.tolerance < 1:
        raise InputError("--tolerance is a share of examples, between 0 and 1 (0.01 = one point)")
    if args.cost and args.model:
        raise InputError("--cost gives the parameter counts, so --model (whose config would give them) is not "
                         "used: drop one")
    layout = args.checkpoints.strip().lower()
    arrays = ExitArrays.from_csv(args.sweep, default_length=args.length)
    note = None
    if layout == "calibrated" and len(arrays) < 4:
        layout = "all"
        note = f"{len(arrays)} examples are too few to choose on half and score on the other: every layer"
    checkpoints = None if layout in ("search", "calibrated") else Checkpoints.parse(layout)
    cost = resolve_cost(arrays.meta, cost=args.cost, model=args.model, counts_of=config_parameter_counts,
                        continuation_tokens=args.continuation_tokens)
    searched, calibration = None, None
    threshold = args.threshold
    if checkpoints is None:
        arrays.require(args.confidence, " to use as the exit confidence")
        if layout == "calibrated":
            chosen_on, arrays = arrays.calibration_split()
        else:
            chosen_on = arrays
        searched = search_checkpoints(chosen_on, cost, args.confidence, args.answer, tolerance=args.tolerance)
        checkpoints = Checkpoints.parse(searched["checkpoints"].iloc[0])
        if layout == "calibrated":
            threshold = float(searched["threshold_within_1pt"].iloc[0]) if threshold is None else threshold
            calibration = {"split": "every other example", "n_calibration": len(chosen_on), "n_heldout": len(arrays),
                           "checkpoints": searched["checkpoints"].iloc[0], "threshold": threshold,
                           "calibration_speedup_within_1pt": float(searched["speedup_within_1pt"].iloc[0])}
    report = exit_curve_report(arrays, cost, checkpoints, args.confidence, args.answer, args.thresholds,
                               args.tolerance, threshold)
    if note:
        report["note"] = note
    if calibration is not None:
        report["calibration"] = calibration
    elif searched is not None:
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
    if args.calibrate_split is not None:
        _cmd_calibrated_real_exit(args)
        return
    if args.shortlist_top is not None:
        raise InputError("--shortlist-top shapes the confidence that --calibrate-split chooses; without it the "
                         "saved linear SPADE's own confidence is used: drop --shortlist-top, or add --calibrate-split")
    args.checkpoints = args.checkpoints or "all"
    if args.threshold is None:
        raise InputError("real-exit needs --threshold, or --calibrate-split to choose it on part of the data")
    notes: list[str] = []
    report = real_exit_from_cli(args, progress=say, warnings=notes)
    if args.json:
        print(json.dumps(_clean({**report.to_dict(), "warnings": notes}), allow_nan=False, default=_json_default))
    else:
        print(format_real_exit(report))


def _cmd_calibrated_real_exit(args) -> None:
    """`real-exit --calibrate-split S`: every choice on the first part, the measurement on the rest."""
    if args.threshold is not None or args.lens is not None or args.checkpoints is not None:
        raise InputError("with --calibrate-split the lens, the checkpoints and the threshold are chosen on the "
                         "calibration part: drop --threshold, --lens and --checkpoints")
    if args.shortlist_top is None:
        args.shortlist_top = 10
    dataset, notes = load_dataset_noted(args.dataset)
    if args.limit:
        dataset = dataset.head(args.limit)
    lm = load_model(args.model, device=args.device, dtype=args.dtype, max_memory=args.max_memory,
                    progress=say)
    cost = CostModel.from_lm(lm)
    if args.continuation_tokens is not None:
        cost = cost.with_options(continuation_tokens=args.continuation_tokens)
    result = calibrated_real_exit(lm, dataset, args.calibrate_split, args.repeats, cost=cost,
                                  batch_size=args.batch_size, shortlist_top=args.shortlist_top, progress=say)
    notes += warn(result.warnings)
    if args.json:
        print(json.dumps(_clean({**result.to_dict(), "warnings": notes}), allow_nan=False, default=_json_default))
    else:
        print(f"chosen on {result.n_calibration} calibration examples: checkpoints {result.checkpoints}, threshold "
              f"{result.threshold:.3f} ({result.simulated_calibration_speedup:.2f}x simulated there)")
        print(f"measured on {result.n_heldout} held-out examples:")
        print(format_real_exit(result.report))


def real_exit_from_cli(args, progress: Progress | None = None, warnings: list[str] | None = None):
    """The `real-exit` subcommand: load model, dataset and lens from its arguments, run, report.

    The dataset's warnings and the examples skipped are printed on stderr and added to `warnings`.
    """
    checkpoints = Checkpoints.parse(args.checkpoints)
    dataset, notes = load_dataset_noted(args.dataset)
    examples = list(dataset.examples)[: args.limit] if args.limit else list(dataset.examples)
    lm = load_model(args.model, device=args.device, dtype=args.dtype, max_memory=args.max_memory,
                    progress=progress or no_progress)
    lens = AffineLens.load(Path(args.lens), lm) if args.lens else find_lens(lm, "linear_spade")
    if lens is None:
        raise InputError("no linear SPADE is saved for this model: fit one first (`python -m spade_viz calibrate`)")
    cost = CostModel.from_lm(lm)
    if args.continuation_tokens is not None:
        cost = cost.with_options(continuation_tokens=args.continuation_tokens)
    skipped: list = []
    prompts = prepare_prompts(lm, examples, skipped=skipped)
    notes += warn(skipped_notes(skipped))
    if warnings is not None:
        warnings.extend(notes)
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    timing = each_tenth(progress, "timing") if progress is not None else None
    return run_real_exit(lm, prompts, lens, args.threshold, checkpoints, cost, args.repeats, progress=timing,
                         batch_size=args.batch_size)


def add_exit_commands(commands, add_model_args) -> None:
    """Register `exit-curve` and `real-exit` on the CLI's subparsers; `add_model_args` adds the model options."""
    curve = commands.add_parser(
        "exit-curve", help="hybrid early exit over all thresholds, from a sweep CSV (no model needed)"
    )
    curve.add_argument("--sweep", required=True, help="CSV written by `sweep` (one row per example, layer, decoder)")
    _checkpoint_args(curve, default="calibrated")
    curve.add_argument("--confidence", default="linear_spade", type=canonical,
                       help="decoder whose entropy is the confidence (default: linear_spade; the paper's v2 names "
                            "simlens and linear_simlens are taken too)")
    curve.add_argument("--answer", default="spade", type=canonical,
                       help="decoder that answers at the exit layer (default: spade, alias simlens)")
    curve.add_argument("--thresholds", type=whole(2, 100_000), default=200,
                       help="number of entropy quantiles tried (default 200)")
    curve.add_argument("--threshold", type=finite_float(0), default=None, help="also report this one threshold")
    curve.add_argument("--tolerance", type=finite_float(0, 1, high_open=True), default=0.01,
                       help="accuracy loss allowed for the speedup operating point (default 0.01 = 1 point)")
    curve.add_argument("--cost", default=None, help="parameter counts BLOCK,HEAD,MAP (default: from the sweep's "
                                                    "metadata or the model's config)")
    curve.add_argument("--model", default=None, help="model whose config gives the parameter counts "
                                                     "(default: the one the sweep names)")
    curve.add_argument("--length", type=whole(1, 1_000_000), default=None,
                       help="prompt length in tokens, when the sweep has no n_tokens column")
    curve.add_argument("--json", action="store_true", help="print one JSON object")
    curve.set_defaults(run=_cmd_exit_curve)

    real = commands.add_parser(
        "real-exit", help="run the hybrid exit for real (the forward pass stops) and time it against full passes"
    )
    add_model_args(real)
    real.add_argument("--dataset", required=True,
                      help="built-in task name, a JSONL/CSV file, or hf:<id>[:config][:split] (Hugging Face)")
    real.add_argument("--threshold", type=finite_float(0), default=None,
                      help="exit when the confidence entropy is below this (not with --calibrate-split)")
    real.add_argument("--calibrate-split", type=finite_float(0, 1, low_open=True, high_open=True), default=None,
                      help="the honest run: fit linear SPADE, sweep and choose the checkpoints and threshold on "
                           "this share of the examples (e.g. 0.5), then time the real exit on the rest")
    _checkpoint_args(real)
    real.add_argument("--lens", default=None, help="linear-SPADE file (default: the one saved for this model)")
    real.add_argument("--limit", type=whole(1), default=None, help="use the first N examples")
    real.add_argument("--repeats", type=whole(1, 1000), default=3, help="timed rounds over the dataset (default 3)")
    real.add_argument("--batch-size", type=whole(1, 4096), default=64,
                      help="prompts per forward pass, confident ones leaving the batch at their exit: the "
                           "throughput a server sees (default 64); 1 times one prompt's latency")
    real.add_argument("--shortlist-top", type=whole(0, 1000), default=None,
                      help="with --calibrate-split: the confidence is linear SPADE's entropy over the tokens the "
                           "full model ranks in its top K on the calibration prompts, so a checkpoint reads those "
                           "rows of the unembedding, not all of them (default 10; 0: the whole vocabulary)")
    real.add_argument("--json", action="store_true", help="print one JSON object")
    real.set_defaults(run=_cmd_real_exit)
