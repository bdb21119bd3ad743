"""Headless command line over the same engine as the app: `python -m spade_viz COMMAND ...`.

Every command takes `--model` (default: the embedded default model). Bad input ends with a
non-zero exit and a one-line reason on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import SpadeVizError
from .models.loading import DEFAULT_MODEL, DTYPES


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"HF id, local folder, .gguf file, or '{DEFAULT_MODEL}' (default)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))


def _load(args):
    from .models.loading import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype,
                      progress=lambda message: print(message, file=sys.stderr))


def _cmd_analyze(args) -> None:
    from .analysis import analyze

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    lm = _load(args)
    res = analyze(lm, prompt, top_k=args.top_k, target=args.target, spade_positions=args.spade_positions,
                  max_tokens=args.max_tokens)
    if args.json:
        print(res.to_json())
        return
    print(f"model {res.model_name}: {res.num_layers} layers; {len(res.tokens)} tokens "
          f"(answer position {res.answer_position}); final answer {res.token(res.final_answer_id)!r}, "
          f"target {res.token(res.target_id)!r}")
    print(f"{'layer':>5}  {'logit lens':<16} {'H':>5}  {'SPADE':<16} {'H':>5}  {'no <s>':<16} {'H':>5}")
    for layer in range(res.num_layers + 1):
        cells = []
        for name in ("logit_lens", "spade", "spade_no_bos"):
            stats = res.answer[name]
            cells.append(f"{res.token(stats.top1[layer, 0])!r:<16.16} {stats.entropy[layer, 0]:5.2f}")
        print(f"{layer:>5}  " + "  ".join(cells))
    for name in ("logit_lens", "spade"):
        first = res.first_stable_layer(name)
        print(f"{name}: top-1 equals the final answer from layer {first} on")


def _cmd_fetch(_args) -> None:
    from .models.loading import ensure_default_model

    folder = ensure_default_model(progress=lambda message: print(message, file=sys.stderr))
    print(f"default model ready in {folder}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spade_viz", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help="decode every layer of one prompt")
    analyze.add_argument("prompt", help="the prompt text ('-' reads standard input)")
    _add_model_args(analyze)
    analyze.add_argument("--top-k", type=int, default=5)
    analyze.add_argument("--target", default=None, help="target token at the answer position (default: final top-1)")
    analyze.add_argument("--spade-positions", default="original", choices=["original", "renumbered"])
    analyze.add_argument("--max-tokens", type=int, default=512)
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.set_defaults(run=_cmd_analyze)

    fetch = commands.add_parser("fetch", help=f"fetch and convert the embedded default model ({DEFAULT_MODEL})")
    fetch.set_defaults(run=_cmd_fetch)

    from .exit.cli_commands import add_exit_commands

    add_exit_commands(commands, _add_model_args)  # exit-curve, real-exit
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SpadeVizError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
