"""Each page's state as one typed object: the one source of truth of what the page shows.

Widgets, the in-browser slider, captions, tables and the shareable link are all derived from these
objects on every run, and every user action changes them in one place (a widget's change callback,
a button, an opened link). They live in the session, under a key no widget owns, so leaving a page
and coming back finds them as they were. Pure: no Streamlit (tests drive them directly).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from ..exit.cost import Checkpoints
from ..exit.session import ExitSettings, LayoutChoice
from . import links

BUILTIN, UPLOAD, HUB = "Built-in task", "Upload a file", "Hugging Face dataset"
DEFAULT_LIMIT = 200  # examples a sweep uses unless the user (or a link) says otherwise


@dataclass
class DataChoice:
    """Which dataset a page uses and how many of its examples (the upload itself stays in its widget)."""

    source: str = BUILTIN
    task: str | None = None  # a built-in task's name (None: the first)
    hf_spec: str = ""
    limit: int | None = None  # None: the default (`DEFAULT_LIMIT`, or all when fewer)

    def examples(self, available: int, most: int) -> int:
        """The example count to use on a dataset of `available` examples when at most `most` are allowed."""
        self.limit = max(1, min(self.limit or DEFAULT_LIMIT, available, most))
        return self.limit

    def query(self) -> dict:
        """The link's view of the data: a built-in task and the limit (an upload cannot be linked)."""
        return {"task": self.task if self.source == BUILTIN else None, "limit": self.limit}

    def take_link(self, link: links.Link) -> None:
        """Take what an opened link says of the data."""
        if "task" in link.given:
            self.source, self.task = BUILTIN, link.state["task"]
        if "limit" in link.given:
            self.limit = link.state["limit"]


LINKED = "link"  # ExitPage.shown: the layout and threshold came from a link, for the next study to show


@dataclass
class ExitPage:
    """The Early-exit page: the data, the checkpoint layout and cost options, the threshold, the
    real-exit choices, and which study the layout and threshold belong to."""

    data: DataChoice = field(default_factory=DataChoice)
    every: int = 1
    start: int = 1
    continuation_tokens: int = 1
    include_head: bool = True
    confidence: str = "linear_spade"
    tau: float | None = None  # always a value of the view's threshold grid once a study shows
    release_id: str | None = None  # the in-browser slider's last release this state took in
    shown: Hashable | None = None  # the study the layout and threshold are for; None: choose when one shows
    note: str = ""  # why the layout is what it is
    real_examples: int = 30
    real_rounds: int = 2
    real_batch: int = 64

    @property
    def settings(self) -> ExitSettings:
        return ExitSettings(every=int(self.every), start=int(self.start),
                            continuation_tokens=float(self.continuation_tokens),
                            include_head=bool(self.include_head), confidence=self.confidence)

    def use(self, settings: ExitSettings) -> None:
        """Take a layout, cost options and confidence (a search, a fitted correction)."""
        self.every, self.start = settings.every, settings.start
        self.continuation_tokens = int(settings.continuation_tokens)
        self.include_head, self.confidence = settings.include_head, settings.confidence

    def apply(self, choice: LayoutChoice, study: Hashable | None = None) -> None:
        """Take a chosen layout and its threshold, and say why (for the study in view)."""
        self.use(choice.settings)
        self.tau, self.note = choice.threshold, choice.note
        if study is not None:
            self.shown = study

    def apply_layout(self, checkpoints: Checkpoints, threshold: float, note: str) -> None:
        """Take a layout chosen elsewhere (an honest run: every k-th layer from a first one, linear SPADE
        as the confidence) and its threshold."""
        self.every, self.start, self.confidence = checkpoints.every, checkpoints.start, "linear_spade"
        self.tau, self.note = float(threshold), note

    def needs_opening(self, study: Hashable) -> bool:
        """Whether `study` coming into view should open at its own chosen layout. A link's layout is
        taken as it is by the first study to show."""
        if self.shown == LINKED:
            self.shown, self.note = study, "Layout and threshold from the link you opened."
            return False
        return self.shown != study

    def query(self, in_view: bool) -> dict:
        """The page's link: the data, and the layout and threshold once a study shows (or a link's)."""
        out = self.data.query()
        if in_view or self.shown == LINKED:
            out |= {"tau": self.tau, "every": self.every, "start": self.start,
                    "continuation_tokens": self.continuation_tokens, "include_head": self.include_head,
                    "confidence": self.confidence}
        return out

    def take_link(self, link: links.Link) -> None:
        """Take an opened link: its data now, its layout and threshold for the next study to show."""
        self.data.take_link(link)
        layout = link.given & {"tau", "every", "start", "continuation_tokens", "include_head", "confidence"}
        if layout:
            for name in ("every", "start", "continuation_tokens", "include_head", "confidence", "tau"):
                setattr(self, name, link.state[name] if name in layout else getattr(ExitPage, name))
            self.shown, self.release_id = LINKED, None


EXIT_LINK_KEEP = ("tau", "every", "start", "continuation_tokens", "include_head", "confidence")


@dataclass
class ComparePage:
    """The Compare page: the data, and the tuned-lens training choices."""

    data: DataChoice = field(default_factory=DataChoice)
    text_source: str = "Text the model writes itself"
    seed_prompts: int = 0  # 0 until the page sets the library's defaults
    tokens_each: int = 0
    steps: int = 0

    def query(self) -> dict:
        """The page's link: the data."""
        return self.data.query()

    def take_link(self, link: links.Link) -> None:
        """Take what an opened link says of the data."""
        self.data.take_link(link)


@dataclass
class ExplorePage:
    """The Explore page: the prompt box and the analysed prompt, the options, and the view."""

    preset: str
    prompt: str  # the text in the box
    request: str | None  # the text analysed (None: nothing yet)
    metric: str
    max_tokens: int
    spade_positions: str = "original"
    show_no_bos: bool = False
    target: str = "final"  # "final", "#<id>" (a candidate) or "other" (then `target_text`)
    target_text: str = ""
    window_start: int | None = None  # first position of the grid's window; None: the window ending at the answer
    spade_grid: bool = False  # SPADE at every position shown (computed on request)
    cell: tuple[int, int] | None = None  # the clicked cell (layer, position): its top-10 shows
    pins: list[str] = field(default_factory=list)  # pinned tokens (text or '#id'), at most links.MAX_PINS
    pin_text: str = ""  # the box a token is typed into before it is pinned
    cell_token: str = ""  # the clicked cell's token picked for pinning ('#<id>')
    pin_rank: bool = False  # the pinned tokens' chart shows ranks (else probabilities)
    compare: str = "off"  # "off", "prompt" (`compare_prompt`) or "model" (`compare_model`)
    compare_prompt: str = ""
    compare_model: str = ""
    generate: int = 0  # tokens of the generation followed (0: none yet)
    generate_length: int = 16  # the length box
    exit_threshold: float = 1.0  # nats of SPADE's entropy: the generation's exit line

    def analyse(self, text: str | None = None) -> None:
        """Analyse the box's text (or `text`, then put in the box): a new prompt starts on the model's
        own answer, with the window ending at the answer."""
        text = self.prompt if text is None else text
        self.prompt = text
        if text != self.request:
            self.request, self.target, self.target_text, self.window_start = text, "final", "", None
            self.spade_grid, self.cell, self.generate = False, None, 0

    def fit_target(self, options: Sequence[str]) -> None:
        """Keep the target among the analysis's options: another '#<id>' becomes 'other' with its id."""
        if self.target not in options:
            self.target_text = self.target if self.target.startswith("#") else self.target_text
            self.target = "other" if self.target_text else "final"

    def take_click(self, chart: str, selection, answer_position: int) -> None:
        """A click on a heatmap (Streamlit's selection state: {"points": [{"x": .., "y": ..}, ...]}) opens that
        cell: y is the layer; x the position, or on the answer heatmap ("answer") a decoder's column."""
        points = (selection or {}).get("points") or []
        if not points:
            return  # a cleared selection leaves the panel as it is
        point = points[0]
        layer = int(point["y"])
        self.cell = (layer, answer_position if chart == "answer" else int(point["x"]))

    def pin(self, token: str) -> str:
        """Pin a token (text or '#id'); '' when pinned, else why not."""
        if not token:
            return "type a token first (with its leading space, e.g. ' Paris', or #1234)"
        if token in self.pins:
            return f"{token!r} is already pinned"
        if len(self.pins) >= links.MAX_PINS:
            return f"at most {links.MAX_PINS} tokens can be pinned: unpin one first"
        self.pins = [*self.pins, token]
        return ""

    @property
    def compared(self) -> tuple[str, str] | None:
        """('prompt', text) or ('model', name) when a comparison is asked for and filled in, else None."""
        if self.compare == "prompt" and self.compare_prompt.strip():
            return "prompt", self.compare_prompt
        if self.compare == "model" and self.compare_model.strip():
            return "model", self.compare_model.strip()
        return None

    def query(self, model: str, preset_texts: Mapping[str, str]) -> dict:
        """The page's link: `model` ('' for the default), the prompt (left out when it is its preset's), the view."""
        view = {name: getattr(self, name) for name in ("preset", "spade_positions", "max_tokens", "show_no_bos",
                                                        "metric", "target", "target_text", "window_start",
                                                        "spade_grid", "cell", "pins", "pin_rank", "generate")}
        kind, other = self.compared or ("", "")
        view |= {"compare_prompt": other if kind == "prompt" else "", "compare_model": other if kind == "model" else ""}
        return links.explore_link_state({"model": model, "prompt": self.request or self.prompt, **view},
                                        preset_texts)

    def take_link(self, link: links.Link, preset_texts: Mapping[str, str]) -> None:
        """Take an opened link: its prompt (analysed), options and view."""
        for name in link.given & {"preset", "spade_positions", "max_tokens", "show_no_bos", "metric"}:
            setattr(self, name, link.state[name])
        shared = link.state["prompt"] or ("preset" in link.given and preset_texts.get(link.state["preset"]))
        if shared:
            self.analyse(shared)
        if "target" in link.given:
            self.target, self.target_text = links.explore_target(link.state["target"], ["final"])
            if self.target == "other" and self.target_text.startswith("#"):
                self.target, self.target_text = self.target_text, ""  # a candidate id, checked once analysed
        if "window_start" in link.given:
            self.window_start = link.state["window_start"]
        if "spade_grid" in link.given:
            self.spade_grid = link.state["spade_grid"]
        if "cell" in link.given:
            self.cell = links.explore_cell(link.state["cell"])
        if "pins" in link.given:
            self.pins = links.explore_pins(link.state["pins"])
        for name in link.given & {"pin_rank", "generate"}:
            setattr(self, name, link.state[name])
        if self.generate:
            self.generate_length = self.generate
        for kind in ("prompt", "model"):
            if link.state[f"compare_{kind}"]:
                self.compare = kind
                setattr(self, f"compare_{kind}", link.state[f"compare_{kind}"])
