"""`analyze`'s further views: pinned tokens' trajectories (--pin), a greedy generation decoded at every layer
(--generate) and the analysis as a script (--export-script)."""

from __future__ import annotations

from ..errors import InputError, check_text
from ..explore import follow_generation, read_position
from ..explore.cells import MAX_PINS
from ..explore.generation import MAX_GENERATE
from ..files import check_output
from .options import model_inputs, whole


def add_explore_args(analyze) -> None:
    """`analyze`'s --pin, --generate and --export-script."""
    analyze.add_argument("--pin", action="append", default=[], metavar="TOKEN",
                         help=f"follow this token's probability at the answer through the layers, per decoder "
                              f"(text with its leading space, or #id; up to {MAX_PINS}; repeat the flag)")
    analyze.add_argument("--generate", type=whole(0, MAX_GENERATE), default=0, metavar="N",
                         help="also generate N tokens greedily and decode each step at every layer")
    analyze.add_argument("--export-script", default=None, metavar="FILE",
                         help="write a Python script that reproduces this analysis through the public API")


def check_explore_args(args):
    """The pins and the script's path, refused before the model loads: the checked script path or None."""
    if len(args.pin) > MAX_PINS:
        raise InputError(f"at most {MAX_PINS} --pin tokens")
    for pin in args.pin:
        check_text("a pinned token", pin)
        if not pin:
            raise InputError("a --pin token is empty: give its text (with its leading space) or #id")
    if args.export_script is None:
        return None
    return check_output(args.export_script, [*model_inputs(args.model)], what="--export-script")


def explore_extras(args, lm, prompt: str, res) -> dict:
    """What --pin and --generate add to the output (and --export-script's file, written)."""
    extra = {}
    if args.pin:
        extra["pins"] = read_position(lm, res, pins=args.pin).trajectories("prob")
    if args.generate:
        extra["generation"] = follow_generation(lm, prompt, args.generate, spade_positions=args.spade_positions,
                                                max_tokens=args.max_tokens).to_dict()
    return extra


def print_extras(extra: dict) -> None:
    """The pins' trajectories and the generation, as lines under the analysis's table."""
    for pin, per_decoder in extra.get("pins", {}).items():
        for name, probs in per_decoder.items():
            print(f"pin {pin!r} {name}: " + " ".join(f"{p:.3f}" for p in probs))
    if "generation" in extra:
        generation = extra["generation"]
        print(f"generated {len(generation['tokens'])} tokens: {generation['text']!r}")
        for name, first in generation["first_layer"].items():
            print(f"{name}: first layer giving each emitted token: {first}")
