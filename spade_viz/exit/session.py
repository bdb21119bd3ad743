"""The Early-exit page's sweeps, as a plain object: a few sweeps' studies, the layout a sweep opens
at, the threshold grid and figures of each view, the last real-exit runs.

The page's own state (which task, layout and threshold the user sees) is `app.state.ExitPage`;
it asks `ExitSession` for views. This module knows nothing of Streamlit (tests drive it directly).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..decoders import CONFIDENCES
from .arrays import ExitArrays
from .cost import Checkpoints, CostModel
from .simulate import search_checkpoints
from .study import ExitStudy, StudyView

if TYPE_CHECKING:
    from ..sweep import SweepResult

MAX_STUDIES = 4  # sweeps kept per session (each is a few arrays of examples x layers)

Figure = TypeVar("Figure")


@dataclass(frozen=True)
class ExitSettings:
    """The exit controls: checkpoint layout, compute accounting and the confidence decoder."""

    every: int = 1
    start: int = 1
    continuation_tokens: float = 1.0
    include_head: bool = True
    confidence: str = "linear_spade"

    @property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(every=self.every, start=self.start)

    def fitted(self, arrays: ExitArrays) -> ExitSettings:
        """The same settings made valid for `arrays`: checkpoints inside 0..L-1 (a spacing beyond the
        last layer means one checkpoint, kept as it is), a confidence it has."""
        last = arrays.num_layers - 1
        usable = confidences(arrays)
        return replace(
            self,
            every=min(max(1, int(self.every)), max(1, arrays.num_layers)),
            start=min(max(0, int(self.start)), max(0, last)),
            confidence=self.confidence if self.confidence in usable else (usable or [self.confidence])[0],
        )


@dataclass(frozen=True)
class LayoutChoice:
    """What a checkpoint-layout search picked: settings and a threshold for the controls, and why."""

    settings: ExitSettings
    threshold: float  # never exiting (0) is always within 1 point, so every layout has one
    note: str


class ThresholdGrid:
    """The thresholds the slider can show, and the only ones the page evaluates: 0 to just above the
    largest useful threshold in about 400 even steps, plus the view's operating points (so a jump
    lands exactly on its point). The slider, the metrics, the examples table and the link all use a
    value of this grid (`snap`), so they can never disagree."""

    def __init__(self, view: StudyView, positions: int = 400):
        top = max(view.max_threshold, 1e-3)
        self.maximum = math.ceil(top * 100) / 100
        self.step = float(f"{top / positions:.2g}")
        steps = int(round(self.maximum / self.step))
        points = [point_threshold(view, name) for name in ("best_accuracy", "within_1pt")]
        even = np.round(np.linspace(0.0, steps * self.step, steps + 1), 6)
        self.taus = np.unique(np.concatenate([even, [t for t in points if t is not None]]))
        opening = points[1] if points[1] is not None else points[0]
        self.default = self.snap(top / 2 if opening is None else opening)

    def snap(self, threshold: float | None) -> float:
        """The grid's value nearest `threshold` (None: the default)."""
        if threshold is None or not math.isfinite(threshold):
            return self.default
        return float(self.taus[int(np.abs(self.taus - threshold).argmin())])


def confidences(arrays: ExitArrays) -> list[str]:
    """The decoders of a sweep that can give the exit confidence, the method first."""
    return [name for name in CONFIDENCES if name in arrays.decoders]


def shown(threshold: float, point) -> dict[str, str]:
    """A threshold and its exit's numbers as every view writes them (the slider in the browser shows
    these very strings, so its rounding cannot differ from the table's)."""
    return {"tau": f"{threshold:.3f}", "accuracy": f"{point.accuracy:.1%}",
            "compute_fraction": f"{point.compute_fraction:.1%}", "speedup": f"{point.speedup:.2f}×",
            "agreement": f"{point.agreement:.1%}", "mean_exit_layer": f"{point.mean_exit_layer:.1f}"}


def slider_grid(view: StudyView, grid: ThresholdGrid) -> dict:
    """Every slider position's numbers, for a slider that moves in the browser: at each threshold of
    `grid` the hybrid exit's metrics and exit-layer histogram (JSON-ready).

    About 400 positions x (6 numbers + L+1 counts): small whatever the number of examples."""
    L = view.arrays.num_layers
    out = {key: [] for key in ("accuracy", "compute_fraction", "speedup", "agreement", "mean_exit_layer",
                               "exit_rate", "histogram")}
    text: dict[str, list[str]] = {}
    for tau in grid.taus:
        outcome = view.simulator.at(float(tau), with_answers=False)
        point = outcome.point
        for key in ("accuracy", "compute_fraction", "speedup", "agreement", "mean_exit_layer", "exit_rate"):
            out[key].append(round(float(getattr(point, key)), 6))
        out["histogram"].append(np.bincount(outcome.exit_layer, minlength=L + 1)[: L + 1].tolist())
        for key, value in shown(float(tau), point).items():
            text.setdefault(key, []).append(value)
    return {"tau": grid.taus.tolist(), **out, "text": text, "num_layers": L,
            "full_accuracy": float(view.full["accuracy"])}


def point_threshold(view: StudyView, which: str) -> float | None:
    """The threshold of an operating point ("best_accuracy", "within_1pt") of the view, if it has one."""
    point = view.points.get(which)
    return round(float(point["threshold"]), 6) if point else None


FEW_CALIBRATION_EXAMPLES = 50  # below this, a layout and threshold chosen on them rarely hold on others


def view_notes(view: StudyView) -> list[str]:
    """What a reader must know beside the headline numbers of a view: a sweep too small for its choices
    to mean much, a full model no better than guessing, a confidence that is not the method's."""
    notes = []
    if "linear_spade" not in view.arrays.decoders:
        notes.append("This sweep has no linear SPADE column: the exit confidence falls back to another decoder. "
                     "Fit linear SPADE below and run the sweep again for the real method.")
    n = len(view.arrays)
    if n < 2 * FEW_CALIBRATION_EXAMPLES:  # the view chooses on every other example
        notes.append(f"Only {n} examples: the layout and threshold were chosen on {(n + 1) // 2} of them, too few "
                     f"for a reliable choice (use at least {2 * FEW_CALIBRATION_EXAMPLES}); read these numbers as a "
                     "rough sketch.")
    if warning := view.arrays.chance_level_warning(view.full["accuracy"]):
        notes.append(warning)
    return notes


def search_layout(study: ExitStudy, settings: ExitSettings, calibrated: bool = False) -> LayoutChoice:
    """The checkpoint layout with the largest speedup within 1 point of the full model's accuracy
    (same cost options and confidence as `settings`), and the threshold that reaches it. `calibrated`:
    chosen on the calibration half of the examples only (`ExitArrays.calibration_split`)."""
    cost = study.cost.with_options(continuation_tokens=float(settings.continuation_tokens),
                                   include_head=bool(settings.include_head))
    arrays = study.arrays.calibration_split()[0] if calibrated and len(study.arrays) >= 4 else study.arrays
    best = search_checkpoints(arrays, cost, settings.confidence).iloc[0]
    chosen = replace(settings, every=int(best["every"]), start=int(best["start"]))
    where = (f"chosen on the calibration half ({len(arrays)} of {len(study.arrays)} examples, every other one)"
             if arrays is not study.arrays else f"chosen on all {len(arrays)} examples it is shown on (optimistic)")
    note = (f"Layout: every {chosen.every} layer(s) from layer {chosen.start} ({int(best['n_checkpoints'])} "
            f"checkpoints), {where}: {best['speedup_within_1pt']:.2f}× at accuracy "
            f"{best['accuracy_within_1pt']:.1%} there; the slider moved to its threshold.")
    return LayoutChoice(chosen, round(float(best["threshold_within_1pt"]), 6), note)


class ExitSession:
    """The studies of the last few sweeps (by a key the caller chooses: model, data, lens), the layout
    each opens at, the current figure per name, and the last real-exit report per study."""

    def __init__(self, max_studies: int = MAX_STUDIES):
        self.max_studies = max_studies
        self._studies: OrderedDict[Hashable, ExitStudy] = OrderedDict()
        self._real_exits: dict[Hashable, dict] = {}
        self._shipped: set[Hashable] = set()
        self._figures: dict[str, tuple[StudyView, Any]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._studies

    def __len__(self) -> int:
        return len(self._studies)

    def get(self, key: Hashable) -> ExitStudy | None:
        """The study kept under `key`, or None (never swept, or dropped for newer ones)."""
        return self._studies.get(key)

    def add(self, key: Hashable, arrays: ExitArrays, cost: CostModel,
            skipped: list[tuple[str, str]] | None = None) -> ExitStudy:
        """Keep a study of `arrays` under `key`; the oldest study goes beyond `max_studies`."""
        study = ExitStudy(arrays, cost, skipped=skipped)
        self._studies[key] = study
        self._studies.move_to_end(key)
        while len(self._studies) > self.max_studies:
            old, _ = self._studies.popitem(last=False)
            self._real_exits.pop(old, None)
            self._shipped.discard(old)
        return study

    def add_sweep(self, key: Hashable, result: SweepResult, cost: CostModel, shipped: bool = False) -> ExitStudy:
        """`add` for a sweep straight from `run_sweep` or `cached_sweep` (its skipped examples kept);
        `shipped`: it came with the package (precomputed), not from this machine's model."""
        study = self.add(key, ExitArrays.from_sweep(result), cost, list(result.skipped))
        if shipped:
            self._shipped.add(key)
        else:
            self._shipped.discard(key)
        return study

    def shipped(self, key: Hashable) -> bool:
        """Whether the study under `key` is a sweep that shipped with the package."""
        return key in self._shipped

    def opening(self, key: Hashable, settings: ExitSettings) -> LayoutChoice:
        """Where the study under `key` opens: its fastest layout within 1 point, chosen on the
        calibration half (the cost options and confidence of `settings` kept), and its threshold."""
        study = self._studies[key]
        choice = search_layout(study, settings.fitted(study.arrays), calibrated=True)
        return replace(choice, note=choice.note + " (chosen when the sweep opened; change it below)")

    def search(self, key: Hashable, settings: ExitSettings) -> LayoutChoice:
        """The fastest layout within 1 point for the current cost options and confidence."""
        study = self._studies[key]
        return search_layout(study, settings.fitted(study.arrays))

    def view(self, key: Hashable, settings: ExitSettings) -> StudyView:
        """Curves, baselines and operating points of the study at `settings` (cached per setting)."""
        settings = settings.fitted(self._studies[key].arrays)
        return self._studies[key].view(settings.checkpoints, settings.continuation_tokens, settings.include_head,
                                       settings.confidence)

    def figure(self, name: str, view: StudyView, build: Callable[[], Figure]) -> Figure:
        """The figure `name` of `view`, built once per view: a threshold move then only updates it."""
        held = self._figures.get(name)
        if held is None or held[0] is not view:
            held = (view, build())
            self._figures[name] = held
        return held[1]

    def grid(self, view: StudyView) -> ThresholdGrid:
        """The threshold grid of `view` (built once per view)."""
        return self.figure("threshold_grid", view, lambda: ThresholdGrid(view))

    def slider(self, view: StudyView) -> dict:
        """Every slider position's numbers for `view` (built once per view)."""
        return self.figure("slider_grid", view, lambda: slider_grid(view, self.grid(view)))

    def record_real_exit(self, key: Hashable, report) -> None:
        """Keep a real-exit report (a `RealExitReport`, or an honest run's `HonestExit`) beside the study
        it was measured on."""
        self._real_exits[key] = report

    def real_exit(self, key: Hashable):
        """The last real-exit report measured on the study under `key`."""
        return self._real_exits.get(key)
