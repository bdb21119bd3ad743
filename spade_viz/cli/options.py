"""What every command shares: strict argument types, one-line parse errors, datasets that report every
warning, and output paths checked against the inputs before any work.

Library messages name Python parameters (`name` or `name=value`, in backticks); `as_flags` puts the
CLI's flag in their place before a message is printed.

Numbers: `finite_float(low, high)` and `whole(low, high)` refuse NaN, infinities, fractions where a
count is meant and anything out of range, as `error: argument --x: <reason>` with exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from ..data import load_task_or_file
from ..errors import InputError, check_number
from ..models.loading import DEFAULT_MODEL, cache_dir
from ..progress import Progress

NOTES_SHOWN = 12  # warning lines printed per dataset (the rest is counted)
# the Python parameter a library message names -> the flag that sets it
FLAGS = {
    "calibrate_split": "--calibrate-split",
    "cost": "--cost",
    "default_length": "--length",
    "device": "--device",
    "linear_spade": "--linear-spade",
    "max_tokens": "--max-tokens",
    "model": "--model",
}
_PARAMETER = re.compile(r"`(\w+)(?:=(['\"]?)([^`]*?)\2)?`")  # `name`, `name=value`, `name='value'`


def as_flags(message: str) -> str:
    """A library message in the CLI's words: `max_tokens` -> --max-tokens, `device='cpu'` -> --device cpu."""
    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(3)
        if name not in FLAGS:
            return match.group(0)
        return FLAGS[name] + (f" {value}" if value is not None else "")

    return _PARAMETER.sub(flag, message)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (`error: ... (see `prog --help`)`), exit status 2."""

    def error(self, message: str):
        """Print the reason in one line and exit with status 2 (argparse prints the whole usage)."""
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> Callable[[str], float]:
    """An argparse `type`: a finite number in the range (open ends with `low_open` / `high_open`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        try:
            return check_number("it", value, low, high, low_open, high_open)
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("it ")) from None

    parse.__name__ = "number"
    return parse


def whole(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if low is not None and high is not None else \
                f"at least {low}" if low is not None else f"at most {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def warn(lines: Iterable[str]) -> list[str]:
    """Print each line as `warning: ...` on stderr; return them (for a --json "warnings" key)."""
    lines = [as_flags(line) for line in lines]
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)
    return lines


def skipped_notes(skipped: Iterable[tuple[str, str]], limit: int = NOTES_SHOWN) -> list[str]:
    """One line per example a model could not read (too long, no answer token...), at most `limit`."""
    lines = [f"skipped example {example_id}: {reason}" for example_id, reason in skipped]
    if len(lines) > limit:
        lines = lines[: limit - 1] + [f"... and {len(lines) - limit + 1} more skipped examples"]
    return lines


def load_dataset_noted(spec: str):
    """`--dataset` (a file or a built-in task) with every loader warning printed: (dataset, warnings)."""
    dataset = load_task_or_file(spec)
    return dataset, warn(dataset.notes(NOTES_SHOWN))


def existing(*paths: str | None) -> list[str]:
    """The arguments that name an existing file or folder (a dataset file, a model folder...)."""
    found = []
    for path in paths:
        if path and Path(path).expanduser().exists():
            found.append(path)
    return found


def model_inputs(model: str | None) -> list[str]:
    """The folder a `--model` reads from (its own, or the embedded default's in the cache): outputs
    may not be written inside it."""
    if model == DEFAULT_MODEL:
        return [str(cache_dir() / "models")]
    return existing(model)


def say(done: float, total: float, message: str) -> None:
    """A progress callback that prints each message on stderr (loading a model, the honest run's steps)."""
    print(message, file=sys.stderr)


class Bars:
    """A progress callback drawing tqdm bars on stderr: one per stage (a message's words before any
    ':'), the rest of the message beside it; a step with no count (total 0) is printed as a line.
    `one_bar`: a job reporting a share of 1 throughout (training the tuned lens) gets one bar."""

    def __init__(self, unit: str = "example", one_bar: str | None = None):
        self.unit, self.one_bar, self.bar, self.stage = unit, one_bar, None, None

    def __call__(self, done: float, total: float, message: str) -> None:
        """Move the stage's bar to `done` of `total` (a new bar when the stage changes)."""
        if not total:
            tqdm.write(message, file=sys.stderr)
            return
        stage, _, detail = message.partition(":")
        if self.one_bar:
            stage, detail, done, total = self.one_bar, message, int(done / total * 100), 100
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit=self.unit if total > 1 else "step", file=sys.stderr,
                            leave=False)
        self.bar.n = done
        if detail.strip():
            self.bar.set_postfix_str(detail.strip()[:60], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        """Close the bar drawn last (call once the job is over, even when it failed)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def each_tenth(progress: Progress, what: str) -> Progress:
    """`progress` told once per tenth of the way, as a line: `what: 40% (message)`."""
    shown = [-1]

    def tell(done: float, total: float, message: str) -> None:
        share = done / total if total else 0.0
        if int(share * 10) != shown[0]:
            shown[0] = int(share * 10)
            progress(0, 0, f"{what}: {share:4.0%} ({message})")

    return tell
