"""Shareable links: a page's state <-> the query parameters of its URL, validated.

Pure functions (no Streamlit): the pages say which parameters they keep (`explore_params`,
`exit_params`), `encode` writes the values that differ from the defaults as strings, and `decode`
reads a link back, falling back to the default for anything malformed and saying why, so a bad link
gives a clear message and a working page.

    params = explore_params(presets=["Capitals", ...], metrics=["entropy", ...], max_tokens=512)
    query = encode({"prompt": "Germany:", "metric": "top1_prob"}, params)   # {"metric": "top1_prob", ...}
    link = decode(query, params)          # link.state: every parameter; link.given; link.problems
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MAX_TEXT = 4000  # characters of a prompt in a link: browsers and servers take URLs of ~8 kB
IGNORED = ("embed", "embed_options")  # Streamlit's own parameters


@dataclass(frozen=True)
class Param:
    """One query parameter: its name in the URL, the state it holds, its type and its default."""

    key: str  # the name in the URL (short)
    name: str  # the name in the page's state
    kind: str  # "text", "int", "float", "choice" or "bool"
    default: object = None
    label: str = ""  # for messages
    choices: tuple = ()  # kind "choice": the allowed values (strings, or ints)
    low: float | None = None
    high: float | None = None
    max_len: int = MAX_TEXT

    def format(self, value) -> str:
        """The value as it appears in the URL."""
        if self.kind == "bool":
            return "1" if value else "0"
        if self.kind == "float":
            return repr(float(value))  # the shortest text that reads back as the same float
        return str(value)

    def parse(self, text: str):
        """The value a URL's text stands for; ValueError (with the reason) when it is not one."""
        what = self.label or self.key
        if self.kind == "text":
            if len(text) > self.max_len:
                raise ValueError(f"the {what} is {len(text):,} characters long (at most {self.max_len:,})")
            if any(ord(c) < 32 and c not in "\n\t\r" for c in text):
                raise ValueError(f"the {what} holds control characters")
            return text
        if self.kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"the {what} is '{text[:40]}', not 1 or 0")
        if self.kind == "choice":
            for choice in self.choices:
                if text == str(choice):
                    return choice
            shown = ", ".join(str(c) for c in self.choices[:8]) + (", …" if len(self.choices) > 8 else "")
            raise ValueError(f"the {what} is '{text[:40]}', not one of {shown}")
        try:
            value = int(text) if self.kind == "int" else float(text)
        except ValueError:
            raise ValueError(f"the {what} is '{text[:40]}', not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"the {what} is '{text[:40]}', not a finite number")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"the {what} is {text[:40]}, outside {self.low:g}..{self.high:g}"
                             if self.high is not None else f"the {what} is {text[:40]}, below {self.low:g}")
        return value


@dataclass
class Link:
    """What a link holds: every parameter's value (the default where it gave none or a bad one)."""

    state: dict
    given: set = field(default_factory=set)  # parameters the link set (validly)
    problems: list[str] = field(default_factory=list)  # one sentence each

    def message(self) -> str:
        """One line for the page: what in the link was not used, or '' when all was well."""
        if not self.problems:
            return ""
        return "Part of this link could not be used (the default is shown instead): " + "; ".join(self.problems) + "."


def encode(state: Mapping, params: Sequence[Param], keep: Sequence[str] = ()) -> dict[str, str]:
    """The query parameters for `state`: the values that differ from the defaults (and those named in
    `keep`, whatever their value), in `params`' order. None is never written."""
    query = {}
    for param in params:
        value = state.get(param.name, param.default)
        if value is None or (value == param.default and param.name not in keep):
            continue
        query[param.key] = param.format(value)
    return query


def decode(query: Mapping[str, str | Sequence[str]], params: Sequence[Param]) -> Link:
    """Read a link's query parameters back into page state, validated; never raises for a bad link."""
    link = Link({param.name: param.default for param in params})
    known = {param.key: param for param in params}
    unknown = sorted(key for key in query if key not in known and key not in IGNORED)
    for key, raw in query.items():
        param = known.get(key)
        if param is None:
            continue
        text = raw if isinstance(raw, str) else (list(raw)[-1] if len(raw) else "")
        try:
            link.state[param.name] = param.parse(text)
        except ValueError as err:
            link.problems.append(str(err))
        else:
            link.given.add(param.name)
    if unknown:
        link.problems.append(f"unknown parameter{'s' if len(unknown) > 1 else ''} "
                             + ", ".join(f"'{key[:20]}'" for key in unknown[:5]))
    return link


# ------------------------------------------------------------------ the pages' parameters


def explore_params(presets: Sequence[str], metrics: Sequence[str], max_tokens: int,
                   position_modes: Sequence[str] = ("original", "renumbered")) -> tuple[Param, ...]:
    """The Explore page's view: model, prompt, preset, SPADE options, target, metric, window, SPADE grid,
    the clicked cell ('layer,position'), the pinned tokens (a JSON list) and their rank switch, the
    comparison (a second prompt, or a second model) and the generation's length (0: none).

    `target` is '' (the final answer), '#<id>' or a token's text; `model` is '' for the embedded
    default (a link never loads another model by itself: the page asks first).
    """
    return (
        Param("model", "model", "text", "", "model", max_len=500),
        Param("preset", "preset", "choice", presets[0] if presets else None, "preset", tuple(presets)),
        Param("prompt", "prompt", "text", "", "prompt"),
        Param("pos", "spade_positions", "choice", position_modes[0], "SPADE position ids", tuple(position_modes)),
        Param("tokens", "max_tokens", "int", int(max_tokens), "token limit", low=2, high=32768),
        Param("nobos", "show_no_bos", "bool", False, "'show SPADE without <s>' switch"),
        Param("metric", "metric", "choice", metrics[0] if metrics else None, "colour metric", tuple(metrics)),
        Param("target", "target", "text", "", "target token", max_len=200),
        Param("start", "window_start", "int", None, "first position shown", low=0, high=100_000),
        Param("grid", "spade_grid", "bool", False, "'SPADE at every position' switch"),
        Param("cell", "cell", "text", "", "clicked cell", max_len=40),
        Param("pins", "pins", "text", "", "pinned tokens", max_len=1000),
        Param("rank", "pin_rank", "bool", False, "'pinned tokens' rank' switch"),
        Param("vs", "compare_prompt", "text", "", "second prompt"),
        Param("vsmodel", "compare_model", "text", "", "second model", max_len=500),
        Param("gen", "generate", "int", 0, "generated tokens", low=0, high=512),
    )


def exit_params(tasks: Sequence[str], confidences: Sequence[str], limit: int = 200) -> tuple[Param, ...]:
    """The Early-exit page's view: the built-in task, the example limit, the threshold and the
    checkpoint layout (every k-th layer from a first one, continuation tokens, head charge, confidence)."""
    return (
        Param("task", "task", "choice", tasks[0] if tasks else None, "task", tuple(tasks)),
        Param("n", "limit", "int", int(limit), "number of examples", low=1, high=1_000_000),
        Param("tau", "tau", "float", None, "threshold", low=0.0, high=1_000.0),
        Param("every", "every", "int", 1, "checkpoint spacing", low=1, high=10_000),
        Param("first", "start", "int", 1, "first checkpoint layer", low=0, high=10_000),
        Param("cont", "continuation_tokens", "choice", 1, "continuation tokens", (1, 2)),
        Param("head", "include_head", "bool", True, "head charge switch"),
        Param("conf", "confidence", "choice", confidences[0] if confidences else None, "confidence",
              tuple(confidences)),
    )


def compare_params(tasks: Sequence[str], limit: int = 200) -> tuple[Param, ...]:
    """The Compare page's view: the built-in task and the example limit."""
    return (
        Param("task", "task", "choice", tasks[0] if tasks else None, "task", tuple(tasks)),
        Param("n", "limit", "int", int(limit), "number of examples", low=1, high=1_000_000),
    )


def explore_link_state(view: Mapping, preset_texts: Mapping[str, str]) -> dict:
    """The Explore page's widgets -> what its link holds. `view` has the widget values, with
    `prompt` the analysed text and `target` the target picker's value ('final', '#<id>' or 'other',
    then `target_text`). The prompt is left out when it is the preset's own text (a short link), and
    when it is too long for a link (the preset alone is then shared)."""
    state = dict(view)
    prompt = state.get("prompt") or ""
    if prompt == preset_texts.get(state.get("preset"), None) or len(prompt) > MAX_TEXT:
        state["prompt"] = ""
    target = state.pop("target", "final")
    text = state.pop("target_text", "") or ""
    state["target"] = "" if target == "final" else (text if target == "other" else target)
    cell = state.get("cell")
    state["cell"] = f"{cell[0]},{cell[1]}" if cell else ""
    state["pins"] = json.dumps(list(state.get("pins") or []), ensure_ascii=False) if state.get("pins") else ""
    return state


MAX_PINS = 5


def explore_cell(text: str) -> tuple[int, int] | None:
    """A link's clicked cell, 'layer,position' -> (layer, position); None for '' or a malformed one."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def explore_pins(text: str) -> list[str]:
    """A link's pinned tokens (a JSON list of strings, at most `MAX_PINS`); [] for '' or a malformed one."""
    try:
        pins = json.loads(text) if text else []
    except ValueError:
        return []
    if not isinstance(pins, list) or not all(isinstance(p, str) and p for p in pins):
        return []
    return list(dict.fromkeys(pins))[:MAX_PINS]


def explore_target(target: str, options: Sequence[str]) -> tuple[str, str]:
    """A link's target -> (the target picker's value, the text box's value): one of the offered
    '#<id>' options, else 'other' with the text (a token's text or '#<id>'); '' -> the final answer."""
    if not target:
        return "final", ""
    if target in options:
        return target, ""
    return "other", target
