"""Headless command line over the same engine as the app: `python -m spade_viz COMMAND ...`.

Every command takes `--model` (default: the embedded default model). Bad input ends with a
non-zero exit and a one-line reason on stderr, never a traceback.

Threads: torch computes on `min(cores, 4)` threads (`SPADE_VIZ_THREADS=N` sets another count), not
on every core: two commands running at once on every core each slow each other down many times
over (bench/cli_threads.py measures it), and past 4 threads these small matrix products gain little.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .. import compare
from ..analysis import analyze
from ..data import builtin_tasks
from ..errors import InputError, SpadeVizError, check_text
from ..explore import view_script
from ..files import atomic_write_text, check_output
from ..lenses.affine import default_lens_path
from ..lenses.linear_spade import fit_linear_spade, format_scores
from ..lenses.tuned import read_calibration_text, train_tuned_lens
from ..limits import DEFAULT_TOKEN_LIMIT
from ..models.loading import DEFAULT_MODEL, DTYPES, ensure_default_model, load_model
from ..sweep import SweepSettings, run_sweep
from ..sweep.distributed import launched_processes
from .exit_commands import add_exit_commands
from .explore_args import add_explore_args, check_explore_args, explore_extras, print_extras
from .options import (
    Bars,
    Parser,
    as_flags,
    existing,
    finite_float,
    load_dataset_noted,
    model_inputs,
    say,
    skipped_notes,
    warn,
    whole,
)

MAX_TOKENS = whole(2, 1_000_000)  # --max-tokens; the model's own context length caps it too


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"HF id, local folder, .gguf file, or '{DEFAULT_MODEL}' (default)")
    parser.add_argument("--device", default="auto",
                        help="auto (every GPU, a model too large for them spilling to CPU memory and disk; else "
                             "mps, else cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--max-memory", default=None, metavar="DEV=SIZE,...",
                        help="spread the model over these devices within these sizes, the rest on disk: "
                             "e.g. 0=20GiB,1=20GiB,cpu=60GiB (GPU index or cpu)")


def _load(args):
    return load_model(args.model, device=args.device, dtype=args.dtype, max_memory=args.max_memory,
                      progress=say)


def _cmd_analyze(args) -> None:
    prompt = _read_stdin() if args.prompt == "-" else args.prompt
    check_text("the prompt", prompt)  # undecodable bytes in the command line: refused before the model loads
    if args.target is not None:
        check_text("the target", args.target)
    script = check_explore_args(args)
    lm = _load(args)
    res = analyze(lm, prompt, top_k=args.top_k, target=args.target, spade_positions=args.spade_positions,
                  without_bos=args.without_bos, max_tokens=args.max_tokens)
    extra = explore_extras(args, lm, prompt, res)
    if script is not None:
        atomic_write_text(script, view_script({
            "model": args.model, "prompt": prompt, "spade_positions": args.spade_positions,
            "max_tokens": args.max_tokens, "target": args.target, "metric": "entropy", "pins": args.pin,
            "generate": args.generate}))
        print(f"wrote {script}", file=sys.stderr)
    if args.json:
        print(json.dumps({**res.to_dict(), **extra}, ensure_ascii=False) if extra else res.to_json())
        return
    print(f"model {res.model_name}: {res.num_layers} layers; {len(res.tokens)} tokens "
          f"(answer position {res.answer_position}); final answer {res.token(res.final_answer_id)!r}, "
          f"target {res.token(res.target_id)!r}")
    shown = {"logit_lens": "logit lens", "spade": "SPADE", "spade_no_bos": "no <s>"}
    shown = {name: label for name, label in shown.items() if name in res.answer}
    print(f"{'layer':>5}  " + "  ".join(f"{label:<16} {'H':>5}" for label in shown.values()))
    for layer in range(res.num_layers + 1):
        cells = []
        for name in shown:
            stats = res.answer[name]
            cells.append(f"{res.token(stats.top1[layer, 0])!r:<16.16} {stats.entropy[layer, 0]:5.2f}")
        print(f"{layer:>5}  " + "  ".join(cells))
    for name in ("logit_lens", "spade"):
        first = res.first_stable_layer(name)
        print(f"{name}: top-1 equals the final answer from layer {first} on")
    print_extras(extra)


def _read_stdin() -> str:
    """Standard input as UTF-8 text, or an InputError naming the first byte that is not."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes underneath (tests, some shells)
        return sys.stdin.read()
    raw = stream.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"standard input is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                         "save it as UTF-8") from None


def _cmd_fetch(_args) -> None:
    folder = ensure_default_model(progress=say)
    print(f"default model ready in {folder}")


def _cmd_sweep(args) -> None:
    mode = args.linear_spade
    if args.calibration is not None and mode in ("off", "crossfit"):
        refuse("--calibration names a saved linear SPADE, which --linear-spade " + mode + " does not use")
    for flag, value in (("--folds", args.folds), ("--ridge", args.ridge)):
        if value is not None and mode in ("off", "saved"):
            refuse(f"{flag} sets the cross-fitting, which --linear-spade {mode} does not do")
    args.folds, args.ridge = args.folds or 5, args.ridge or 1e-2

    inputs = [*existing(args.dataset, args.calibration), *model_inputs(args.model)]
    out = check_output(args.out, inputs, what="--out")  # refused before any work, never after the sweep
    check_output(out.with_suffix(".meta.json"), inputs, what="the metadata file beside --out")
    settings = SweepSettings(batch_size=args.batch_size, spade_positions=args.spade_positions,
                             linear_spade=args.linear_spade, folds=args.folds, ridge=args.ridge,
                             tuned_lens=not args.no_tuned_lens, max_tokens=args.max_tokens)
    dataset, _notes = load_dataset_noted(args.dataset)
    with launched_processes(args.device) as processes:  # alone, or one of those torchrun / accelerate launch started
        args.device = processes.device  # under a launcher: this process's own GPU
        with processes.machine_first():
            lm = _load(args)
        bars = Bars()
        try:
            result = run_sweep(lm, dataset, settings, use_cache=not args.no_cache, linear_spade_map=args.calibration,
                               progress=bars, processes=processes)
        finally:
            bars.close()
    if result is None:  # not rank 0, which writes the sweep of all the processes
        return
    out, meta_path = result.to_csv(args.out, inputs)
    warn(skipped_notes(result.skipped))
    timing = "from the cache" if result.from_cache else f"in {result.info['timings_s']['total']:.1f} s"
    print(f"sweep of '{result.dataset_name}' on {result.model_name}: {result.num_examples} examples x "
          f"{result.num_layers + 1} layers x {len(result.decoders)} decoders {timing}"
          + (f"; {len(result.skipped)} skipped (first: {result.skipped[0][0]}: {result.skipped[0][1]})"
             if result.skipped else ""))
    print(f"linear SPADE: {as_flags(result.linear_spade_source)}")
    print(result.format_table())
    print("\nhow early each decoder gets there:")
    print(compare.format_table(compare.first_layers(compare.layer_curves(result.summary())), result.num_layers))
    print(f"wrote {out} and {meta_path}")


def _cmd_calibrate(args) -> None:
    if args.out is not None:  # never over the dataset, the text or the model; refused before any work
        check_output(args.out, [*existing(args.dataset, args.text), *model_inputs(args.model)], what="--out")
    if args.lens == "tuned":
        if args.dataset:
            raise InputError("the tuned lens trains on text (--text FILE or self-generated text), not on --dataset")
        for flag in [flag for flag, *_ in _LINEAR_ONLY] + ["--spade-positions", "--json"]:
            if getattr(args, flag[2:].replace("-", "_")) not in (None, False):
                refuse(f"{flag} applies to linear SPADE, not to the tuned lens")
        texts = None
        if args.text:
            path = Path(args.text).expanduser()
            if not path.is_file():
                raise InputError(f"no such text file: {args.text}")
            texts = read_calibration_text(path.read_bytes(), f"the text file {args.text}")
        lm = _load(args)
        bar = Bars(one_bar="tuned lens")
        try:
            lens, result = train_tuned_lens(lm, texts, progress=bar, source=args.text and f"text file {args.text}")
        finally:
            bar.close()
        path = lens.save(args.out or default_lens_path(lm, "tuned_lens"))
        print(result.summary())
        print(result.table())
        print(f"saved {path}")
        return

    if args.text:
        raise InputError("linear SPADE is fitted on the answer rows of a task (--dataset NAME or FILE); maps fitted "
                         "on generic text transfer poorly to answer positions (see spade_viz/lenses/linear_spade.py)")
    if not args.dataset:
        raise InputError("give --dataset: a built-in task (" + ", ".join(builtin_tasks()) + ") or a JSONL/CSV file")
    for flag, _kind, default, _text in _LINEAR_ONLY:
        if getattr(args, flag[2:].replace("-", "_")) is None:
            setattr(args, flag[2:].replace("-", "_"), default)
    args.spade_positions = args.spade_positions or "original"
    dataset, notes = load_dataset_noted(args.dataset)
    lm = _load(args)
    bars = Bars()
    try:
        fitted = fit_linear_spade(lm, dataset, heldout=args.heldout, ridge=args.ridge,
                                  spade_positions=args.spade_positions, seed=args.seed, batch_size=args.batch_size,
                                  max_tokens=args.max_tokens, out=args.out, progress=bars)
    finally:
        bars.close()
    notes += warn(skipped_notes(fitted.skipped))
    if args.json:
        scores = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
                  for row in fitted.scores]  # a constant entropy has no correlation: null, strict JSON
        print(json.dumps({"path": str(fitted.path), "n_train": fitted.n_train,
                          "n_heldout": fitted.n_heldout, "split": fitted.lens.meta.get("split"),
                          "heldout": scores, "warnings": notes}, allow_nan=False))
        return
    print(fitted.describe())
    print(f"held-out scores ({fitted.lens.meta['split']}):")
    print(format_scores(fitted.scores))
    print(f"saved {fitted.path}")


_LINEAR_ONLY = [  # calibrate's options for linear SPADE alone: flag, type, default, help
    ("--heldout", finite_float(0, 1, low_open=True, high_open=True), 0.25, "share of examples held out"),
    ("--ridge", finite_float(0, low_open=True), 1e-2, "ridge penalty"),
    ("--seed", whole(0, 2**32 - 1), 0, "seed of the training / held-out split"),
    ("--batch-size", whole(1, 4096), 16, "examples per forward pass"),
    ("--max-tokens", MAX_TOKENS, DEFAULT_TOKEN_LIMIT, "longest prompt in tokens"),
]


def refuse(reason: str) -> None:
    """An option that does not apply to what was asked: refused, not silently dropped."""
    raise InputError(f"{reason}: drop it")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser: one subcommand per task, each with its handler in ``args.run``."""
    # `spade-viz` when run as the installed command, `python -m spade_viz` otherwise.
    prog = "spade-viz" if Path(sys.argv[0]).name == "spade-viz" else "python -m spade_viz"
    parser = Parser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help="decode every layer of one prompt")
    analyze.add_argument("prompt", help="the prompt text ('-' reads standard input)")
    _add_model_args(analyze)
    analyze.add_argument("--top-k", type=whole(1, 100), default=5, help="top tokens kept per cell (1-100)")
    analyze.add_argument("--target", default=None, help="target token at the answer position (default: final top-1)")
    analyze.add_argument("--spade-positions", default="original", choices=["original", "renumbered"])
    analyze.add_argument("--without-bos", action="store_true",
                         help="add the ablation 'SPADE without <s>' (a second SPADE pass)")
    analyze.add_argument("--max-tokens", type=MAX_TOKENS, default=DEFAULT_TOKEN_LIMIT,
                         help=f"longest prompt, in tokens with the start token (default {DEFAULT_TOKEN_LIMIT})")
    add_explore_args(analyze)
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.set_defaults(run=_cmd_analyze)

    fetch = commands.add_parser("fetch", help=f"fetch and convert the embedded default model ({DEFAULT_MODEL})")
    fetch.set_defaults(run=_cmd_fetch)

    sweep = commands.add_parser("sweep", help="every example x layer x decoder of a dataset, to a CSV")
    _add_model_args(sweep)
    sweep.add_argument("--dataset", required=True,
                       help="built-in task name, a JSONL/CSV file, or hf:<id>[:config][:split] (a Hugging Face "
                            "dataset: Hub id, save_to_disk folder, .parquet/.arrow; options :shots=K :limit=N)")
    sweep.add_argument("--out", default="results.csv", help="CSV to write (default results.csv; its metadata "
                                                            "goes to the same name with .meta.json)")
    sweep.add_argument("--batch-size", type=whole(1, 4096), default=16, help="examples per forward pass (default 16)")
    sweep.add_argument("--no-cache", action="store_true", help="recompute even when a cached sweep matches")
    sweep.add_argument("--spade-positions", default="original", choices=["original", "renumbered"])
    sweep.add_argument("--linear-spade", default="auto", choices=["auto", "saved", "crossfit", "off"],
                       help="auto: the saved map when it matches and was fitted on none of these "
                            "examples, else k-fold cross-fitting on this dataset (default)")
    sweep.add_argument("--calibration", default=None, help="linear-SPADE file (default: the one saved for the model)")
    sweep.add_argument("--folds", type=whole(2, 1000), default=None, help="k of the cross-fitting (default 5)")
    sweep.add_argument("--ridge", type=finite_float(0, low_open=True), default=None,
                       help="ridge of the cross-fitted maps (default 0.01)")
    sweep.add_argument("--no-tuned-lens", action="store_true", help="leave out the saved tuned lens")
    sweep.add_argument("--max-tokens", type=MAX_TOKENS, default=DEFAULT_TOKEN_LIMIT)
    sweep.set_defaults(run=_cmd_sweep)

    calibrate = commands.add_parser("calibrate", help="fit linear SPADE (or train a tuned lens) and save it")
    _add_model_args(calibrate)
    calibrate.add_argument("--lens", default="linear_spade", choices=["linear_spade", "tuned"],
                           help="what to fit (default linear_spade)")
    calibrate.add_argument("--dataset", default=None,
                           help="linear SPADE: built-in task name, a JSONL/CSV file, or hf:<id>[:config][:split]")
    calibrate.add_argument("--text", default=None, help="tuned lens: training text file (paragraphs; default: "
                                                        "text the model writes itself)")
    calibrate.add_argument("--out", default=None, help="where to save (default: the model's lens folder in the "
                                                       "cache, where the app and sweep find it)")
    for flag, kind, default, text in _LINEAR_ONLY:
        calibrate.add_argument(flag, type=kind, default=None, help=f"linear SPADE: {text} (default {default})")
    calibrate.add_argument("--spade-positions", default=None, choices=["original", "renumbered"],
                           help="linear SPADE: position ids of the SPADE pass it imitates (default original)")
    calibrate.add_argument("--json", action="store_true", help="linear SPADE: print one JSON object")
    calibrate.set_defaults(run=_cmd_calibrate)

    add_exit_commands(commands, _add_model_args)  # exit-curve, real-exit

    app = commands.add_parser("app", help="warm up (model, first analysis), then serve the Streamlit app in this "
                                          "process; Streamlit's own flags follow (--server.port 8502)")
    app.set_defaults(run=None)  # served by the app layer (`spade_viz.app.command`), which hands itself in
    return parser


THREADS_ENV = "SPADE_VIZ_THREADS"
DEFAULT_THREADS = 4


def thread_count(environ: dict | None = None) -> int:
    """The threads torch computes on: SPADE_VIZ_THREADS, else min(usable cores, 4)."""
    given = (os.environ if environ is None else environ).get(THREADS_ENV, "").strip()
    if given:
        if not given.isdigit() or not 1 <= int(given) <= 1024:
            raise InputError(f"{THREADS_ENV} is a whole number of threads between 1 and 1024, not {given!r}")
        return int(given)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, DEFAULT_THREADS))


def main(argv: list[str] | None = None, app=None) -> int:
    """Run one command (``argv``, else the process arguments): exit status 0, 2 on bad input, 130 if interrupted.

    `app(streamlit_flags)` serves the `app` command (the Streamlit layer sits above this one)."""
    import torch

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "app":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(thread_count())
        if args.command == "app":
            if app is None:
                raise InputError("the app command runs as `spade-viz app` or `python -m spade_viz app`")
            app(extra)
        else:
            args.run(args)
    except SpadeVizError as err:
        print(f"error: {as_flags(_one_line(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the disk, not the code: a full disk, a file another program removed...
        print(f"error: {err.strerror or _one_line(err)}" + (f": {err.filename}" if err.filename else ""),
              file=sys.stderr)
        return 2
    except Exception as err:  # a bug: one line, and the traceback only when asked for
        if os.environ.get("SPADE_VIZ_DEBUG"):
            raise
        print(f"error: unexpected {type(err).__name__}: {_one_line(err)} (a bug: please report it; "
              "SPADE_VIZ_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    finally:
        torch.set_num_threads(before)  # called in a process that goes on (tests, scripts): leave it as it was
    return 0


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
